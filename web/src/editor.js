// The two CodeMirror editors (the Python script and the JSON input), their
// theme, and moving the cursor to a line.
//
// Each editor lives in a shadow root of its own: CodeMirror then puts its
// styles in a constructed style sheet (adoptedStyleSheets) instead of a
// <style> element, which the page's Content-Security-Policy (style-src
// 'self', no 'unsafe-inline') would refuse.

import { EditorState, Prec } from '@codemirror/state';
import {
  EditorView,
  drawSelection,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
} from '@codemirror/view';
import {
  HighlightStyle,
  bracketMatching,
  indentOnInput,
  indentUnit,
  syntaxHighlighting,
} from '@codemirror/language';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import { closeBrackets, closeBracketsKeymap } from '@codemirror/autocomplete';
import { highlightSelectionMatches, search, searchKeymap } from '@codemirror/search';
import { python } from '@codemirror/lang-python';
import { json } from '@codemirror/lang-json';
import { tags } from '@lezer/highlight';

// Colours chosen for at least 4.5:1 contrast on the editor's white.
const highlightStyle = HighlightStyle.define([
  { tag: [tags.keyword, tags.controlKeyword, tags.definitionKeyword, tags.moduleKeyword], color: '#a0111f' },
  { tag: [tags.string, tags.special(tags.string)], color: '#0a3069' },
  { tag: tags.comment, color: '#57606a', fontStyle: 'italic' },
  { tag: [tags.number, tags.bool, tags.null, tags.atom], color: '#0550ae' },
  { tag: [tags.function(tags.definition(tags.variableName)), tags.definition(tags.className)], color: '#6639ba' },
  { tag: [tags.self, tags.standard(tags.variableName), tags.propertyName], color: '#953800' },
  { tag: [tags.operator, tags.punctuation], color: '#24292f' },
  { tag: tags.invalid, color: '#a0111f', textDecoration: 'underline' },
]);

const theme = EditorView.theme({
  '&': { fontSize: '14px', backgroundColor: '#ffffff', color: '#1f2328', height: '100%' },
  '.cm-scroller': {
    fontFamily: 'ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    lineHeight: '1.5',
  },
  '.cm-content': { caretColor: '#1f2328' },
  '&.cm-focused': { outline: '2px solid #1d4ed8', outlineOffset: '-2px' },
  '.cm-gutters': { backgroundColor: '#f6f8fa', color: '#57606a', borderRight: '1px solid #d0d7de' },
  '.cm-activeLine': { backgroundColor: '#f3f6fa' },
  '.cm-activeLineGutter': { backgroundColor: '#e7ecf2', color: '#1f2328' },
  '&.cm-focused .cm-matchingBracket': { backgroundColor: '#c8e1ff', outline: '1px solid #0969da' },
  '&.cm-focused .cm-nonmatchingBracket': { backgroundColor: '#ffd7d5' },
  '.cm-selectionBackground, &.cm-focused .cm-selectionBackground, ::selection': { backgroundColor: '#b6d7ff' },
});

function baseExtensions(label, onRun) {
  return [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    history(),
    drawSelection(),
    indentOnInput(),
    indentUnit.of('    '),
    EditorState.tabSize.of(4),
    bracketMatching(),
    closeBrackets(),
    highlightActiveLine(),
    highlightSelectionMatches(),
    search({ top: true }),
    syntaxHighlighting(highlightStyle),
    theme,
    // Ctrl/Cmd+Enter runs, ahead of the default keymap's insertBlankLine.
    Prec.highest(keymap.of([{ key: 'Mod-Enter', run: () => { onRun(); return true; } }])),
    keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...searchKeymap, ...historyKeymap, indentWithTab]),
    // Its label, for assistive technology: aria-labelledby can't reach the
    // page's headings from inside the shadow root. The explicit tabindex is
    // what the editable area has anyway; it tells checkers such as axe that
    // the scrolling editor is reachable by keyboard.
    EditorView.contentAttributes.of({ 'aria-label': label, tabindex: '0' }),
  ];
}

/** An editor mounted in `host` (its shadow root), holding `text`. */
function mount(host, text, extensions) {
  const root = host.attachShadow({ mode: 'open' });
  const state = EditorState.create({ doc: text, extensions });
  return new EditorView({ state, root, parent: root });
}

export function pythonEditor(host, text, onRun) {
  return mount(host, text, [...baseExtensions('Python script', onRun), python()]);
}

export function jsonEditor(host, text, onRun) {
  return mount(host, text, [...baseExtensions('Input, JSON', onRun), json()]);
}

export function textOf(view) {
  return view.state.doc.toString();
}

/** Replaces the whole text (one undoable change). */
export function setText(view, text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
}

/** Puts the cursor at the start of `line` (1-based), scrolls it into the middle and focuses the editor. */
export function goToLine(view, line) {
  const doc = view.state.doc;
  const target = doc.line(Math.min(Math.max(1, line), doc.lines));
  view.dispatch({
    selection: { anchor: target.from },
    effects: EditorView.scrollIntoView(target.from, { y: 'center' }),
  });
  view.focus();
}
