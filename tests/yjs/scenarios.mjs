// Scenario driver for tests/yjs.rs and tests/journal_consumers.rs (run by
// tests/support/yjs.rs): unmodified yjs + y-websocket clients against a running wasmroom
// serving the yjs plugin.
//
//   node tests/yjs/scenarios.mjs ws://127.0.0.1:PORT/ws/yjs SCENARIO DOCUMENT [PARAMS]
//
// PARAMS (JSON): `tokens` (access tokens by role, for servers that want them) and what a
// scenario reads (`killAfter`).
//
// Prints `ok SCENARIO: ...` and exits 0, or prints `FAIL SCENARIO: reason` and exits 1.
// Every wait is on an event or a condition, bounded by TIMEOUT_MS; nothing sleeps.
// Every provider has `disableBc: true`: otherwise providers in one process sync through
// BroadcastChannel without the server and prove nothing.

import { createInterface } from 'node:readline'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const TIMEOUT_MS = 15000

const [serverUrl, scenario, docName, paramsJson] = process.argv.slice(2)
const params = JSON.parse(paramsJson ?? '{}')
/** Access tokens by role (`{"editor": "...", "viewer": "..."}`), for servers that want them. */
const tokens = params.tokens ?? {}
if (!serverUrl || !scenario || !docName) {
  console.error('usage: node scenarios.mjs ws://HOST:PORT/ws/yjs SCENARIO DOCUMENT [PARAMS]')
  process.exit(2)
}

class Failure extends Error {}

const fail = (reason) => { throw new Failure(reason) }

/** Resolves once `check()` is true, re-checking whenever `subscribe` reports a change. */
const until = (what, check, subscribe) => new Promise((resolve, reject) => {
  if (check()) return resolve()
  let unsubscribe = () => {}
  const timer = setTimeout(() => {
    unsubscribe()
    reject(new Failure(`timed out after ${TIMEOUT_MS} ms waiting for ${what}`))
  }, TIMEOUT_MS)
  unsubscribe = subscribe(() => {
    if (check()) {
      clearTimeout(timer)
      unsubscribe()
      resolve()
    }
  })
})

let driverLines = null

/**
 * Asks the test driver (tests/support/yjs.rs) to act on the server: prints `pause: WHY` and
 * waits for it to answer `go` on stdin once it is done.
 */
const pause = async (why) => {
  driverLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  console.log(`pause: ${why}`)
  const { value, done } = await driverLines.next()
  if (done || value !== 'go') fail(`the test driver did not let "${why}" go on (got ${JSON.stringify(value)})`)
}

/** A client: a Y.Doc (possibly edited offline) and its provider, connected and synced. */
class Client {
  constructor (name, doc = new Y.Doc(), token = undefined) {
    this.name = name
    this.doc = doc
    this.token = token
    this.provider = null
  }

  get text () { return this.doc.getText('t').toString() }
  get items () { return this.doc.getArray('items').toArray() }
  get clientID () { return this.doc.clientID }

  async connect () {
    this.provider = new WebsocketProvider(serverUrl, docName, this.doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      params: this.token ? { token: this.token } : {}
    })
    this.provider.on('connection-error', (e) => console.error(`${this.name}: connection error`, e?.message ?? e))
    await until(`${this.name} to sync with the server`, () => this.provider.synced,
      (f) => { this.provider.on('sync', f); return () => this.provider.off('sync', f) })
    return this
  }

  /** Waits until the document satisfies `check`. */
  async docUntil (what, check) {
    await until(`${this.name} to see ${what} (text ${JSON.stringify(this.text)}, items ${JSON.stringify(this.items)})`,
      check, (f) => { this.doc.on('update', f); return () => this.doc.off('update', f) })
  }

  /** Waits until the awareness state of `clientID` satisfies `check` (undefined = absent). */
  async awarenessUntil (what, clientID, check) {
    const awareness = this.provider.awareness
    await until(`${this.name} to see ${what}`, () => check(awareness.getStates().get(clientID)),
      (f) => { awareness.on('change', f); return () => awareness.off('change', f) })
  }

  /**
   * Waits until the state of `clientID` is removed by a message from the server. The
   * client's own 30 s outdated-state timeout (origin 'timeout') does not count.
   */
  async awarenessRemovedByServer (what, clientID) {
    const awareness = this.provider.awareness
    let origin = null
    await until(`${this.name} to see ${what}`, () => origin !== null, (f) => {
      const listener = ({ removed }, o) => { if (removed.includes(clientID)) { origin = o; f() } }
      awareness.on('change', listener)
      return () => awareness.off('change', listener)
    })
    if (origin !== this.provider) fail(`${what}: removed by ${origin}, not by a message from the server`)
  }

  append (s) {
    const t = this.doc.getText('t')
    t.insert(t.length, s)
  }

  /** Clean leave: y-websocket sends a null awareness state, then closes. */
  destroy () {
    this.provider?.destroy()
  }

  /** The socket dies: no close frame, no awareness goodbye, no reconnect. */
  kill () {
    this.provider.shouldConnect = false
    this.provider.ws.terminate()
  }
}

/** Resolves when the server sends `client` a frame that satisfies `check`. */
const frameWaiter = (client, what, check) => new Promise((resolve, reject) => {
  const ws = client.provider.ws
  const timer = setTimeout(() => {
    ws.off('message', listener)
    reject(new Failure(`timed out after ${TIMEOUT_MS} ms waiting for ${client.name} to receive ${what}`))
  }, TIMEOUT_MS)
  const listener = (data) => {
    if (check(new Uint8Array(data))) {
      clearTimeout(timer)
      ws.off('message', listener)
      resolve()
    }
  }
  ws.on('message', listener)
})

/** Same content and same state vector: nothing either lacks. */
const sameState = (a, b) => a.text === b.text && JSON.stringify(a.items) === JSON.stringify(b.items) &&
  Buffer.from(Y.encodeStateVector(a.doc)).equals(Buffer.from(Y.encodeStateVector(b.doc)))

/** The document as the server's HTTP interface returns it, in a fresh Y.Doc. */
const fetchDoc = async () => {
  const url = serverUrl.replace(/^ws/, 'http').replace(/\/ws\/([^/]+)$/, '/docs/$1') + '/' + encodeURIComponent(docName)
  const response = await fetch(url)
  if (response.status !== 200) fail(`GET ${url}: ${response.status} ${await response.text()}`)
  const doc = new Y.Doc()
  Y.applyUpdate(doc, new Uint8Array(await response.arrayBuffer()))
  return doc
}

const scenarios = {
  // With access tokens: a viewer gets the document and every change, but its own edits
  // are refused with y-protocols' "permission denied" and reach nobody.
  async viewer () {
    const editor = await new Client('editor', new Y.Doc(), tokens.editor).connect()
    const viewer = await new Client('viewer', new Y.Doc(), tokens.viewer).connect()
    editor.append('E1 ')
    await viewer.docUntil("the editor's first edit", () => viewer.text.includes('E1'))
    const denied = frameWaiter(viewer, 'a permission denied for its edit',
      (f) => f[0] === 2 && Buffer.from(f).includes('read-only'))
    viewer.append('V1 ')
    await denied
    // The server handled the viewer's edit before it answered; the editor's next edit
    // reaches the viewer, and the viewer's never reached the editor.
    editor.append('E2 ')
    await viewer.docUntil("the editor's second edit", () => viewer.text.includes('E2'))
    if (editor.text.includes('V1')) fail(`the viewer's edit reached the editor: ${JSON.stringify(editor.text)}`)
    editor.destroy(); viewer.destroy()
    return `the editor holds ${JSON.stringify(editor.text)}`
  },

  // Two clients edit, concurrently too; each sees both edits and they end in one state.
  async converge () {
    const a = await new Client('a').connect()
    const b = await new Client('b').connect()
    a.append('A1 ')
    b.doc.getArray('items').push(['from b'])
    await a.docUntil("b's item", () => a.items.includes('from b'))
    await b.docUntil("a's text", () => b.text.includes('A1'))
    // Concurrent: both edit before hearing of the other's edit.
    a.append('A2 ')
    b.append('B2 ')
    await a.docUntil("b's concurrent edit", () => a.text.includes('B2'))
    await b.docUntil("a's concurrent edit", () => b.text.includes('A2'))
    await until('a and b to hold the same state', () => sameState(a, b),
      (f) => { a.doc.on('update', f); b.doc.on('update', f); return () => { a.doc.off('update', f); b.doc.off('update', f) } })
    a.destroy(); b.destroy()
    return `both hold ${JSON.stringify(a.text)} and ${JSON.stringify(a.items)}`
  },

  // Awareness: echoed to a lone client, given to newcomers, relayed, and removed for the
  // others when a socket dies (server-side removal) or a client leaves cleanly.
  async awareness () {
    const a = await new Client('a').connect()
    // The server sends a lone client its own state back (else its 30 s watchdog fires).
    const echoed = frameWaiter(a, 'its own awareness state back',
      (f) => f[0] === 1 && Buffer.from(f).includes('"user":"ann"'))
    a.provider.awareness.setLocalState({ user: 'ann' })
    await echoed
    // A newcomer gets the present states when it connects, before the server's sync step 2
    // (so without waiting for a's 15 s renewal).
    const b = await new Client('b').connect()
    if (b.provider.awareness.getStates().get(a.clientID)?.user !== 'ann') {
      fail(`b synced without a's awareness state: ${JSON.stringify([...b.provider.awareness.getStates()])}`)
    }
    b.provider.awareness.setLocalState({ user: 'bob' })
    await a.awarenessUntil("b's state", b.clientID, (s) => s?.user === 'bob')
    a.provider.awareness.setLocalStateField('cursor', 7)
    await b.awarenessUntil("a's updated state", a.clientID, (s) => s?.cursor === 7)

    // a's socket dies without a goodbye: only the server can tell b.
    a.kill()
    await b.awarenessRemovedByServer("a's state removed after a's socket died", a.clientID)

    // c leaves cleanly (provider.destroy sends a null state, then closes).
    const c = await new Client('c').connect()
    if (c.provider.awareness.getStates().get(b.clientID)?.user !== 'bob') fail("c synced without b's state")
    if (c.provider.awareness.getStates().has(a.clientID)) fail("c was given a's state, which was removed")
    c.provider.awareness.setLocalState({ user: 'cat' })
    await b.awarenessUntil("c's state", c.clientID, (s) => s?.user === 'cat')
    c.destroy()
    await b.awarenessRemovedByServer("c's state removed after c left", c.clientID)
    b.destroy()
    return 'echoed to a lone client, given to newcomers, relayed, removed on a killed socket and on a clean leave'
  },

  // A late joiner with an offline edit, once everyone else has left: only the server holds
  // the document. It gets all of it, and its own edit reaches the others.
  async 'late-joiner' () {
    const a = await new Client('a').connect()
    const b = await new Client('b').connect()
    a.append('from a; ')
    b.append('from b; ')
    await a.docUntil("b's edit", () => a.text.includes('from b'))
    await b.docUntil("a's edit", () => b.text.includes('from a'))
    a.destroy(); b.destroy()

    const offline = new Y.Doc()
    offline.getText('t').insert(0, 'offline c; ')
    offline.getArray('items').push(['c item'])
    const c = await new Client('c', offline).connect()
    // `synced` means the server's sync step 2 was applied: everything is there at once.
    const synced = c.text
    for (const part of ['from a; ', 'from b; ', 'offline c; ']) {
      if (!synced.includes(part)) fail(`c synced but lacks ${JSON.stringify(part)}: ${JSON.stringify(synced)}`)
    }
    const d = await new Client('d').connect()
    await d.docUntil("c's offline edit", () => d.text.includes('offline c; ') && d.items.includes('c item'))
    if (d.text !== c.text) fail(`d has ${JSON.stringify(d.text)}, c has ${JSON.stringify(c.text)}`)
    c.append('live c; ')
    await d.docUntil("c's live edit", () => d.text.includes('live c; '))
    c.destroy(); d.destroy()
    return `c synced to ${JSON.stringify(synced)} from the server alone; d got c's offline and live edits`
  },

  // Hot reload: at the pause the driver deploys a new yjs.wasm and waits until the document
  // moved to it. The same two sockets go on editing; a newcomer gets everything from the
  // new version.
  async reload () {
    const a = await new Client('a').connect()
    const b = await new Client('b').connect()
    a.append('before reload; ')
    await b.docUntil("a's edit", () => b.text === 'before reload; ')
    const sockets = [a.provider.ws, b.provider.ws]
    let drops = 0
    for (const c of [a, b]) c.provider.on('status', ({ status }) => { if (status !== 'connected') drops++ })
    await pause('deploy a new yjs.wasm')
    b.append('after reload; ')
    await a.docUntil("b's edit", () => a.text === 'before reload; after reload; ')
    if (drops !== 0 || a.provider.ws !== sockets[0] || b.provider.ws !== sockets[1]) {
      fail(`a socket was replaced during the reload (${drops} status changes)`)
    }
    const c = await new Client('c').connect()
    if (c.text !== a.text) fail(`a newcomer got ${JSON.stringify(c.text)} from the new version`)
    a.destroy(); b.destroy(); c.destroy()
    return 'the same sockets went on across the reload; a newcomer got the whole state'
  },

  // Restart, phase 1: two clients write; both have seen both edits, so the server has them.
  async 'restart-write' () {
    const a = await new Client('a').connect()
    const b = await new Client('b').connect()
    a.append('before restart (a); ')
    b.doc.getArray('items').push(['b before restart'])
    await a.docUntil("b's edit", () => a.items.includes('b before restart'))
    await b.docUntil("a's edit", () => b.text.includes('before restart (a)'))
    a.destroy(); b.destroy()
    return 'written'
  },

  // Restart, phase 2 (after SIGTERM and a restart): the state is there, over WebSocket and
  // over HTTP; then one more edit, which the server has once another client has it.
  async 'restart-check' () {
    const c = await new Client('c').connect()
    if (c.text !== 'before restart (a); ' || JSON.stringify(c.items) !== '["b before restart"]') {
      fail(`after the restart the document is ${JSON.stringify(c.text)} / ${JSON.stringify(c.items)}`)
    }
    const served = await fetchDoc()
    if (served.getText('t').toString() !== c.text) fail(`HTTP GET has ${JSON.stringify(served.getText('t').toString())}`)
    const d = await new Client('d').connect()
    c.append('after restart (c); ')
    await d.docUntil("c's edit", () => d.text.includes('after restart (c)'))
    c.destroy(); d.destroy()
    return `restored ${JSON.stringify(served.getText('t').toString())} (HTTP agrees), added one edit`
  },

  // Restart, phase 3 (after a checkpoint and kill -9): both phases' edits are there.
  async 'restart-final' () {
    const d = await new Client('d').connect()
    const want = 'before restart (a); after restart (c); '
    if (d.text !== want || JSON.stringify(d.items) !== '["b before restart"]') {
      fail(`after kill -9 the document is ${JSON.stringify(d.text)} / ${JSON.stringify(d.items)}, expected ${JSON.stringify(want)}`)
    }
    d.destroy()
    return 'both phases survived'
  },

  // kill -9, phase 1 (journal mode): a writer pushes numbered items, one update each,
  // every 2 ms; once the reader has seen `params.killAfter` of them, the driver kills the
  // server. Prints the items the reader held when its socket ended (JSON). Neither client
  // reconnects: it would bring its items back to the restarted server and hide a loss.
  async 'kill-stream' () {
    const writer = await new Client('writer').connect()
    const reader = await new Client('reader').connect()
    let readerGone = false
    for (const c of [writer, reader]) {
      c.provider.on('connection-close', () => {
        c.provider.shouldConnect = false
        if (c === reader) readerGone = true
      })
    }
    const items = writer.doc.getArray('items')
    let n = 0
    const writing = setInterval(() => {
      if (writer.provider.wsconnected) items.push([`item ${n++}`])
    }, 2)
    await reader.docUntil(`${params.killAfter} items`, () => reader.items.length >= params.killAfter)
    await pause('kill the server')
    await until("the reader's socket to end", () => readerGone,
      (f) => { reader.provider.on('connection-close', f); return () => reader.provider.off('connection-close', f) })
    clearInterval(writing)
    const seen = reader.items
    writer.destroy(); reader.destroy()
    return JSON.stringify(seen)
  },

  // kill -9, phase 2 (after the restart): a fresh client's items (JSON), which HTTP GET
  // agrees with.
  async 'kill-check' () {
    const c = await new Client('c').connect()
    const served = await fetchDoc()
    const items = JSON.stringify(c.items)
    if (JSON.stringify(served.getArray('items').toArray()) !== items) {
      fail(`HTTP GET has ${JSON.stringify(served.getArray('items').toArray())}, the client ${items}`)
    }
    c.destroy()
    return items
  }
}

const run = scenarios[scenario]
if (!run) {
  console.error(`FAIL ${scenario}: unknown scenario (know: ${Object.keys(scenarios).join(', ')})`)
  process.exit(2)
}
const overall = setTimeout(() => {
  console.error(`FAIL ${scenario}: did not finish within ${4 * TIMEOUT_MS} ms`)
  process.exit(1)
}, 4 * TIMEOUT_MS)
try {
  const summary = await run()
  console.log(`ok ${scenario}: ${summary}`)
  clearTimeout(overall)
  process.exit(0)
} catch (e) {
  console.error(`FAIL ${scenario}: ${e instanceof Failure ? e.message : (e?.stack ?? e)}`)
  process.exit(1)
}
