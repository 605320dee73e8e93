// The documents this browser opened, newest first, kept in localStorage, and a button for
// a new one. The server lists live documents only on its admin API (a token beyond
// loopback, every plugin's documents), which a page must not hold; its public
// `GET /plugins` gives counts, not names. So the page remembers what it opened.

const KEY = 'wasmroom-demo.documents'
const KEEP = 20

/** The document this page edits: the address's hash (`/#notes`), else `?doc=`, else "demo". */
export function documentName () {
  const raw = location.hash.slice(1) || new URLSearchParams(location.search).get('doc') || ''
  let name
  try {
    name = decodeURIComponent(raw)
  } catch {
    name = raw
  }
  // Document ids have no `/` or `*` (a token's document claim reads `*` as a pattern).
  return name.replace(/[/*]/g, '-').slice(0, 200) || 'demo'
}

function load () {
  try {
    const list = JSON.parse(localStorage.getItem(KEY))
    return Array.isArray(list) ? list.filter((d) => typeof d?.name === 'string') : []
  } catch {
    return []
  }
}

/** Remembers `name` as opened now. */
export function remember (name) {
  const list = [{ name, opened: Date.now() }, ...load().filter((d) => d.name !== name)]
  localStorage.setItem(KEY, JSON.stringify(list.slice(0, KEEP)))
}

/** A fresh document id, e.g. `note-k3x9q2`. */
export function newName () {
  return `note-${Math.random().toString(36).slice(2, 8)}`
}

/** Keeps `list` showing the remembered documents (`current` marked), in step with other
 * tabs; `button` opens a new document. */
export function showDocuments (list, current, button) {
  const render = () => {
    list.replaceChildren(...load().map(({ name, opened }) => {
      const item = document.createElement('li')
      const link = document.createElement('a')
      link.href = `${location.pathname}${location.search}#${encodeURIComponent(name)}`
      link.textContent = name
      link.title = `opened ${new Date(opened).toLocaleString()}`
      if (name === current) link.setAttribute('aria-current', 'page')
      item.append(link)
      return item
    }))
  }
  window.addEventListener('storage', (e) => { if (e.key === KEY) render() })
  button.addEventListener('click', () => { location.hash = newName() })
  render()
}
