// An example client for this consumer: `node client.mjs ws://127.0.0.1:8000/ws/{{name}}/doc1`
// (Node.js 22 or later: WebSocket is built in; on Node 20, `node --experimental-websocket`).
// It prints what the server sends, sends one message ("+1"), and leaves once it has seen
// the count go up. A plain WebSocket, to show the protocol; from a page or an app that
// must ride out reconnects, use wasmroom's official client (clients/js in the wasmroom
// repository: `connect(url)`, sessions that resume after a network blip).
if (typeof WebSocket === "undefined") {
  console.error("no WebSocket in this Node.js: use Node 22+, or node --experimental-websocket");
  process.exit(2);
}
const url = process.argv[2] ?? "ws://127.0.0.1:8000/ws/{{name}}/doc1";
const ws = new WebSocket(url);
let first;
ws.onmessage = (event) => {
  console.log(event.data);
  const { count } = JSON.parse(event.data);
  if (first === undefined) {
    first = count;
    ws.send("+1");
  } else if (count > first) {
    ws.close();
  }
};
ws.onerror = () => {
  console.error(`cannot connect to ${url}: is wasmroom serving {{name}}.wasm?`);
  process.exitCode = 1;
};
