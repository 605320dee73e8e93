// A consumer on the JavaScript kit that overrides one hook: every other hook is the kit's
// default (tests/languages.rs checks them). It counts the messages of its document in
// `this`, and answers each with the count and what it got.

import { Consumer, send, serve } from "../../../kits/js/wasmroom.js";

class Counter extends Consumer {
  count = 0;

  onMessage(sender, message) {
    this.count += 1;
    const got = typeof message === "string" ? `text ${message}` : `binary ${message.length}`;
    send(sender, `${this.count}: ${got}`);
  }
}

export const consumer = serve(Counter);
