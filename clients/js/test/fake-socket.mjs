// A scripted WebSocket for the unit tests: the test plays the host.

import assert from "node:assert/strict";

/** A scripted WebSocket: the test plays the host. */
export function fakeSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.readyState = 0;
      this.binaryType = "blob";
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(data);
    }
    close(code = 1000, reason = "") {
      this.closed = { code, reason };
    }
    // The host's side.
    hello(id, resumed = false) {
      this.onmessage({ data: `!hello ${id} ${resumed ? "resumed" : "new"}` });
    }
    text(t) {
      this.onmessage({ data: t });
    }
    binary(bytes) {
      this.onmessage({ data: new Uint8Array(bytes).buffer });
    }
    drop(code = 1006, reason = "") {
      this.onclose({ code, reason });
    }
  }
  return { FakeSocket, sockets };
}

export const ID = "0123456789abcdef0123456789abcdef";
export const NEW_ID = "fedcba9876543210fedcba9876543210";

/** Waits until `cond()` holds (the client's reconnect timers and token promises). */
export async function until(cond) {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(cond(), "condition never held");
}
