// Where the page connects and with which token. Served by wasmroom (`--static demo/dist`)
// the page connects to the server it came from, without a token: everyone edits. Served
// by the example backend (demo/backend.mjs), `demo-config.json` names the wasmroom server
// and where to get access tokens, and the page is an editor or a viewer (`?role=viewer`),
// as the token says; the server refuses a viewer's changes.

/** `{ server, tokens }`: the y-websocket server URL (`.../ws/yjs`) and the token URL, or
 * null when the page uses no tokens. */
export async function loadConfig () {
  const sameOrigin = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/yjs`
  try {
    const answer = await fetch('demo-config.json', { cache: 'no-store' })
    const config = answer.ok ? await answer.json() : {}
    return { server: config.server || sameOrigin, tokens: config.tokens || null }
  } catch {
    return { server: sameOrigin, tokens: null }
  }
}

/** The role this page asks for: `?role=viewer`, else editor. */
export function requestedRole () {
  return new URLSearchParams(location.search).get('role') === 'viewer' ? 'viewer' : 'editor'
}

/** A token for `doc` in `role` from the backend at `tokens`. */
export async function fetchToken (tokens, doc, role, name) {
  const url = new URL(tokens, location.href)
  url.search = new URLSearchParams({ doc, role, name }).toString()
  const answer = await fetch(url, { cache: 'no-store' })
  if (!answer.ok) throw new Error(`the backend refused a token: ${answer.status} ${await answer.text()}`)
  return (await answer.json()).token
}

/** Switches this page to `role` (a reload: the token and the editor start over). */
export function switchRole (role) {
  const params = new URLSearchParams(location.search)
  if (role === 'viewer') params.set('role', 'viewer')
  else params.delete('role')
  const search = params.toString()
  location.search = search ? `?${search}` : ''
}
