// `{{name}}`: a counter per document, kept across restarts and hot reloads.
//
// Protocol: a client that joins gets `{"count":N}`; each text message adds one and every
// client gets the new `{"count":N}`. `GET /docs/{{name}}/{document}` answers `{"count":N}`.
// The state is saved as the count in decimal ("7").
//
// `wasmroom.js` is wasmroom's JavaScript kit (copied here by `wasmroom new`): one class,
// every hook with a default, host functions taking strings or bytes.

import { Consumer, Response, broadcast, decodeText, send, serve } from "./wasmroom.js";

class Counter extends Consumer {
  count = 0;

  json() {
    return JSON.stringify({ count: this.count });
  }

  onConnect(connection) {
    // Sent right after the upgrade. A refusal (the client already left) harms nothing.
    send(connection.id, this.json());
  }

  onMessage(sender, message) {
    if (typeof message === "string") {
      this.count += 1;
      broadcast(this.json());
    }
  }

  onRequest(request) {
    if (request.method !== "GET") return Response.text(405, "use GET");
    return Response.json(200, { count: this.count });
  }

  snapshot() {
    return String(this.count);
  }

  restore(state) {
    const text = decodeText(state);
    if (text === null || !/^[0-9]*$/.test(text)) throw new Error("the saved state is not a count");
    this.count = text === "" ? 0 : Number(text);
  }
}

export const consumer = serve(Counter);
