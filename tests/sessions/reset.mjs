// One room of the official client (clients/js, built into dist) whose session the host
// cannot resume: tests/session_moves.rs kills the host (checkpoint mode) once this prints
// `acked`, restarts it and points the proxy at it; the room must then emit `reset` and
// open a new session. Usage: node reset.mjs URL
//
// stdout, one line each: `acked` once its first message was acknowledged, then `reset`
// and `open resumed=false` when the room noticed, then `sent` once a message of the new
// session was acknowledged.
// Node 20 has no global WebSocket: the `ws` package is passed in.

import WebSocket from "ws";
import { connect } from "../../clients/js/dist/index.js";

const [url] = process.argv.slice(2);
const room = connect(url, { WebSocket, backoff: { initialMs: 10, maxMs: 200 } });
let first = true;
room.on("open", ({ resumed }) => {
  if (!first) console.log(`open resumed=${resumed}`);
  first = false;
});
const reset = new Promise((resolve) => room.on("reset", resolve));
await room.send("echo before");
console.log("acked");
await reset;
console.log("reset");
// The new session works: a message sent now is applied and acknowledged.
await room.send("echo after");
console.log("sent");
room.close();
