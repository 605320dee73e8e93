// `js-chat`: the `chat` consumer (plugins/chat/src/lib.rs) in JavaScript on the kit
// (kits/js). Same protocol, same HTTP answers, same snapshot format: a document can move
// between the two on a hot reload.
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
// Build: `cargo xtask plugins`.

import { Consumer, Response, broadcast, byteLength, decodeText, nowMs, reject, send, serve } from "../../kits/js/wasmroom.js";

/** Lines kept per document. */
const HISTORY = 100;

/** The `name` (else `sub`) claim of the connection's access token, cut to 64 bytes, or null. */
function tokenName(connection) {
  const claims = connection.claims();
  if (claims === null || typeof claims !== "object") return null;
  let name = typeof claims.name === "string" ? claims.name : typeof claims.sub === "string" ? claims.sub : null;
  if (name === null || name.length === 0) return null;
  while (byteLength(name) > 64) name = Array.from(name).slice(0, -1).join("");
  return name;
}

// Key order matters: the output is byte for byte that of the Rust chat (serde_json).
const line = (l) => ({ name: l.name, text: l.text, at: l.at });

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
  const names = new Map();
  for (const [id, name] of Object.entries(v.names)) {
    if (!/^[0-9]+$/.test(id) || typeof name !== "string") fail("invalid entry in `names`");
    names.set(Number(id), name);
  }
  return { document: v.document, history: lines, names };
}

class Chat extends Consumer {
  /** @type {{name: string, text: string, at: number}[]} */
  history = [];
  /** Connection id -> name, for the connections that joined. */
  names = new Map();

  add(l, exclude) {
    broadcast(JSON.stringify({ type: "message", ...line(l) }), exclude);
    if (this.history.length === HISTORY) this.history.shift();
    this.history.push(l);
  }

  onConnect(connection) {
    // With access tokens on, the name is the verified one; `?name=` is not trusted.
    let name = tokenName(connection) ?? connection.queryParam("name");
    if (name === null) {
      name = `guest-${connection.id}`;
    } else if (name.length === 0 || byteLength(name) > 64) {
      return reject(400, "name must be 1 to 64 bytes");
    }
    send(connection.id, JSON.stringify({ type: "history", messages: this.history.map(line) }));
    broadcast(JSON.stringify({ type: "join", name }), [connection.id]);
    this.names.set(connection.id, name);
  }

  onMessage(sender, message) {
    if (typeof message !== "string") {
      send(sender, JSON.stringify({ type: "error", reason: "chat takes text messages only" }));
      return;
    }
    this.add({ name: this.names.get(sender) ?? "", text: message, at: nowMs() }, [sender]);
  }

  onDisconnect(connection, _code) {
    const name = this.names.get(connection);
    if (name !== undefined) {
      this.names.delete(connection);
      broadcast(JSON.stringify({ type: "leave", name }));
    }
  }

  onRequest(request) {
    switch (request.method) {
      case "GET":
        return Response.json(200, { document: this.document, messages: this.history.map(line) });
      case "POST": {
        const text = request.text();
        if (!text) return Response.text(400, "send a non-empty UTF-8 body");
        this.add({ name: "server", text, at: nowMs() }, []);
        return Response.json(201, { messages: this.history.length });
      }
      default:
        return Response.text(405, "use GET or POST");
    }
  }

  // The Rust chat's serde layout: {"document":..,"history":[..],"names":{"id":name}},
  // names in ascending id order (a BTreeMap; past 2^32 a JS object would not sort them).
  snapshot() {
    const ids = [...this.names.keys()].sort((a, b) => a - b);
    const names = ids.map((id) => `${JSON.stringify(String(id))}:${JSON.stringify(this.names.get(id))}`);
    return `{"document":${JSON.stringify(this.document)},"history":${JSON.stringify(this.history.map(line))},"names":{${names.join(",")}}}`;
  }

  restore(state) {
    const text = decodeText(state);
    if (text === null) throw new Error("not a chat snapshot: invalid UTF-8");
    let parsed;
    try {
      parsed = parseSnapshot(text);
    } catch (e) {
      throw new Error(`not a chat snapshot: ${e.message}`);
    }
    this.document = parsed.document;
    this.history = parsed.history;
    this.names = parsed.names;
  }
}

export const consumer = serve(Chat);
