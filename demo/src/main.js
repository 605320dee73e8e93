// A textarea bound to a Y.Text, synced through the wasmroom `yjs` plugin with an unmodified
// y-websocket provider. The document is the URL's hash (`/#notes`) or `?doc=` (default "demo").

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const docName = (() => {
  const fromUrl = location.hash.slice(1) || new URLSearchParams(location.search).get('doc')
  try {
    return decodeURIComponent(fromUrl || '') || 'demo'
  } catch {
    return fromUrl
  }
})()

const editor = document.getElementById('editor')
const status = document.getElementById('status')
const peers = document.getElementById('peers')
document.getElementById('doc').textContent = docName
document.title = `${docName} · wasmroom`

const ydoc = new Y.Doc()
const ytext = ydoc.getText('text')
const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
// The provider connects to `${serverUrl}/${room}`, i.e. /ws/yjs/{document}.
const provider = new WebsocketProvider(`${scheme}://${location.host}/ws/yjs`, encodeURIComponent(docName), ydoc)

// ---- connection status and peers

const showStatus = () => {
  const state = provider.wsconnected ? (provider.synced ? 'synced' : 'connected') : (provider.wsconnecting ? 'connecting' : 'disconnected')
  status.dataset.status = state
  status.textContent = state
}
provider.on('status', showStatus)
provider.on('sync', showStatus)
showStatus()

const showPeers = () => {
  const others = [...provider.awareness.getStates()]
    .filter(([id]) => id !== ydoc.clientID)
    .map(([, state]) => state.user?.name ?? 'someone')
  peers.dataset.count = String(others.length)
  peers.textContent = others.length === 0 ? 'no one else here' : `with ${others.join(', ')}`
}
provider.awareness.on('change', showPeers)
// A fresh awareness state has clock 0, which the other clients ignore until its renewal
// (15 s later): setting a field announces this one at once.
provider.awareness.setLocalStateField('user', { name: `guest ${ydoc.clientID % 1000}` })
showPeers()

// ---- textarea <-> Y.Text

const isHighSurrogate = (code) => code >= 0xd800 && code <= 0xdbff
const isLowSurrogate = (code) => code >= 0xdc00 && code <= 0xdfff

// Local edits: replace only what changed between the common prefix and the common suffix,
// so that concurrent edits elsewhere in the text merge instead of being overwritten.
editor.addEventListener('input', () => {
  const before = ytext.toString()
  const after = editor.value
  const max = Math.min(before.length, after.length)
  let prefix = 0
  while (prefix < max && before[prefix] === after[prefix]) prefix++
  if (prefix > 0 && isHighSurrogate(before.charCodeAt(prefix - 1))) prefix--
  let suffix = 0
  while (suffix < max - prefix && before[before.length - 1 - suffix] === after[after.length - 1 - suffix]) suffix++
  if (suffix > 0 && isLowSurrogate(before.charCodeAt(before.length - suffix))) suffix--
  const removed = before.length - prefix - suffix
  const inserted = after.slice(prefix, after.length - suffix)
  if (removed === 0 && inserted === '') return
  ydoc.transact(() => {
    if (removed > 0) ytext.delete(prefix, removed)
    if (inserted) ytext.insert(prefix, inserted)
  }, editor)
})

// Where `index` of the old text is after a change: text inserted at or before it pushes
// it right, text deleted before it pulls it left.
const mapIndex = (delta, index) => {
  let at = 0
  let mapped = index
  for (const op of delta) {
    if (at > index) break
    if (op.retain !== undefined) {
      at += op.retain
    } else if (op.insert !== undefined) {
      mapped += op.insert.length
    } else if (op.delete !== undefined) {
      mapped -= Math.min(op.delete, index - at)
      at += op.delete
    }
  }
  return mapped
}

// Remote edits: rewrite the textarea, keeping the caret (or selection) on the same text.
ytext.observe((event) => {
  if (event.transaction.origin === editor) return
  const { selectionStart, selectionEnd, selectionDirection } = editor
  editor.value = ytext.toString()
  if (document.activeElement === editor) {
    editor.setSelectionRange(mapIndex(event.delta, selectionStart), mapIndex(event.delta, selectionEnd), selectionDirection)
  }
})

window.addEventListener('hashchange', () => location.reload())
