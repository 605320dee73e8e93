// The demo page: a collaborative rich-text editor (ProseMirror + y-prosemirror) on the
// wasmroom `yjs` plugin, through an unmodified y-websocket provider whose socket is a
// wasmroom session (clients/js). The document is the address's hash (`/#notes`); see
// access.js for tokens and roles.

import 'prosemirror-view/style/prosemirror.css'
import * as Y from 'yjs'
import { readAuthMessage } from 'y-protocols/auth'
import { WebsocketProvider, messageAuth } from 'y-websocket'
import { SessionWebSocket } from 'wasmroom-client'
import { mountEditor } from './editor.js'
import { loadUser, bindUser, showPeers } from './identity.js'
import { documentName, remember, showDocuments } from './documents.js'
import { loadConfig, requestedRole, fetchToken, switchRole } from './access.js'

const $ = (id) => document.getElementById(id)

const docName = documentName()
remember(docName)
$('doc').textContent = docName
document.title = `${docName} · wasmroom`
showDocuments($('documents'), docName, $('new-document'))
window.addEventListener('hashchange', () => location.reload())

const config = await loadConfig()
// Without a token backend everyone edits; with one, the token says who may.
const role = config.tokens ? requestedRole() : 'editor'
const readOnly = role === 'viewer'
document.body.dataset.role = role
const roleSwitch = $('role')
roleSwitch.hidden = !config.tokens
roleSwitch.value = role
roleSwitch.addEventListener('change', () => switchRole(roleSwitch.value))

const ydoc = new Y.Doc()
const fragment = ydoc.getXmlFragment('prosemirror')
const user = loadUser()

// ---- the socket: a wasmroom session under y-websocket. A network blip is resumed
// underneath (y-websocket sees no disconnect; nothing is lost or sent twice); a session the
// server could not keep surfaces as a close, and y-websocket resyncs as after any drop.
// With tokens, a fresh one before every connect and resume (sent as a subprotocol), so a
// reconnect after the token's expiry works.

async function token () {
  try {
    return await fetchToken(config.tokens, docName, role, user.name)
  } catch (e) {
    $('notice').textContent = e.message
    $('notice').hidden = false
    throw e
  }
}
const resumes = { count: 0 }
class DemoSocket extends SessionWebSocket.with({ getToken: config.tokens ? token : undefined }) {
  constructor (url, protocols) {
    super(url, protocols)
    this.room.on('status', () => showStatus())
    this.room.on('open', ({ resumed }) => { if (resumed) resumes.count++ })
  }
}
// The provider connects to `${server}/${room}`, i.e. /ws/yjs/{document}.
const provider = new WebsocketProvider(config.server, encodeURIComponent(docName), ydoc, { connect: false, WebSocketPolyfill: DemoSocket })

// The server answers a viewer's change with y-protocols' "permission denied" and why:
// say so on the page (y-websocket itself only logs it).
provider.messageHandlers[messageAuth] = (_encoder, decoder) => {
  readAuthMessage(decoder, ydoc, (_doc, reason) => {
    const notice = $('notice')
    notice.textContent = `The server refused a change: ${reason}`
    notice.dataset.denied = String(Number(notice.dataset.denied || 0) + 1)
    notice.hidden = false
  })
}

// ---- connection status

const status = $('status')
function showStatus () {
  // While the session reconnects underneath, y-websocket still counts itself connected.
  const reconnecting = provider?.ws?.room?.status === 'reconnecting'
  const state = reconnecting ? 'reconnecting' : provider.wsconnected ? (provider.synced ? 'synced' : 'connected') : (provider.wsconnecting ? 'connecting' : 'disconnected')
  status.dataset.status = state
  status.textContent = state
}
provider.on('status', showStatus)
provider.on('sync', showStatus)
showStatus()

provider.connect()

// ---- who is here, and the editor

bindUser(provider.awareness, user, $('name'), $('swatch'))
showPeers(provider.awareness, $('peers'))
const view = mountEditor({ place: $('editor'), bar: $('toolbar'), fragment, awareness: provider.awareness, readOnly })
// A new document's fragment is empty, which the schema (`block+`) does not allow and
// which leaves nothing to put a caret in: once synced, an editor that finds it empty gives
// it a paragraph. (Two editors opening a new document at once both do: two empty
// paragraphs, no harm.)
const fill = (synced) => {
  if (synced && !readOnly && fragment.length === 0) {
    ydoc.transact(() => fragment.insert(0, [new Y.XmlElement('paragraph')]))
  }
}
provider.on('sync', fill)
fill(provider.synced)
if (readOnly) {
  $('notice').textContent = 'You are a viewer: you see every change as it happens and the others see you here, but the server refuses edits from you.'
  $('notice').hidden = false
}

// For the end-to-end test (demo/e2e.mjs): the document and the view, so that it can also
// change the document as a modified client would, behind the page's back.
// `resumes` counts the sessions resumed after a cut.
window.demo = { ydoc, fragment, view, provider, Y, resumes }
