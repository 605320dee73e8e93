// End-to-end test of the demo in Debian's Chromium (headless, driven by playwright-core),
// against a running wasmroom that serves the yjs plugin.
//
//   node demo/e2e.mjs http://HOST:PORT [SCREENSHOT.png]
//     wasmroom serves `--static demo/dist` and takes no tokens: two editors type into one
//     document; each sees the other's text, name and cursor, and the server holds the text.
//   DEMO_TOKEN_SECRET=... node demo/e2e.mjs --viewer http://HOST:PORT
//     wasmroom takes tokens signed with DEMO_TOKEN_SECRET (`[plugin.yjs.auth]`) from any
//     page origin; this script starts demo/backend.mjs, which serves the page and the
//     tokens: an editor and a viewer open one document, and nothing the viewer does
//     changes it, in the editor's page or on the server.
//   node demo/e2e.mjs --cuts N http://PROXY:PORT   (tests/browser.rs drives it)
//     as the first, the pages through a TCP proxy the caller controls: N times the script
//     prints `proxy cut K` and waits for `done cut K` on stdin (both pages' sockets cut,
//     new connections refused), types in both editors, then `proxy heal K`. Both editors
//     end with every keystroke, y-websocket never saw its socket close (the session
//     resumed underneath), and the server holds the same text.
//
// Prints `ok: ...` and exits 0, or prints `FAIL: reason` and exits 1. Every wait is on a
// condition (bounded by TIMEOUT_MS); nothing sleeps.

import { existsSync, mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import * as Y from 'yjs'
import { startBackend } from './backend.mjs'

const CHROMIUM = '/usr/bin/chromium'
const TIMEOUT_MS = 20000
const here = dirname(fileURLToPath(import.meta.url))

const args = process.argv.slice(2)
const viewerMode = args[0] === '--viewer'
const cutsMode = args[0] === '--cuts'
const cuts = cutsMode ? Number(args[1]) : 0
const [base, shotArg] = viewerMode ? args.slice(1) : cutsMode ? args.slice(2) : args
if (!base) {
  console.error('usage: node demo/e2e.mjs http://HOST:PORT [SCREENSHOT.png]\n       node demo/e2e.mjs --viewer http://HOST:PORT\n       node demo/e2e.mjs --cuts N http://PROXY:PORT')
  process.exit(2)
}
const screenshot = resolve(shotArg ?? `${here}/../target/e2e/demo.png`)
if (!existsSync(CHROMIUM)) {
  console.log(`FAIL: ${CHROMIUM} is missing: install it with \`apt-get install -y chromium\``)
  process.exit(1)
}

// A new document per run, so that a reused server does not interfere.
const doc = `e2e-${Date.now().toString(36)}`

/** In the page: the editor's text as shown, a line per block, collaborators' carets
 * (y-prosemirror's widgets, which carry their names) left out. */
function shownText () {
  return [...document.querySelectorAll('#editor .ProseMirror > :not(.ProseMirror-yjs-cursor)')].map((block) => {
    const copy = block.cloneNode(true)
    for (const cursor of copy.querySelectorAll('.ProseMirror-yjs-cursor')) cursor.remove()
    return copy.textContent
  }).join('\n')
}
const textOf = (page) => page.evaluate(shownText)

/** Opens the demo at `url` in its own browser context (no shared BroadcastChannel or
 * storage, so every change has to go through the server), as `name`; waits until synced. */
async function open (browser, url, name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 620 } })
  const page = await context.newPage()
  page.setDefaultTimeout(TIMEOUT_MS)
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`))
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${name}] console: ${m.text()}`) })
  const response = await page.goto(url)
  if (!response?.ok()) throw new Error(`${name}: GET ${url} answered ${response?.status()}`)
  await page.locator('#status[data-status="synced"]').waitFor()
  await page.locator('#name').fill(name)
  return page
}

/** Waits until `page`'s editor holds `expected`. */
async function shows (page, name, expected) {
  try {
    await page.waitForFunction(`(${shownText})() === ${JSON.stringify(expected)}`)
  } catch (e) {
    throw new Error(`${name} shows ${JSON.stringify(await textOf(page))}, not ${JSON.stringify(expected)} (${e.message.split('\n')[0]})`)
  }
}

/** Waits until `page` shows `who`'s caret (y-prosemirror's cursor widget with the name). */
async function showsCursorOf (page, name, who) {
  const cursor = page.locator('#editor .ProseMirror-yjs-cursor', { hasText: who })
  try {
    await cursor.waitFor()
  } catch (e) {
    const seen = await page.locator('#editor .ProseMirror-yjs-cursor').allTextContents()
    throw new Error(`${name} shows no cursor named ${JSON.stringify(who)} (cursors: ${JSON.stringify(seen)}; ${e.message.split('\n')[0]})`)
  }
}

/** The text the server holds: GET /docs/yjs/{doc} is its state as one Yjs update. */
async function serverText (token) {
  const answer = await fetch(`${base}/docs/yjs/${doc}`, token ? { headers: { authorization: `Bearer ${token}` } } : {})
  if (!answer.ok) throw new Error(`GET /docs/yjs/${doc} answered ${answer.status}`)
  const held = new Y.Doc()
  Y.applyUpdate(held, new Uint8Array(await answer.arrayBuffer()))
  return held.getXmlFragment('prosemirror').toArray().map((block) => block.toArray().map((t) => t.toString().replace(/<[^>]*>/g, '')).join('')).join('\n')
}

/** Two editors: text both ways, formatting, each one's cursor in the other's page. */
async function twoEditors (browser) {
  const ann = await open(browser, `${base}/#${doc}`, 'Ann')
  const bob = await open(browser, `${base}/#${doc}`, 'Bob')
  // Each sees the other, by name, through the server's awareness relay.
  await ann.locator('#peers li', { hasText: 'Bob' }).waitFor()
  await bob.locator('#peers li', { hasText: 'Ann' }).waitFor()

  // Ann writes a heading and a line; Bob receives both, the heading as a heading.
  await ann.locator('#editor .ProseMirror').click()
  await ann.locator('#tool-h1').click()
  await ann.keyboard.type('Plans')
  await ann.keyboard.press('Enter')
  await ann.keyboard.type('Hello from Ann.')
  await shows(bob, 'Bob', 'Plans\nHello from Ann.')
  await bob.locator('#editor h1', { hasText: 'Plans' }).waitFor()
  // Ann's caret stays where she typed: Bob's page draws it, with her name.
  await showsCursorOf(bob, 'Bob', 'Ann')

  // Bob types at the end, in bold; Ann sees it and his cursor.
  await bob.locator('#editor p').click()
  await bob.keyboard.press('End')
  await bob.keyboard.press('Control+b')
  await bob.keyboard.type(' And Bob!')
  const expected = 'Plans\nHello from Ann. And Bob!'
  await Promise.all([shows(ann, 'Ann', expected), shows(bob, 'Bob', expected)])
  await ann.locator('#editor strong', { hasText: 'And Bob!' }).waitFor()
  await showsCursorOf(ann, 'Ann', 'Bob')

  const held = await serverText()
  if (held !== expected) throw new Error(`the server holds ${JSON.stringify(held)}`)

  mkdirSync(dirname(screenshot), { recursive: true })
  await ann.screenshot({ path: screenshot })

  // The side list remembers the document; a new one starts empty and joins the list.
  await ann.locator('#documents a[aria-current]', { hasText: doc }).waitFor()
  await ann.locator('#new-document').click()
  await ann.waitForFunction((old) => document.getElementById('doc').textContent !== old, doc)
  const fresh = await ann.locator('#doc').textContent()
  await ann.locator('#status[data-status="synced"]').waitFor()
  await ann.locator('#documents a[aria-current]', { hasText: fresh }).waitFor()
  await ann.locator('#documents a', { hasText: doc }).waitFor()
  await shows(ann, 'Ann', '')

  console.log(`ok: both browsers and the server show ${JSON.stringify(expected)}, each page the other's cursor; then a new document ${JSON.stringify(fresh)}`)
  console.log(`screenshot: ${screenshot}`)
}

/** An editor and a viewer, pages and tokens from the example backend. */
async function editorAndViewer (browser) {
  const backend = await startBackend({ port: 0, server: base, secret: process.env.DEMO_TOKEN_SECRET })
  try {
    const ed = await open(browser, `${backend.url}/#${doc}`, 'Edna')
    const vic = await open(browser, `${backend.url}/?role=viewer#${doc}`, 'Vic')
    if (await vic.locator('#role').inputValue() !== 'viewer') throw new Error('the viewer page does not say it is a viewer')
    await ed.locator('#editor .ProseMirror').click()
    await ed.keyboard.type('Only Edna writes here.')
    const text = 'Only Edna writes here.'
    // The viewer follows every change.
    await shows(vic, 'Vic', text)

    // Typing into the viewer's page changes nothing, not even there.
    await vic.locator('#editor .ProseMirror').click()
    await vic.keyboard.press('End')
    await vic.keyboard.type(' typed by Vic')
    const own = await textOf(vic)
    if (own !== text) throw new Error(`typing in the viewer's page changed it to ${JSON.stringify(own)}`)

    // A viewer whose page was modified to edit anyway: the change goes out to the server.
    await vic.evaluate(() => {
      const { fragment, Y } = window.demo
      const paragraph = new Y.XmlElement('paragraph')
      paragraph.insert(0, [new Y.XmlText('forced by Vic')])
      fragment.insert(fragment.length, [paragraph])
    })
    // Then the viewer renames itself. The server handles a socket's messages in order and
    // relays the rename after whatever it relayed of the change, on each socket in order:
    // once the editor sees the new name, it has seen all of that.
    await vic.locator('#name').fill('Vic (done)')
    await ed.locator('#peers li', { hasText: 'Vic (done)' }).waitFor()
    const edits = await textOf(ed)
    if (edits !== text) throw new Error(`the viewer's change reached the editor: ${JSON.stringify(edits)}`)
    const held = await serverText((await (await fetch(`${backend.url}/token?doc=${doc}&role=editor&name=e2e`)).json()).token)
    if (held !== text) throw new Error(`the viewer's change reached the server: it holds ${JSON.stringify(held)}`)
    // The server told the viewer why ("permission denied", which the page shows).
    await vic.locator('#notice[data-denied]').waitFor()

    // The editor still edits, and the viewer still follows.
    await ed.keyboard.type(' Still.')
    await shows(vic, 'Vic', `${text} Still.\nforced by Vic`)
    console.log(`ok: the viewer follows the editor, and neither its typing nor a forced change reached the editor or the server (${JSON.stringify(held)})`)
  } finally {
    await backend.close()
  }
}

/** Asks the caller to do `what` to the proxy (`cut K`, `heal K`); waits until done. */
let control
async function proxy (what) {
  control ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  console.log(`proxy ${what}`)
  const { value, done } = await control.next()
  if (done || value !== `done ${what}`) throw new Error(`the proxy did not ${what}: ${done ? 'stdin closed' : value}`)
}

/** How many times `page`'s y-websocket saw its socket close, and its sessions resumed. */
const counts = (page) => page.evaluate(() => ({ closes: window.closes, resumes: window.demo.resumes.count }))

/** Two editors keep typing while their sockets are cut: nothing is lost or doubled, and
 * y-websocket never notices. */
async function throughCuts (browser) {
  const ann = await open(browser, `${base}/#${doc}`, 'Ann')
  const bob = await open(browser, `${base}/#${doc}`, 'Bob')
  for (const page of [ann, bob]) {
    await page.evaluate(() => {
      window.closes = 0
      window.demo.provider.on('connection-close', () => window.closes++)
    })
  }
  // Ann writes the first line, Bob a second one: each keeps its caret in its own line.
  await ann.locator('#editor .ProseMirror').click()
  await ann.keyboard.type('Ann:')
  await shows(bob, 'Bob', 'Ann:')
  await bob.locator('#editor p').click()
  await bob.keyboard.press('End')
  await bob.keyboard.press('Enter')
  await bob.keyboard.type('Bob:')
  await shows(ann, 'Ann', 'Ann:\nBob:')
  let a = 'Ann:'
  let b = 'Bob:'
  for (let k = 1; k <= cuts; k++) {
    await proxy(`cut ${k}`)
    // Typed while the sockets are down: kept by the session until it resumes.
    await ann.keyboard.type(` a${k}`)
    await bob.keyboard.type(` b${k}`)
    a += ` a${k}`
    b += ` b${k}`
    await proxy(`heal ${k}`)
    for (const [page, name] of [[ann, 'Ann'], [bob, 'Bob']]) {
      await page.waitForFunction((n) => window.demo.resumes.count >= n, k).catch(async (e) => {
        throw new Error(`${name}'s session did not resume after cut ${k}: ${JSON.stringify(await counts(page))} (${e.message.split('\n')[0]})`)
      })
    }
    await Promise.all([shows(ann, 'Ann', `${a}\n${b}`), shows(bob, 'Bob', `${a}\n${b}`)])
  }
  const expected = `${a}\n${b}`
  for (const [page, name] of [[ann, 'Ann'], [bob, 'Bob']]) {
    const { closes, resumes } = await counts(page)
    if (closes !== 0) throw new Error(`${name}'s y-websocket saw its socket close ${closes} time(s)`)
    if (resumes < cuts) throw new Error(`${name}'s session resumed ${resumes} time(s), not ${cuts}`)
    await page.locator('#status[data-status="synced"]').waitFor()
  }
  const held = await serverText()
  if (held !== expected) throw new Error(`the server holds ${JSON.stringify(held)}`)
  console.log(`ok: through ${cuts} cuts both editors and the server show ${JSON.stringify(expected)}; y-websocket saw no close`)
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // A cold Chromium start on a busy machine takes longer than any single wait below.
  timeout: 3 * TIMEOUT_MS,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
})
try {
  await (viewerMode ? editorAndViewer(browser) : cutsMode ? throughCuts(browser) : twoEditors(browser))
} catch (e) {
  console.log(`FAIL: ${e.message}`)
  process.exitCode = 1
} finally {
  await browser.close()
  process.stdin.destroy()
}
