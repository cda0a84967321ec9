// Building the page's elements. Text always goes in as text (a text node),
// never as markup: whatever a script prints or names reaches the page inert.

/**
 * `el('p', {class: 'x'}, 'text', child)`: an element with attributes and
 * children; a string child becomes a text node. An attribute whose value is
 * null, undefined or false is left out; `true` sets it empty.
 */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, ...children);
  return node;
}

export function append(node, ...children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}
