// The API key the person gave: in memory, and in localStorage only when they
// ticked "remember".

const STORAGE_KEY = 'pyexec.apiKey';
let current = null;

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/** The remembered key, if any, becomes the current one. Returns it. */
export function restore() {
  current = storage()?.getItem(STORAGE_KEY) || null;
  return current;
}

export function currentKey() {
  return current;
}

export function setKey(value, remember) {
  current = value.trim() || null;
  const store = storage();
  if (!store) return;
  if (remember && current) store.setItem(STORAGE_KEY, current);
  else store.removeItem(STORAGE_KEY);
}

export function forget() {
  current = null;
  storage()?.removeItem(STORAGE_KEY);
}
