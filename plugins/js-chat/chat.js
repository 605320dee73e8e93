// `js-chat`: the `chat` consumer (plugins/chat/src/lib.rs) in JavaScript, run by QuickJS
// inside the component. Same protocol, same HTTP answers, same snapshot format: a
// document can move between the two on a hot reload.
//
// Protocol (JSON text frames from the server; plain text frames from clients):
// - on connect (`/ws/js-chat/{doc}?name=ann`): `{"type":"history","messages":[...]}` to
//   the new client, `{"type":"join","name":"ann"}` to the others;
// - a text frame from a client is a chat line: stored (the last 100 are kept) and sent to
//   the others as `{"type":"message","name":"ann","text":"...","at":1700000000000}`;
// - on disconnect: `{"type":"leave","name":"ann"}`.
// With access tokens on (`[plugin.js-chat.auth]`), the name is the token's `name` claim
// (else `sub`) and `?name=` is ignored.
// HTTP: `GET /docs/js-chat/{doc}` returns `{"document":"...","messages":[...]}`;
// `POST /docs/js-chat/{doc}` with a text body adds a line from `server`.
//
// Build: `cargo xtask plugins`, or `npm ci && npm run build` here (writes plugins/js-chat.wasm).

import host from "wasmroom:consumer/host@0.1.1";
import context from "wasmroom:consumer/context@0.1.1";

/** Lines kept per document. */
const HISTORY = 100;

/** The `name` (else `sub`) claim of the connection's access token, cut to 64 bytes, or null. */
function tokenName(id) {
  const claims = context.claims(id);
  if (claims === null || claims === undefined) return null;
  let parsed;
  try {
    parsed = JSON.parse(claims);
  } catch {
    return null;
  }
  let name = typeof parsed.name === "string" ? parsed.name : typeof parsed.sub === "string" ? parsed.sub : null;
  if (name === null || name.length === 0) return null;
  while (byteLength(name) > 64) name = Array.from(name).slice(0, -1).join("");
  return name;
}

/** The document's state: one instance per document, so module globals are per document. */
let document = "";
/** @type {{name: string, text: string, at: number}[]} */
let history = [];
/** Connection id -> name, for the connections that joined. */
let names = new Map();

// QuickJS has no TextEncoder/TextDecoder: UTF-8 by hand.
function utf8Encode(s) {
  const out = [];
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

/** Strict UTF-8 decoding (as Rust's `String::from_utf8`); `null` if invalid. */
function utf8Decode(bytes) {
  let s = "";
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let c;
    let n;
    if (b < 0x80) {
      c = b;
      n = 0;
    } else if (b >= 0xc2 && b <= 0xdf) {
      c = b & 0x1f;
      n = 1;
    } else if (b >= 0xe0 && b <= 0xef) {
      c = b & 0x0f;
      n = 2;
    } else if (b >= 0xf0 && b <= 0xf4) {
      c = b & 0x07;
      n = 3;
    } else {
      return null;
    }
    for (let k = 1; k <= n; k++) {
      const cont = bytes[i + k];
      if (cont === undefined || (cont & 0xc0) !== 0x80) return null;
      c = (c << 6) | (cont & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((n === 2 && c < 0x800) || (n === 3 && c < 0x10000) || c > 0x10ffff) return null;
    if (c >= 0xd800 && c <= 0xdfff) return null;
    s += String.fromCodePoint(c);
    i += n + 1;
  }
  return s;
}

function byteLength(s) {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

/** The raw (still percent-encoded) value of query parameter `name`, or `null`. */
function queryParam(query, name) {
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (key === name) return eq < 0 ? "" : pair.slice(eq + 1);
  }
  return null;
}

// Host calls report refusals (a connection that left meanwhile, say) by throwing; the
// chat ignores them, as the Rust chat does.
function send(to, text) {
  try {
    host.send(to, { tag: "text", val: text });
  } catch (_) {}
}

function broadcast(text, except) {
  try {
    host.broadcast({ tag: "text", val: text }, except);
  } catch (_) {}
}

// Key order matters: the output is byte for byte that of the Rust chat (serde_json).
const line = (l) => ({ name: l.name, text: l.text, at: l.at });

function add(l, except) {
  broadcast(JSON.stringify({ type: "message", ...line(l) }), except);
  if (history.length === HISTORY) history.shift();
  history.push(l);
}

function textResponse(status, body) {
  return {
    status,
    headers: [["content-type", "text/plain; charset=utf-8"]],
    body: utf8Encode(body),
  };
}

function jsonResponse(status, body) {
  return { status, headers: [["content-type", "application/json"]], body: utf8Encode(body) };
}

/** A u64 JSON value as the Rust chat's serde accepts it. */
const isU64 = (v) => typeof v === "number" && Number.isInteger(v) && v >= 0;

function parseSnapshot(text) {
  const v = JSON.parse(text);
  const fail = (what) => {
    throw new Error(what);
  };
  if (v === null || typeof v !== "object" || Array.isArray(v)) fail("expected an object");
  if (typeof v.document !== "string") fail("missing or invalid field `document`");
  if (!Array.isArray(v.history)) fail("missing or invalid field `history`");
  const lines = v.history.map((l) => {
    if (l === null || typeof l !== "object" || typeof l.name !== "string" || typeof l.text !== "string" || !isU64(l.at)) {
      fail("invalid history line");
    }
    return line(l);
  });
  if (v.names === null || typeof v.names !== "object" || Array.isArray(v.names)) {
    fail("missing or invalid field `names`");
  }
  const map = new Map();
  for (const [id, name] of Object.entries(v.names)) {
    if (!/^[0-9]+$/.test(id) || typeof name !== "string") fail("invalid entry in `names`");
    map.set(Number(id), name);
  }
  return { document: v.document, history: lines, names: map };
}

export const consumer = {
  open(doc) {
    document = doc;
  },

  onConnect(info) {
    // With access tokens on, the name is the verified one; `?name=` is not trusted.
    let name = tokenName(info.id);
    if (name === null) name = queryParam(info.query, "name");
    if (name === null) {
      name = `guest-${info.id}`;
    } else if (name.length === 0 || byteLength(name) > 64) {
      return { tag: "reject", val: { status: 400, reason: "name must be 1 to 64 bytes" } };
    }
    send(info.id, JSON.stringify({ type: "history", messages: history.map(line) }));
    broadcast(JSON.stringify({ type: "join", name }), [info.id]);
    names.set(info.id, name);
    return { tag: "accept", val: null };
  },

  onMessage(from, msg) {
    if (msg.tag !== "text") {
      send(from, JSON.stringify({ type: "error", reason: "chat takes text messages only" }));
      return;
    }
    add({ name: names.get(from) ?? "", text: msg.val, at: host.nowMs() }, [from]);
  },

  onDisconnect(conn, _code) {
    const name = names.get(conn);
    if (name !== undefined) {
      names.delete(conn);
      broadcast(JSON.stringify({ type: "leave", name }), []);
    }
  },

  onTimer(_id) {},

  onRequest(request) {
    switch (request.method) {
      case "GET":
        return jsonResponse(200, JSON.stringify({ document, messages: history.map(line) }));
      case "POST": {
        const text = utf8Decode(request.body);
        if (text === null || text.length === 0) {
          return textResponse(400, "send a non-empty UTF-8 body");
        }
        add({ name: "server", text, at: host.nowMs() }, []);
        return jsonResponse(201, `{"messages":${history.length}}`);
      }
      default:
        return textResponse(405, "use GET or POST");
    }
  },

  // The Rust chat's serde layout: {"document":..,"history":[..],"names":{"id":name}},
  // names in ascending id order (a BTreeMap).
  snapshot() {
    const ids = [...names.keys()].sort((a, b) => a - b);
    const entries = ids.map((id) => `${JSON.stringify(String(id))}:${JSON.stringify(names.get(id))}`);
    return utf8Encode(
      `{"document":${JSON.stringify(document)},"history":${JSON.stringify(history.map(line))},"names":{${entries.join(",")}}}`,
    );
  },

  restore(state) {
    const text = utf8Decode(state);
    let parsed;
    try {
      if (text === null) throw new Error("invalid UTF-8");
      parsed = parseSnapshot(text);
    } catch (e) {
      throw `not a chat snapshot: ${e.message}`;
    }
    document = parsed.document;
    history = parsed.history;
    names = parsed.names;
  },
};
