// Two rooms of the official client (clients/js, built into dist) exchange numbered
// messages through the probe's `relay` command while tests/sessions.rs cuts their TCP
// connections. Usage: node exchange.mjs URL COUNT [OTHERS]
//
// stdout, one line each: `progress N` after every numbered message received (the test
// cuts on these), `other ROOM TEXT` for any other message (what the consumer itself
// broadcast, e.g. the probe's `restored with N connection(s)` after a hot reload), then
// `result JSON`: what each room received, the other messages, and how many sends were
// acknowledged. The result waits for OTHERS other messages in each room (default 0).
// Node 20 has no global WebSocket: the `ws` package is passed in.

import WebSocket from "ws";
import { connect } from "../../clients/js/dist/index.js";

const [url, countArg, othersArg] = process.argv.slice(2);
const count = Number(countArg);
const expectedOthers = Number(othersArg ?? 0);
const options = { WebSocket, backoff: { initialMs: 10, maxMs: 200 } };

const names = ["a", "b"];
const rooms = names.map(() => connect(url, options));
const received = names.map(() => []);
const others = names.map(() => []);
let total = 0;
let resets = 0;
let opens = 0;
const done = new Promise((resolve) => {
  const check = () => {
    if (total === 2 * count && others.every((o) => o.length >= expectedOthers)) resolve();
  };
  rooms.forEach((room, i) => {
    room.on("reset", () => resets++);
    room.on("open", () => opens++);
    room.on("message", (text) => {
      if (/^[ab]:\d+$/.test(text)) {
        received[i].push(text);
        total++;
        console.log(`progress ${total}`);
      } else {
        others[i].push(text);
        console.log(`other ${i} ${text}`);
      }
      check();
    });
  });
});

// Each room sends its numbered messages one at a time, each once acknowledged: every one
// that resolved was applied by the host.
const acked = await Promise.all(
  rooms.map(async (room, i) => {
    let n = 0;
    for (let k = 1; k <= count; k++) {
      await room.send(`relay ${names[i]}:${k}`);
      n++;
    }
    return n;
  }),
);
await done;
console.log(`result ${JSON.stringify({ received, others, acked, resets, opens })}`);
rooms.forEach((room) => room.close());
