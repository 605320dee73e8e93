// The rich-text editor: ProseMirror on a Y.XmlFragment through y-prosemirror, with the
// collaborators' cursors from Yjs awareness, per-client undo, and a small toolbar.

import { EditorState } from 'prosemirror-state'
import { EditorView } from 'prosemirror-view'
import { Schema } from 'prosemirror-model'
import { schema as basic } from 'prosemirror-schema-basic'
import { addListNodes, wrapInList, splitListItem, liftListItem, sinkListItem } from 'prosemirror-schema-list'
import { baseKeymap, setBlockType, toggleMark } from 'prosemirror-commands'
import { keymap } from 'prosemirror-keymap'
import { ySyncPlugin, yCursorPlugin, yUndoPlugin, undoCommand, redoCommand, initProseMirrorDoc } from 'y-prosemirror'

/** The basic schema (paragraphs, headings, quotes, code, bold, italic, links) with lists. */
export const schema = new Schema({
  nodes: addListNodes(basic.spec.nodes, 'paragraph block*', 'block'),
  marks: basic.spec.marks
})

/** The toolbar's buttons: what each does, and when it shows as active. */
const tools = [
  { id: 'bold', label: 'B', title: 'Bold (Ctrl+B)', run: toggleMark(schema.marks.strong), active: (s) => markActive(s, schema.marks.strong) },
  { id: 'italic', label: 'I', title: 'Italic (Ctrl+I)', run: toggleMark(schema.marks.em), active: (s) => markActive(s, schema.marks.em) },
  { id: 'paragraph', label: '¶', title: 'Paragraph', run: setBlockType(schema.nodes.paragraph), active: (s) => blockIs(s, schema.nodes.paragraph) },
  { id: 'h1', label: 'H1', title: 'Heading', run: setBlockType(schema.nodes.heading, { level: 1 }), active: (s) => blockIs(s, schema.nodes.heading, { level: 1 }) },
  { id: 'h2', label: 'H2', title: 'Subheading', run: setBlockType(schema.nodes.heading, { level: 2 }), active: (s) => blockIs(s, schema.nodes.heading, { level: 2 }) },
  { id: 'bullets', label: '• List', title: 'Bullet list', run: wrapInList(schema.nodes.bullet_list) },
  { id: 'numbers', label: '1. List', title: 'Numbered list', run: wrapInList(schema.nodes.ordered_list) },
  { id: 'undo', label: '↶', title: 'Undo your last change (Ctrl+Z)', run: undoCommand },
  { id: 'redo', label: '↷', title: 'Redo (Ctrl+Y)', run: redoCommand }
]

function markActive (state, type) {
  const { from, $from, to, empty } = state.selection
  return empty ? Boolean(type.isInSet(state.storedMarks || $from.marks())) : state.doc.rangeHasMark(from, to, type)
}

function blockIs (state, type, attrs = {}) {
  const parent = state.selection.$from.parent
  return parent.type === type && Object.entries(attrs).every(([k, v]) => parent.attrs[k] === v)
}

/** A collaborator's caret with their name, in their colour (y-prosemirror's default
 * builder, plus a `data-name` the end-to-end test and the page's styles read). */
function cursorBuilder (user) {
  const cursor = document.createElement('span')
  cursor.classList.add('ProseMirror-yjs-cursor')
  cursor.style.borderColor = user.color
  cursor.dataset.name = user.name
  const label = document.createElement('div')
  label.style.backgroundColor = user.color
  label.textContent = user.name
  cursor.append('\u2060', label, '\u2060')
  return cursor
}

/**
 * Mounts the editor for `fragment` into `place`, its toolbar into `bar`; `awareness` carries
 * this tab's cursor and shows the others'. A read-only editor takes no input (the server
 * refuses a viewer's changes anyway: this only keeps the page honest about it).
 */
export function mountEditor ({ place, bar, fragment, awareness, readOnly }) {
  const { doc, mapping } = initProseMirrorDoc(fragment, schema)
  const buttons = tools.map((tool) => {
    const button = document.createElement('button')
    button.type = 'button'
    button.id = `tool-${tool.id}`
    button.textContent = tool.label
    button.title = tool.title
    // Keep the editor's selection: a click on a button must not move the focus.
    button.addEventListener('mousedown', (e) => e.preventDefault())
    button.addEventListener('click', () => {
      tool.run(view.state, view.dispatch, view)
      view.focus()
    })
    bar.append(button)
    return { tool, button }
  })
  const refresh = (state) => {
    for (const { tool, button } of buttons) {
      button.disabled = readOnly || !tool.run(state, undefined, view)
      button.classList.toggle('active', Boolean(tool.active?.(state)))
    }
  }
  const view = new EditorView(place, {
    state: EditorState.create({
      doc,
      schema,
      plugins: [
        ySyncPlugin(fragment, { mapping }),
        yCursorPlugin(awareness, { cursorBuilder }),
        yUndoPlugin(),
        keymap({
          'Mod-z': undoCommand,
          'Mod-y': redoCommand,
          'Mod-Shift-z': redoCommand,
          'Mod-b': toggleMark(schema.marks.strong),
          'Mod-i': toggleMark(schema.marks.em),
          Enter: splitListItem(schema.nodes.list_item),
          Tab: sinkListItem(schema.nodes.list_item),
          'Shift-Tab': liftListItem(schema.nodes.list_item)
        }),
        keymap(baseKeymap)
      ]
    }),
    editable: () => !readOnly,
    dispatchTransaction (tr) {
      view.updateState(view.state.apply(tr))
      refresh(view.state)
    }
  })
  refresh(view.state)
  return view
}
