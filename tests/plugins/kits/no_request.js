// A consumer written against componentize-qjs's generated interface directly, without the
// kit, that forgets `onRequest`. componentize-qjs still exports `on-request` (every export
// of the world exists, with the right type), whose call traps: `wasmroom check` must
// refuse it (tests/languages.rs).

export const consumer = {
  open(_document) {},
  onConnect(_info) {
    return { tag: "accept", val: null };
  },
  onMessage(_from, _msg) {},
  onDisconnect(_connection, _code) {},
  onTimer(_id) {},
  snapshot() {
    return new Uint8Array();
  },
  restore(_state) {},
};
