// An example application backend for the demo (optional): it serves the page (demo/dist)
// and signs access tokens for wasmroom's `yjs` plugin, so that a page is an editor or a
// viewer. No dependencies: an HS256 JWT is one HMAC.
//
//   export DEMO_TOKEN_SECRET=$(openssl rand -hex 32)
//   cargo xtask serve --config demo/tokens.toml      # wasmroom, taking tokens (port 8000)
//   node demo/backend.mjs                            # this, on http://127.0.0.1:8001/
//
// Options: --port N (8001; 0 picks one), --server URL (wasmroom, http://127.0.0.1:8000).
//
// GET /token?doc=NAME&role=editor|viewer&name=WHO answers {"token": JWT}: audience `yjs`
// (the plugin), the document, the role, 10 minutes. A real backend decides the role from
// who is signed in; this one believes what the page asks for, which is the point of a demo.
// GET /demo-config.json tells the page where wasmroom is and where tokens come from;
// anything else is a file of demo/dist.

import { createHmac } from 'node:crypto'
import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { dirname, extname, join, normalize, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const TOKEN_SECONDS = 600
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.map': 'application/json' }

const base64url = (data) => Buffer.from(data).toString('base64url')

/** An HS256 JWT of `claims`, as wasmroom's `[plugin.yjs.auth]` with `algorithm = "HS256"` checks it. */
export function sign (claims, secret) {
  const head = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const body = base64url(JSON.stringify(claims))
  const mac = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${mac}`
}

/** What a token for `doc` in `role` says. */
export function claimsFor (doc, role, name, now = Date.now()) {
  return {
    aud: 'yjs',
    doc,
    role,
    sub: name,
    exp: Math.floor(now / 1000) + TOKEN_SECONDS
  }
}

/** Starts the backend; resolves to `{ url, close }` once it listens. */
export function startBackend ({ port = 8001, server = 'http://127.0.0.1:8000', secret, dist = join(here, 'dist') }) {
  if (!secret || Buffer.byteLength(secret) < 32) throw new Error('DEMO_TOKEN_SECRET must be set, at least 32 bytes (the same as wasmroom\'s [plugin.yjs.auth] secret)')
  const ws = new URL('/ws/yjs', server)
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:'
  const config = JSON.stringify({ server: ws.href, tokens: '/token' })
  const http = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://backend')
    const answer = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' })
      res.end(body)
    }
    if (req.method !== 'GET') return answer(405, 'text/plain', 'GET only')
    if (url.pathname === '/demo-config.json') return answer(200, TYPES['.json'], config)
    if (url.pathname === '/token') {
      const doc = url.searchParams.get('doc') ?? ''
      const role = url.searchParams.get('role') === 'viewer' ? 'viewer' : 'editor'
      const name = (url.searchParams.get('name') ?? '').slice(0, 40)
      // A document claim ending in `*` is a pattern: never mint one from a name users chose.
      if (!doc || doc.includes('*') || doc.includes('/')) return answer(400, 'text/plain', 'bad document name')
      return answer(200, TYPES['.json'], JSON.stringify({ token: sign(claimsFor(doc, role, name), secret) }))
    }
    const file = normalize(join(dist, url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname)))
    if (!file.startsWith(dist + sep)) return answer(404, 'text/plain', 'not found')
    try {
      answer(200, TYPES[extname(file)] ?? 'application/octet-stream', await readFile(file))
    } catch {
      answer(404, 'text/plain', 'not found')
    }
  })
  return new Promise((resolve, reject) => {
    http.once('error', reject)
    http.listen(port, '127.0.0.1', () => {
      resolve({ url: `http://127.0.0.1:${http.address().port}`, close: () => new Promise((done) => { http.close(done); http.closeAllConnections() }) })
    })
  })
}

if (process.argv[1] && fileURLToPath(import.meta.url) === normalize(process.argv[1])) {
  const option = (flag, fallback) => {
    const at = process.argv.indexOf(flag)
    return at > 0 ? process.argv[at + 1] : fallback
  }
  try {
    const { url } = await startBackend({
      port: Number(option('--port', '8001')),
      server: option('--server', 'http://127.0.0.1:8000'),
      secret: process.env.DEMO_TOKEN_SECRET
    })
    console.log(`demo backend: open ${url}/ (editor) and ${url}/?role=viewer (viewer)`)
  } catch (e) {
    console.error(`demo backend: ${e.message}`)
    process.exit(1)
  }
}
