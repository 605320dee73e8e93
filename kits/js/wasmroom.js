// wasmroom's JavaScript kit: write a consumer as one class, without generated names.
//
//   import { Consumer, broadcast, serve } from "./wasmroom.js";
//
//   class Relay extends Consumer {
//     onMessage(sender, message) {
//       broadcast(message, [sender]);
//     }
//   }
//
//   export const consumer = serve(Relay);
//
// The host runs one instance of the component per document, and `serve` keeps one object
// of your class per document: `this` is the document's state. Every hook has a default
// (accept connections, ignore messages, 404 for requests, an empty snapshot, and
// `restore` refusing a non-empty state), so you override only what you need.
//
// Host functions take a string (sent as a text message) or bytes (a Uint8Array, sent as
// binary) and never throw for a refusal: they return `null` when done, or a `HostError`
// saying why the host refused (the document is unharmed; most consumers ignore it).
// Messages arrive as a string (text) or a Uint8Array (binary).
//
// Build with componentize-qjs 0.4.5 (package.json here pins it) and `--sync`; see README.md.

import host from "wasmroom:consumer/host@0.1.2";
import context from "wasmroom:consumer/context@0.1.2";

/** Why the host refused a request: `kind` is "unknown-connection", "closing",
 * "too-large", "too-many-timers" or "invalid-close-code"; `limit` the limit broken (bytes
 * for "too-large", timers for "too-many-timers"), else null. Returned, never thrown. */
export class HostError {
  constructor(kind, limit = null) {
    this.kind = kind;
    this.limit = limit;
  }
  toString() {
    return this.limit === null ? this.kind : `${this.kind} (limit ${this.limit})`;
  }
}

function refusal(call) {
  try {
    call();
    return null;
  } catch (e) {
    if (e !== null && typeof e === "object" && typeof e.tag === "string") {
      return new HostError(e.tag, e.val ?? null);
    }
    throw e;
  }
}

function toMessage(message) {
  if (typeof message === "string") return { tag: "text", val: message };
  return { tag: "binary", val: toBytes(message, "a message") };
}

/** Sends `message` (a string: text; bytes: binary) to one connection of this document. */
export function send(connection, message) {
  const msg = toMessage(message);
  return refusal(() => host.send(connection, msg));
}

/** Sends `message` to every connection of this document but those in `exclude`; the
 * host encodes it once for all of them. */
export function broadcast(message, exclude = []) {
  const msg = toMessage(message);
  return refusal(() => host.broadcast(msg, [...exclude]));
}

/** Closes a connection with a close code (1000, 1001, 1008, 1011, 3000-4999) and a short
 * reason; what was sent to it before goes first. */
export function close(connection, code = 1000, reason = "") {
  return refusal(() => host.close(connection, code, reason));
}

/** Calls `onTimer(id)` after `delayMs` milliseconds; a pending id is rescheduled. */
export function setTimer(id, delayMs) {
  return refusal(() => host.setTimer(id, delayMs));
}

/** Cancels a pending timer; returns whether it was pending. */
export function cancelTimer(id) {
  return host.cancelTimer(id);
}

/** The open connections of this document, oldest first. */
export function connections() {
  return host.connections();
}

const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Writes a line to the server's log, tagged with the plugin and document; `level` is
 * "trace", "debug", "info", "warn" or "error". */
export function log(level, text) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`log level ${JSON.stringify(level)} is none of ${LEVELS.join(", ")}`);
  }
  host.log(level, String(text));
}

/** The document's clock in ms since the Unix epoch, as of the start of this call: it does
 * not move during a call (nor does `Date.now()`). To wait, set a timer. */
export function nowMs() {
  return host.nowMs();
}

/** The verified access token's claims of `connection` (an object), or null when the
 * plugin takes no tokens or `connection` is not one of this document's. */
export function claims(connection) {
  return parseClaims(context.claims(connection));
}

/** `[plugin.NAME.settings]` `name` from the server's config (a string), or null. Read it
 * when needed: a config reload changes it under live documents. */
export function setting(name) {
  return context.setting(name) ?? null;
}

function parseClaims(text) {
  if (text === null || text === undefined) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// QuickJS has no TextEncoder/TextDecoder: UTF-8 here, once.

/** `text` as UTF-8 bytes. */
export function encodeText(text) {
  const out = [];
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

/** `bytes` decoded as UTF-8 (strictly, as Rust's `String::from_utf8`), or null if they
 * are not UTF-8. */
export function decodeText(bytes) {
  let s = "";
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let c;
    let n;
    if (b < 0x80) [c, n] = [b, 0];
    else if (b >= 0xc2 && b <= 0xdf) [c, n] = [b & 0x1f, 1];
    else if (b >= 0xe0 && b <= 0xef) [c, n] = [b & 0x0f, 2];
    else if (b >= 0xf0 && b <= 0xf4) [c, n] = [b & 0x07, 3];
    else return null;
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

/** The number of bytes of `text` in UTF-8. */
export function byteLength(text) {
  let n = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

function toBytes(value, what) {
  if (value === null || value === undefined) return new Uint8Array();
  if (typeof value === "string") return encodeText(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${what} must be a string or bytes (Uint8Array)`);
}

function header(headers, name) {
  const lower = name.toLowerCase();
  const found = headers.find(([n]) => n.toLowerCase() === lower);
  return found === undefined ? null : found[1];
}

function queryParam(query, name) {
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    if ((eq < 0 ? pair : pair.slice(0, eq)) === name) return eq < 0 ? "" : pair.slice(eq + 1);
  }
  return null;
}

/** A connection asking to join: `id`, `path`, `query` (without `?`), `headers` (an array
 * of [name, value], names lower-case), `subprotocols`, `remoteAddress`. */
export class Connect {
  constructor(info) {
    Object.assign(this, info);
  }
  /** The first header called `name` (any case), or null. */
  header(name) {
    return header(this.headers, name);
  }
  /** The raw (still percent-encoded) value of query parameter `name`, or null. */
  queryParam(name) {
    return queryParam(this.query, name);
  }
  /** This connection's token claims (an object), or null; see `claims`. */
  claims() {
    return claims(this.id);
  }
}

/** An HTTP request to `/docs/{plugin}/{document}...`: `method` (upper-case), `path`,
 * `query`, `headers`, `body` (a Uint8Array). */
export class Request {
  constructor(request) {
    Object.assign(this, request);
  }
  header(name) {
    return header(this.headers, name);
  }
  queryParam(name) {
    return queryParam(this.query, name);
  }
  /** The body as a string, or null if it is not UTF-8. */
  text() {
    return decodeText(this.body);
  }
  /** The request's token claims (an object, from the host's `x-wasmroom-claims` header,
   * which no client can forge), or null. */
  claims() {
    return parseClaims(this.header("x-wasmroom-claims"));
  }
}

/** The answer to a request. `body` is a string (sent as UTF-8) or bytes; `headers` an
 * object or an array of [name, value]; the host sets `content-length`. */
export class Response {
  constructor(status, body = "", headers = []) {
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
  /** A `text/plain` answer. */
  static text(status, body) {
    return new Response(status, body, [["content-type", "text/plain; charset=utf-8"]]);
  }
  /** An `application/json` answer: `value` serialized with `JSON.stringify`. */
  static json(status, value) {
    return new Response(status, JSON.stringify(value), [["content-type", "application/json"]]);
  }
}

/** `onConnect`'s answer: accept, choosing one of the offered subprotocols or none.
 * (Returning nothing accepts too.) */
export function accept(subprotocol = null) {
  return { tag: "accept", val: subprotocol };
}

/** `onConnect`'s answer: refuse with an HTTP status (400-599) and a short reason. */
export function reject(status, reason) {
  return { tag: "reject", val: { status, reason } };
}

/** The state of one document. Extend it, override the hooks you need, and export it with
 * `export const consumer = serve(YourClass);`. `this.document` is the document's id. */
export class Consumer {
  /** The document opens in a fresh instance (then `restore`, if it has a saved state).
   * Throwing refuses the document. */
  open(document) {}
  /** `connection` (a `Connect`) asks to join. Return nothing or `accept()` to accept,
   * `reject(status, reason)` to refuse. What you `send` it now arrives right after the
   * upgrade. Default: accept. */
  onConnect(connection) {}
  /** `message` (a string: text; a Uint8Array: binary) arrived from connection `sender`.
   * Default: ignored. */
  onMessage(sender, message) {}
  /** `connection` left with close `code` (the server's when it closed it, else the
   * client's; 1006: dropped). Default: nothing. */
  onDisconnect(connection, code) {}
  /** Timer `id` is due. Default: nothing. */
  onTimer(id) {}
  /** An HTTP request (a `Request`) to the document; return a `Response`. Default: 404. */
  onRequest(request) {
    return Response.text(404, "this consumer has no HTTP interface");
  }
  /** The whole state as a string or bytes, for saving and hot reloads. Default: empty. */
  snapshot() {
    return new Uint8Array();
  }
  /** Replaces the state with bytes (a Uint8Array) from `snapshot`, perhaps an older
   * version's; throwing refuses them. Default: accepts an empty state only, so that state
   * is never dropped silently. */
  restore(state) {
    if (state.length > 0) throw new Error("this consumer does not implement restore");
  }
}

function decision(answer) {
  if (answer === undefined || answer === null || answer === true) return accept();
  if (answer && (answer.tag === "accept" || answer.tag === "reject")) return answer;
  throw new TypeError("onConnect returns nothing, accept() or reject(status, reason)");
}

function response(answer) {
  if (answer === null || typeof answer !== "object" || typeof answer.status !== "number") {
    throw new TypeError("onRequest must return a Response (or an object with a status)");
  }
  const given = answer.headers ?? [];
  const headers = Array.isArray(given) ? given : Object.entries(given);
  return { status: answer.status, headers, body: toBytes(answer.body, "a response body") };
}

// A result's error is thrown as a string (componentize-qjs's `result<_, string>`).
function refused(e) {
  return e instanceof Error ? e.message || e.name : String(e);
}

/** The component's `consumer` export for `Class` (a subclass of `Consumer`):
 * `export const consumer = serve(Class);`. */
export function serve(Class) {
  if (typeof Class !== "function" || !(Class.prototype instanceof Consumer)) {
    throw new TypeError("serve takes a class that extends Consumer");
  }
  let current = null; // the document's one object, once it opened
  return {
    open(document) {
      try {
        const consumer = new Class();
        consumer.document = document;
        consumer.open(document);
        current = consumer;
      } catch (e) {
        throw refused(e);
      }
    },
    onConnect: (info) => decision(current.onConnect(new Connect(info))),
    onMessage: (connection, msg) => current.onMessage(connection, msg.val),
    onDisconnect: (connection, code) => current.onDisconnect(connection, code),
    onTimer: (id) => current.onTimer(id),
    onRequest: (request) => response(current.onRequest(new Request(request))),
    snapshot: () => toBytes(current.snapshot(), "snapshot()'s result"),
    restore(state) {
      try {
        current.restore(state);
      } catch (e) {
        throw refused(e);
      }
    },
  };
}
