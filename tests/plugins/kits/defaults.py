"""A consumer on the Python kit that overrides one hook: every other hook is the kit's
default (tests/languages.rs checks them). It counts the messages of its document in
`self`, and answers each with the count and what it got."""

from wasmroom import Consumer, send, serve


@serve
class Counter(Consumer):
    count = 0

    def on_message(self, sender, message):
        self.count += 1
        got = f"text {message}" if isinstance(message, str) else f"binary {len(message)}"
        send(sender, f"{self.count}: {got}")
