"""`{{name}}`: a counter per document, kept across restarts and hot reloads.

Protocol: a client that joins gets `{"count":N}`; each text message adds one and every
client gets the new `{"count":N}`. `GET /docs/{{name}}/{document}` answers `{"count":N}`.
The state is saved as the count in decimal ("7").

`wasmroom.py` is wasmroom's Python kit (copied here by `wasmroom new`): one class, every
hook with a default, host functions taking str or bytes. `self` is the document's state.
"""

from wasmroom import Consumer, Response, broadcast, send, serve


@serve
class Counter(Consumer):
    def open(self, document):
        self.count = 0

    def json(self):
        return f'{{"count":{self.count}}}'

    def on_connect(self, connection):
        # Sent right after the upgrade. A refusal (the client already left) harms nothing.
        send(connection.id, self.json())

    def on_message(self, sender, message):
        if isinstance(message, str):
            self.count += 1
            broadcast(self.json())

    def on_request(self, request):
        if request.method != "GET":
            return Response.text(405, "use GET")
        return Response.json(200, {"count": self.count})

    def snapshot(self):
        return str(self.count)

    def restore(self, state):
        text = state.decode("ascii", errors="replace")
        if not text.isdigit() and text != "":
            raise ValueError("the saved state is not a count")
        self.count = int(text or "0")
