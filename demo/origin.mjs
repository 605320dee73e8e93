// Which WebSocket servers a page may reach, as Chromium (headless, playwright-core) sees
// it: opens the page at BASE (served by one wasmroom's `--static`), and from it a socket to
// each URL; the browser sends the page's Origin.
//
//   node demo/origin.mjs http://HOST:PORT ws://OTHER/ws/yjs/doc ...
//
// Prints one line per URL, `open URL` or `refused URL`, then `ok: done`; exits 1 with
// `FAIL: reason` when the page cannot be loaded.

import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'

const CHROMIUM = '/usr/bin/chromium'
const TIMEOUT_MS = 20000

const [base, ...urls] = process.argv.slice(2)
if (!base || urls.length === 0) {
  console.error('usage: node demo/origin.mjs http://HOST:PORT ws://URL ...')
  process.exit(2)
}
if (!existsSync(CHROMIUM)) {
  console.log(`FAIL: ${CHROMIUM} is missing: install it with \`apt-get install -y chromium\``)
  process.exit(1)
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  timeout: 3 * TIMEOUT_MS,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
})
try {
  const page = await browser.newPage()
  page.setDefaultTimeout(TIMEOUT_MS)
  const response = await page.goto(`${base}/`)
  if (!response?.ok()) throw new Error(`GET ${base}/ answered ${response?.status()}`)
  for (const url of urls) {
    // Settles on the first of open / error / close: a refused handshake ends in error.
    const outcome = await page.evaluate((u) => new Promise((resolve) => {
      const ws = new WebSocket(u)
      ws.onopen = () => { ws.close(); resolve('open') }
      ws.onerror = () => resolve('refused')
      ws.onclose = () => resolve('refused')
    }), url)
    console.log(`${outcome} ${url}`)
  }
  console.log('ok: done')
} catch (e) {
  console.log(`FAIL: ${e.message}`)
  process.exitCode = 1
} finally {
  await browser.close()
}
