import { test } from "node:test";
import assert from "node:assert/strict";
import { SessionWebSocket } from "../dist/index.js";
import { fakeSockets, until, ID, NEW_ID } from "./fake-socket.mjs";

const fast = { backoff: { initialMs: 1, maxMs: 2 } };

/** A SessionWebSocket as a library makes one (`new WS(url, protocols)`), with what it
 * saw recorded. */
function open(options = {}, protocols = []) {
  const { FakeSocket, sockets } = fakeSockets();
  const WS = SessionWebSocket.with({ ...fast, WebSocket: FakeSocket, ...options });
  const ws = new WS("ws://h/ws/yjs/doc", protocols);
  ws.binaryType = "arraybuffer";
  const seen = [];
  ws.onopen = () => seen.push("open");
  ws.onmessage = (e) => seen.push(e.data instanceof ArrayBuffer ? [...new Uint8Array(e.data)] : e.data);
  ws.onerror = () => seen.push("error");
  ws.onclose = (e) => seen.push({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  return { ws, WS, sockets, seen };
}

test("what y-websocket uses of a WebSocket: constants, binaryType, the handlers, send", async () => {
  const { ws, WS, sockets, seen } = open({}, ["extra.v1"]);
  assert.equal(WS.OPEN, 1);
  assert.equal(ws.readyState, ws.CONNECTING);
  assert.throws(() => ws.send("early"), (e) => e.name === "InvalidStateError");
  await until(() => sockets.length === 1);
  assert.deepEqual(sockets[0].protocols, ["wasmroom.session.v1", "extra.v1"]);
  sockets[0].hello(ID);
  assert.equal(ws.readyState, ws.OPEN);
  const update = new Uint8Array([0, 1, 2]);
  ws.send(update);
  update[0] = 9; // sent means copied, as a WebSocket does
  assert.deepEqual([...sockets[0].sent[0]], [0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2]);
  sockets[0].binary([0, 0, 0, 0, 0, 0, 0, 1, 7, 7]);
  sockets[0].text("2:text");
  assert.deepEqual(seen, ["open", [7, 7], "text"]);
  ws.close();
});

test("a network blip is invisible: no close, nothing lost or doubled either way", async () => {
  const { ws, sockets, seen } = open();
  let listened = 0;
  ws.addEventListener("message", () => listened++);
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  ws.send("a");
  sockets[0].text("1:x");
  sockets[0].drop();
  assert.equal(ws.readyState, ws.OPEN, "still open while the room reconnects");
  ws.send("b"); // buffered meanwhile
  await until(() => sockets.length === 2);
  assert.equal(new URL(sockets[1].url).searchParams.get("last"), "1");
  sockets[1].hello(ID, true);
  assert.deepEqual(sockets[1].sent, ["1:a", "2:b"], "what the host did not acknowledge is resent");
  sockets[1].text("1:x"); // a resend of what arrived already
  sockets[1].text("2:y");
  sockets[1].text("!ack 2");
  assert.equal(ws.bufferedAmount, 0);
  assert.deepEqual(seen, ["open", "x", "y"]);
  assert.equal(listened, 2);
  ws.close();
});

test("a lost session surfaces as a close (1006, 'session lost'), and the new session is left", async () => {
  const { ws, sockets, seen } = open();
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  ws.send("a");
  sockets[0].drop();
  await until(() => sockets.length === 2);
  ws.send("b");
  sockets[1].hello(NEW_ID); // the host cannot resume
  assert.equal(ws.readyState, ws.CLOSING);
  await until(() => ws.readyState === ws.CLOSED);
  assert.deepEqual(seen, ["open", "error", { code: 1006, reason: "session lost", wasClean: false }]);
  assert.deepEqual(sockets[1].sent, [], "nothing goes to the new session: the library resyncs");
  assert.equal(sockets[1].closed.code, 1000);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(sockets.length, 2, "no reconnect after the close");
  ws.send("late"); // ignored once closed, as a WebSocket does
});

test("close() and a refusal end it as a WebSocket would", async () => {
  const { ws, sockets, seen } = open();
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  ws.close(1000, "bye");
  assert.equal(ws.readyState, ws.CLOSING);
  await until(() => ws.readyState === ws.CLOSED);
  assert.deepEqual(sockets[0].closed, { code: 1000, reason: "bye" });
  assert.deepEqual(seen, ["open", { code: 1000, reason: "bye", wasClean: true }]);

  const refused = open();
  await until(() => refused.sockets.length === 1);
  refused.sockets[0].hello(ID);
  refused.sockets[0].drop(1008, "rate limit exceeded");
  await until(() => refused.ws.readyState === refused.ws.CLOSED);
  assert.deepEqual(refused.seen, ["open", { code: 1008, reason: "rate limit exceeded", wasClean: true }]);
});

test("more unacknowledged data than the room holds closes it rather than drop a message", async () => {
  const { ws, sockets, seen } = open({ maxBuffered: 2 });
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  ws.send("1");
  ws.send("2");
  ws.send("3");
  await until(() => ws.readyState === ws.CLOSED);
  assert.deepEqual(seen, ["open", "error", { code: 1006, reason: "send buffer full", wasClean: false }]);
});

test("binaryType blob gives Blobs; the room's options reach it", async () => {
  let tokens = 0;
  const { ws, sockets } = open({ getToken: () => `t${++tokens}` });
  ws.binaryType = "blob";
  const got = [];
  ws.onmessage = (e) => got.push(e.data);
  await until(() => sockets.length === 1);
  assert.deepEqual(sockets[0].protocols, ["wasmroom.session.v1", "wasmroom.token.t1"]);
  sockets[0].hello(ID);
  sockets[0].binary([0, 0, 0, 0, 0, 0, 0, 1, 5]);
  assert.ok(got[0] instanceof Blob);
  assert.deepEqual([...new Uint8Array(await got[0].arrayBuffer())], [5]);
  ws.close();
});
