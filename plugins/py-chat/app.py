"""`py-chat`: the `chat` consumer (plugins/chat/src/lib.rs) in Python, run by CPython
inside the component (componentize-py). Same protocol, same HTTP answers, same snapshot
format: a document can move between the two on a hot reload.

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

Build: `cargo xtask plugins`; by hand, see docs/writing-consumers.md.
"""

import json
from collections import deque

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import context, host
from wit_world.imports.types import (
    Decision_Accept,
    Decision_Reject,
    HttpResponse,
    Message_Text,
    Rejection,
)

# Lines kept per document.
HISTORY = 100
U64 = 1 << 64

def token_name(connection: int):
    """The `name` (else `sub`) claim of the connection's access token, cut to 64 bytes."""
    claims = context.claims(connection)
    if claims is None:
        return None
    try:
        parsed = json.loads(claims)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    name = parsed.get("name") if isinstance(parsed.get("name"), str) else parsed.get("sub")
    if not isinstance(name, str) or not name:
        return None
    return name.encode()[:64].decode(errors="ignore") or None


# One instance per document: module globals are the document's state.
document = ""
history: deque = deque()  # of {"name", "text", "at"} dicts, in that key order
names: dict[int, str] = {}  # connection id -> name, for the connections that joined


def dumps(value) -> str:
    """JSON exactly as serde_json writes it: compact, non-ASCII unescaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def line(name: str, text: str, at: int) -> dict:
    return {"name": name, "text": text, "at": at}


def query_param(query: str, name: str):
    """The raw (still percent-encoded) value of query parameter `name`, or None."""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


# Host calls report refusals (a connection that left meanwhile, say) by raising; the chat
# ignores them, as the Rust chat does.
def send(to: int, text: str) -> None:
    try:
        host.send(to, Message_Text(text))
    except Err:
        pass


def broadcast(text: str, except_: list) -> None:
    try:
        host.broadcast(Message_Text(text), except_)
    except Err:
        pass


def add(entry: dict, except_: list) -> None:
    broadcast(dumps({"type": "message", **entry}), except_)
    if len(history) == HISTORY:
        history.popleft()
    history.append(entry)


def text_response(status: int, body: str) -> HttpResponse:
    return HttpResponse(status, [("content-type", "text/plain; charset=utf-8")], body.encode())


def json_response(status: int, body: str) -> HttpResponse:
    return HttpResponse(status, [("content-type", "application/json")], body.encode())


def is_u64(value) -> bool:
    return type(value) is int and 0 <= value < U64


def parse_snapshot(state: bytes):
    value = json.loads(state.decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    if not isinstance(value.get("document"), str):
        raise ValueError("missing or invalid field `document`")
    if not isinstance(value.get("history"), list):
        raise ValueError("missing or invalid field `history`")
    lines = deque()
    for entry in value["history"]:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("text"), str)
            and is_u64(entry.get("at"))
        ):
            raise ValueError("invalid history line")
        lines.append(line(entry["name"], entry["text"], entry["at"]))
    if not isinstance(value.get("names"), dict):
        raise ValueError("missing or invalid field `names`")
    joined = {}
    for key, name in value["names"].items():
        if not (key.isascii() and key.isdigit() and int(key) < U64 and isinstance(name, str)):
            raise ValueError("invalid entry in `names`")
        joined[int(key)] = name
    return value["document"], lines, joined


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class Consumer(exports.Consumer):
    def open(self, document_id: str) -> None:
        global document
        document = document_id

    def on_connect(self, info):
        # With access tokens on, the name is the verified one; `?name=` is not trusted.
        name = token_name(info.id)
        if name is None:
            name = query_param(info.query, "name")
        if name is None:
            name = f"guest-{info.id}"
        elif not 1 <= len(name.encode()) <= 64:
            return Decision_Reject(Rejection(400, "name must be 1 to 64 bytes"))
        send(info.id, dumps({"type": "history", "messages": list(history)}))
        broadcast(dumps({"type": "join", "name": name}), [info.id])
        names[info.id] = name
        return Decision_Accept(None)

    def on_message(self, connection: int, msg) -> None:
        if not isinstance(msg, Message_Text):
            send(connection, dumps({"type": "error", "reason": "chat takes text messages only"}))
            return
        add(line(names.get(connection, ""), msg.value, host.now_ms()), [connection])

    def on_disconnect(self, connection: int, code: int) -> None:
        name = names.pop(connection, None)
        if name is not None:
            broadcast(dumps({"type": "leave", "name": name}), [])

    def on_timer(self, id: int) -> None:
        pass

    def on_request(self, request) -> HttpResponse:
        if request.method == "GET":
            return json_response(200, dumps({"document": document, "messages": list(history)}))
        if request.method == "POST":
            try:
                text = request.body.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if not text:
                return text_response(400, "send a non-empty UTF-8 body")
            add(line("server", text, host.now_ms()), [])
            return json_response(201, dumps({"messages": len(history)}))
        return text_response(405, "use GET or POST")

    def snapshot(self) -> bytes:
        # The Rust chat's serde layout; names in ascending id order (a BTreeMap).
        state = {
            "document": document,
            "history": list(history),
            "names": {str(k): names[k] for k in sorted(names)},
        }
        return dumps(state).encode()

    def restore(self, state: bytes) -> None:
        global document, history, names
        try:
            document, history, names = parse_snapshot(state)
        except (ValueError, UnicodeDecodeError) as e:
            raise Err(f"not a chat snapshot: {e}")
