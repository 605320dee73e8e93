// Who this tab is to the others: a random name and colour per tab (kept in sessionStorage,
// so a reload keeps them and another tab draws its own), the name editable.

const ADJECTIVES = ['Amber', 'Brisk', 'Calm', 'Daring', 'Eager', 'Fuzzy', 'Gentle', 'Happy', 'Jolly', 'Keen', 'Lucky', 'Merry', 'Nimble', 'Quiet', 'Swift', 'Witty']
const ANIMALS = ['Otter', 'Heron', 'Badger', 'Lynx', 'Puffin', 'Fox', 'Gecko', 'Koala', 'Marten', 'Newt', 'Owl', 'Panda', 'Robin', 'Seal', 'Tapir', 'Wren']
// Six-digit colours: y-prosemirror draws cursors only in that form; dark enough for white text.
const COLOURS = ['#d1495b', '#00798c', '#30638e', '#8f2d56', '#6a4c93', '#2b9348', '#c05717', '#1982c4', '#b5179e', '#386641']

const KEY = 'wasmroom-demo.user'
const pick = (list) => list[Math.floor(Math.random() * list.length)]

/** This tab's `{ name, colour }`. */
export function loadUser () {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY))
    if (typeof saved?.name === 'string' && /^#[0-9a-f]{6}$/i.test(saved?.color)) return saved
  } catch {}
  const user = { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(COLOURS) }
  sessionStorage.setItem(KEY, JSON.stringify(user))
  return user
}

/** Shows `user` in the name field and announces it through `awareness`; every edit of
 * the field is announced at once. */
export function bindUser (awareness, user, field, swatch) {
  field.value = user.name
  swatch.style.backgroundColor = user.color
  const announce = () => {
    user.name = field.value.trim().slice(0, 40) || 'anonymous'
    sessionStorage.setItem(KEY, JSON.stringify(user))
    awareness.setLocalStateField('user', { name: user.name, color: user.color })
  }
  field.addEventListener('input', announce)
  // A fresh awareness state has clock 0, which the other clients ignore until its renewal
  // (15 s later): setting a field announces this one at once.
  announce()
}

/** Keeps `list` showing everyone else present, each in their colour. */
export function showPeers (awareness, list) {
  const render = () => {
    const others = [...awareness.getStates()]
      .filter(([id, state]) => id !== awareness.clientID && state.user)
      .map(([, state]) => state.user)
    list.dataset.count = String(others.length)
    list.replaceChildren(...others.map((user) => {
      const item = document.createElement('li')
      item.textContent = user.name
      item.style.setProperty('--colour', user.color)
      return item
    }))
    if (others.length === 0) list.append(Object.assign(document.createElement('li'), { className: 'alone', textContent: 'no one else here yet' }))
  }
  awareness.on('change', render)
  render()
}
