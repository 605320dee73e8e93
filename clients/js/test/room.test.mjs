import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, SendError } from "../dist/index.js";
import { fakeSockets, until, ID, NEW_ID } from "./fake-socket.mjs";

const fast = { backoff: { initialMs: 1, maxMs: 2 } };

test("getToken is called before every connect, and its token offered", async () => {
  const { FakeSocket, sockets } = fakeSockets();
  let n = 0;
  const room = connect("ws://h/ws/p/d", { ...fast, WebSocket: FakeSocket, getToken: async () => `t${++n}` });
  await until(() => sockets.length === 1);
  assert.deepEqual(sockets[0].protocols, ["wasmroom.session.v1", "wasmroom.token.t1"]);
  sockets[0].hello(ID);
  sockets[0].drop();
  await until(() => sockets.length === 2);
  assert.deepEqual(sockets[1].protocols, ["wasmroom.session.v1", "wasmroom.token.t2"]);
  assert.equal(new URL(sockets[1].url).searchParams.get("session"), ID);
  assert.equal(new URL(sockets[1].url).searchParams.get("last"), "0");
  room.close();
});

test("sends resolve on the host's ack, are resent after a resume, and a reset rejects them", async () => {
  const { FakeSocket, sockets } = fakeSockets();
  const room = connect("ws://h/ws/p/d", { ...fast, WebSocket: FakeSocket });
  const events = [];
  room.on("reset", () => events.push("reset"));
  room.on("message", (m) => events.push(m));
  await until(() => sockets.length === 1);
  const first = room.send("a"); // buffered before the hello
  sockets[0].hello(ID);
  assert.deepEqual(sockets[0].sent, ["1:a"]);
  const second = room.send("b");
  sockets[0].text("!ack 1");
  await first;
  sockets[0].text("1:hi");
  sockets[0].drop();
  await until(() => sockets.length === 2);
  assert.equal(new URL(sockets[1].url).searchParams.get("last"), "1");
  sockets[1].hello(ID, true);
  assert.deepEqual(sockets[1].sent, ["2:b"], "the unacknowledged message is resent with its number");
  sockets[1].text("1:hi"); // a duplicate is not delivered twice
  sockets[1].drop();
  await until(() => sockets.length === 3);
  sockets[2].hello(NEW_ID); // cannot resume
  await assert.rejects(second, (e) => e instanceof SendError && e.reason === "reset");
  assert.deepEqual(events, ["hi", "reset"]);
  const third = room.send("c");
  assert.deepEqual(sockets[2].sent, ["1:c"], "a new session numbers from 1");
  sockets[2].text("!ack 1");
  await third;
  room.close();
});

test("the offline buffer is bounded in messages and bytes", async () => {
  const { FakeSocket, sockets } = fakeSockets();
  const room = connect("ws://h/ws/p/d", { WebSocket: FakeSocket, maxBuffered: 3, maxBufferedBytes: 10 });
  await until(() => sockets.length === 1);
  const ok = [room.send("x"), room.send("y"), room.send("z")];
  await assert.rejects(room.send("w"), (e) => e.reason === "buffer-full");
  sockets[0].hello(ID);
  sockets[0].text("!ack 3");
  await Promise.all(ok);
  await assert.rejects(room.send("more than ten bytes"), (e) => e.reason === "buffer-full");
  const fits = room.send("0123456789"); // exactly the bound
  assert.equal(sockets[0].sent.at(-1), "4:0123456789");
  sockets[0].text("!ack 4");
  await fits;
  room.close();
});

test("a refusal stops the room; 1012 reconnects at once", async () => {
  const { FakeSocket, sockets } = fakeSockets();
  const room = connect("ws://h/ws/p/d", { WebSocket: FakeSocket, backoff: { initialMs: 60_000, maxMs: 60_000 }, random: () => 0.99 });
  const closed = new Promise((r) => room.on("close", r));
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  sockets[0].drop(1012, "restarting");
  // At once, though the backoff would wait a minute.
  await until(() => sockets.length === 2);
  sockets[1].hello(ID, true);
  sockets[1].drop(1008, "rate limit exceeded");
  assert.deepEqual(await closed, { code: 1008, reason: "rate limit exceeded" });
  assert.equal(room.status, "closed");
  await assert.rejects(room.send("late"), (e) => e.reason === "closed");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(sockets.length, 2, "no reconnect after 1008");
});

test("the host's messages are acknowledged after ackEvery, or ackDelayMs after the first", async () => {
  const { FakeSocket, sockets } = fakeSockets();
  const room = connect("ws://h/ws/p/d", { WebSocket: FakeSocket, ackEvery: 3, ackDelayMs: 5 });
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  for (const k of [1, 2, 3]) sockets[0].text(`${k}:m${k}`);
  assert.deepEqual(sockets[0].sent, ["!ack 3"], "at once after three");
  sockets[0].text("4:m4");
  assert.deepEqual(sockets[0].sent, ["!ack 3"]);
  await until(() => sockets[0].sent.length === 2);
  assert.deepEqual(sockets[0].sent, ["!ack 3", "!ack 4"], "after the delay");
  room.close();
});

test("binary messages carry an 8-byte big-endian number both ways", async () => {
  const { FakeSocket, sockets } = fakeSockets();
  const room = connect("ws://h/ws/p/d", { WebSocket: FakeSocket });
  const got = [];
  room.on("message", (m) => got.push(m));
  await until(() => sockets.length === 1);
  sockets[0].hello(ID);
  room.send(new Uint8Array([7, 8])).catch(() => {}); // rejected by the close below
  assert.deepEqual([...sockets[0].sent[0]], [0, 0, 0, 0, 0, 0, 0, 1, 7, 8]);
  sockets[0].onmessage({ data: new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 9]).buffer });
  assert.deepEqual([...got[0]], [9]);
  room.close();
});
