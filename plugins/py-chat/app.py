"""`py-chat`: the `chat` consumer (plugins/chat/src/lib.rs) in Python on the kit
(kits/python). Same protocol, same HTTP answers, same snapshot format: a document can
move between the two on a hot reload.

Protocol (JSON text frames from the server; plain text frames from clients):
- on connect (`/ws/py-chat/{doc}?name=ann`): `{"type":"history","messages":[...]}` to the
  new client, `{"type":"join","name":"ann"}` to the others;
- a text frame from a client is a chat line: stored (the last 100 are kept) and sent to
  the others as `{"type":"message","name":"ann","text":"...","at":1700000000000}`;
- on disconnect: `{"type":"leave","name":"ann"}`.
With access tokens on (`[plugin.py-chat.auth]`), the name is the token's `name` claim
(else `sub`) and `?name=` is ignored.
HTTP: `GET /docs/py-chat/{doc}` returns `{"document":"...","messages":[...]}`;
`POST /docs/py-chat/{doc}` with a text body adds a line from `server`.

Build: `cargo xtask plugins`.
"""

import json
from collections import deque

from wasmroom import Consumer, Response, broadcast, now_ms, reject, send, serve

HISTORY = 100  # lines kept per document
U64 = 1 << 64


def dumps(value) -> str:
    """JSON exactly as serde_json writes it: compact, non-ASCII unescaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def line(name: str, text: str, at: int) -> dict:
    return {"name": name, "text": text, "at": at}


def token_name(connection):
    """The `name` (else `sub`) claim of the connection's access token, cut to 64 bytes."""
    claims = connection.claims()
    if not isinstance(claims, dict):
        return None
    name = claims.get("name") if isinstance(claims.get("name"), str) else claims.get("sub")
    if not isinstance(name, str) or not name:
        return None
    return name.encode()[:64].decode(errors="ignore") or None


@serve
class Chat(Consumer):
    def open(self, document):
        self.history = deque()  # of line() dicts, in that key order
        self.names = {}  # connection id -> name, for the connections that joined

    def add(self, entry: dict, exclude) -> None:
        broadcast(dumps({"type": "message", **entry}), exclude)
        if len(self.history) == HISTORY:
            self.history.popleft()
        self.history.append(entry)

    def on_connect(self, connection):
        # With access tokens on, the name is the verified one; `?name=` is not trusted.
        name = token_name(connection)
        if name is None:
            name = connection.query_param("name")
        if name is None:
            name = f"guest-{connection.id}"
        elif not 1 <= len(name.encode()) <= 64:
            return reject(400, "name must be 1 to 64 bytes")
        send(connection.id, dumps({"type": "history", "messages": list(self.history)}))
        broadcast(dumps({"type": "join", "name": name}), [connection.id])
        self.names[connection.id] = name

    def on_message(self, sender, message):
        if not isinstance(message, str):
            send(sender, dumps({"type": "error", "reason": "chat takes text messages only"}))
            return
        self.add(line(self.names.get(sender, ""), message, now_ms()), [sender])

    def on_disconnect(self, connection, code):
        name = self.names.pop(connection, None)
        if name is not None:
            broadcast(dumps({"type": "leave", "name": name}))

    def on_request(self, request):
        if request.method == "GET":
            return Response.json(200, {"document": self.document, "messages": list(self.history)})
        if request.method == "POST":
            text = request.text()
            if not text:
                return Response.text(400, "send a non-empty UTF-8 body")
            self.add(line("server", text, now_ms()), [])
            return Response.json(201, {"messages": len(self.history)})
        return Response.text(405, "use GET or POST")

    def snapshot(self):
        # The Rust chat's serde layout; names in ascending id order (a BTreeMap).
        names = {str(k): self.names[k] for k in sorted(self.names)}
        return dumps({"document": self.document, "history": list(self.history), "names": names})

    def restore(self, state):
        value = json.loads(state.decode("utf-8"), parse_constant=no_constant)
        if not isinstance(value, dict):
            raise ValueError("not a chat snapshot: expected an object")
        document, history, names = value.get("document"), value.get("history"), value.get("names")
        if not isinstance(document, str):
            raise ValueError("not a chat snapshot: missing or invalid field `document`")
        if not isinstance(history, list):
            raise ValueError("not a chat snapshot: missing or invalid field `history`")
        lines = deque()
        for entry in history:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("text"), str)
                and type(entry.get("at")) is int
                and 0 <= entry["at"] < U64
            ):
                raise ValueError("not a chat snapshot: invalid history line")
            lines.append(line(entry["name"], entry["text"], entry["at"]))
        if not isinstance(names, dict):
            raise ValueError("not a chat snapshot: missing or invalid field `names`")
        joined = {}
        for key, name in names.items():
            if not (key.isascii() and key.isdigit() and int(key) < U64 and isinstance(name, str)):
                raise ValueError("not a chat snapshot: invalid entry in `names`")
            joined[int(key)] = name
        self.document, self.history, self.names = document, lines, joined


def no_constant(name: str):
    raise ValueError(f"{name} is not JSON")
