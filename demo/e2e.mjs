// End-to-end test of the demo in Debian's Chromium (headless, driven by playwright-core):
// two browsers edit one document of a running wasmroom that serves the yjs plugin and
// `--static demo/dist`.
//
//   node demo/e2e.mjs http://127.0.0.1:PORT [SCREENSHOT.png]
//
// Prints `ok: ...` and `screenshot: PATH` and exits 0, or prints `FAIL: reason` and exits 1.
// Every wait is on a condition (bounded by TIMEOUT_MS); nothing sleeps.

import { existsSync, mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import * as Y from 'yjs'

const CHROMIUM = '/usr/bin/chromium'
const TIMEOUT_MS = 20000
const here = dirname(fileURLToPath(import.meta.url))

const [base, shotArg] = process.argv.slice(2)
if (!base) {
  console.error('usage: node demo/e2e.mjs http://HOST:PORT [SCREENSHOT.png]')
  process.exit(2)
}
const screenshot = resolve(shotArg ?? `${here}/../target/e2e/demo.png`)
if (!existsSync(CHROMIUM)) {
  console.log(`FAIL: ${CHROMIUM} is missing: install it with \`apt-get install -y chromium\``)
  process.exit(1)
}

// A new document per run, so that a reused server does not interfere.
const doc = `e2e-${Date.now().toString(36)}`
const textOf = (page) => page.locator('#editor').inputValue()

/** Opens the demo on `doc` in its own browser context (no shared BroadcastChannel, so
 * every change has to go through the server), and waits until it is synced. */
async function open (browser, name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 560 } })
  const page = await context.newPage()
  page.setDefaultTimeout(TIMEOUT_MS)
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`))
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${name}] console: ${m.text()}`) })
  const response = await page.goto(`${base}/#${doc}`)
  if (!response?.ok()) throw new Error(`${name}: GET / answered ${response?.status()}`)
  await page.locator('#status[data-status="synced"]').waitFor()
  return page
}

/** Waits until `page`'s textarea holds `expected`. */
async function shows (page, name, expected) {
  try {
    await page.waitForFunction((t) => document.getElementById('editor').value === t, expected)
  } catch (e) {
    throw new Error(`${name} shows ${JSON.stringify(await textOf(page))}, not ${JSON.stringify(expected)} (${e.message.split('\n')[0]})`)
  }
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
  const ann = await open(browser, 'ann')
  const bob = await open(browser, 'bob')
  // Each sees the other through the server's awareness relay.
  await ann.locator('#peers[data-count="1"]').waitFor()
  await bob.locator('#peers[data-count="1"]').waitFor()

  // Ann writes a line; Bob receives it.
  const first = 'Hello from Ann.'
  await ann.locator('#editor').click()
  await ann.keyboard.type(first)
  await shows(bob, 'bob', first)

  // Both type at once: Ann at the start, Bob at the end. Each keystroke of one moves the
  // other's caret, which must stay on the same text for the result to be exact.
  await bob.locator('#editor').click()
  await bob.keyboard.press('Control+End')
  await ann.keyboard.press('Control+Home')
  await Promise.all([
    ann.keyboard.type('>> '),
    bob.keyboard.type(' And hello from Bob!')
  ])
  const expected = '>> Hello from Ann. And hello from Bob!'
  await Promise.all([shows(ann, 'ann', expected), shows(bob, 'bob', expected)])

  // The server holds the same document: GET /docs/yjs/{doc} is its state as one update.
  const state = await fetch(`${base}/docs/yjs/${doc}`)
  if (!state.ok) throw new Error(`GET /docs/yjs/${doc} answered ${state.status}`)
  const server = new Y.Doc()
  Y.applyUpdate(server, new Uint8Array(await state.arrayBuffer()))
  const held = server.getText('text').toString()
  if (held !== expected) throw new Error(`the server holds ${JSON.stringify(held)}`)

  mkdirSync(dirname(screenshot), { recursive: true })
  await bob.screenshot({ path: screenshot })
  console.log(`ok: both browsers and the server show ${JSON.stringify(await textOf(ann))}`)
  console.log(`screenshot: ${screenshot}`)
} catch (e) {
  console.log(`FAIL: ${e.message}`)
  process.exitCode = 1
} finally {
  await browser.close()
}
