"""wasmroom's Python kit: write a consumer as one class, without generated names.

    from wasmroom import Consumer, broadcast, serve

    @serve
    class Relay(Consumer):
        def on_message(self, sender, message):
            broadcast(message, exclude=[sender])

The host runs one instance of the component per document, and `serve` keeps ONE object
of your class per document: `self` is the document's state, kept from call to call
(componentize-py does not call every hook on the same object: what `open` set on `self`
would be missing in `on_request`). Every hook has a default (accept connections, ignore
messages, 404 for requests, an empty snapshot, and `restore` refusing a non-empty
state), so you override only what you need.

Host functions take `str` (sent as a text message) or bytes (binary) and never raise for
a refusal: they return `None` when done, or a `HostError` saying why the host refused
(the document is unharmed; most consumers ignore it). Messages arrive as `str` (text) or
`bytes` (binary).

Build (componentize-py 0.25.1, pinned in requirements.txt; the WIT is wit/consumer.wit):
    componentize-py -d wit -w room componentize app -p . -o app.wasm
with this file on the path (`-p DIR` once per folder). See README.md.
"""

import json
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import context as _context
from wit_world.imports import host as _host
from wit_world.imports import types as _t

__all__ = [
    "Consumer", "Connect", "Request", "Response", "HostError", "serve", "accept", "reject",
    "send", "broadcast", "close", "set_timer", "cancel_timer", "connections", "log",
    "now_ms", "claims", "setting",
]


class HostError:
    """Why the host refused a request: `kind` is one of "unknown-connection", "closing",
    "too-large", "too-many-timers", "invalid-close-code"; `limit` is the limit broken
    (bytes for "too-large", timers for "too-many-timers"), else None."""

    def __init__(self, kind, limit=None):
        self.kind = kind
        self.limit = limit

    def __str__(self):
        return self.kind if self.limit is None else f"{self.kind} (limit {self.limit})"

    def __repr__(self):
        return f"HostError({self.kind!r}, {self.limit!r})"


_HOST_ERRORS = {
    _t.HostError_UnknownConnection: "unknown-connection",
    _t.HostError_Closing: "closing",
    _t.HostError_TooLarge: "too-large",
    _t.HostError_TooManyTimers: "too-many-timers",
    _t.HostError_InvalidCloseCode: "invalid-close-code",
}


def _refusal(call, *args):
    try:
        call(*args)
    except Err as e:
        return HostError(_HOST_ERRORS[type(e.value)], getattr(e.value, "value", None))
    return None


def _message(message):
    if isinstance(message, str):
        return _t.Message_Text(message)
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _t.Message_Binary(bytes(message))
    raise TypeError(f"a message is str (text) or bytes (binary), not {type(message).__name__}")


def send(connection, message):
    """Sends `message` (str: text, bytes: binary) to one connection of this document."""
    return _refusal(_host.send, connection, _message(message))


def broadcast(message, exclude=()):
    """Sends `message` to every connection of this document but those in `exclude`;
    the host encodes it once for all of them."""
    return _refusal(_host.broadcast, _message(message), list(exclude))


def close(connection, code=1000, reason=""):
    """Closes a connection with a close code (1000, 1001, 1008, 1011, 3000-4999) and a
    short reason; what was sent to it before goes first."""
    return _refusal(_host.close, connection, code, reason)


def set_timer(id, delay_ms):
    """Calls `on_timer(id)` after `delay_ms` milliseconds; a pending id is rescheduled."""
    return _refusal(_host.set_timer, id, delay_ms)


def cancel_timer(id):
    """Cancels a pending timer; returns whether it was pending."""
    return _host.cancel_timer(id)


def connections():
    """The open connections of this document, oldest first."""
    return _host.connections()


_LEVELS = {level.name.lower(): level for level in _t.LogLevel}


def log(level, text):
    """Writes a line to the server's log, tagged with the plugin and document; `level` is
    "trace", "debug", "info", "warn" or "error"."""
    if level not in _LEVELS:
        raise ValueError(f"log level {level!r} is none of {', '.join(_LEVELS)}")
    _host.log(_LEVELS[level], str(text))


def now_ms():
    """The document's clock in ms since the Unix epoch, as of the start of this call: it
    does not move during a call (nor does `time.time()`). To wait, set a timer."""
    return _host.now_ms()


def claims(connection):
    """The verified access token's claims of `connection` (a dict), or None when the
    plugin takes no tokens or `connection` is not one of this document's."""
    return _parse_claims(_context.claims(connection))


def setting(name):
    """`[plugin.NAME.settings]` `name` from the server's config (a str), or None. Read it
    when needed: a config reload changes it under live documents."""
    return _context.setting(name)


def _parse_claims(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _header(headers, name):
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _query_param(query, name):
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


class Connect:
    """A connection asking to join: `id`, `path`, `query` (without `?`), `headers` (a list
    of (name, value), names lower-case), `subprotocols`, `remote_address`."""

    def __init__(self, info):
        self.id = info.id
        self.path = info.path
        self.query = info.query
        self.headers = info.headers
        self.subprotocols = info.subprotocols
        self.remote_address = info.remote_address

    def header(self, name):
        """The first header called `name` (any case), or None."""
        return _header(self.headers, name)

    def query_param(self, name):
        """The raw (still percent-encoded) value of query parameter `name`, or None."""
        return _query_param(self.query, name)

    def claims(self):
        """This connection's token claims (a dict), or None; see `claims`."""
        return claims(self.id)


class Request:
    """An HTTP request to `/docs/{plugin}/{document}...`: `method` (upper-case), `path`,
    `query`, `headers`, `body` (bytes)."""

    def __init__(self, request):
        self.method = request.method
        self.path = request.path
        self.query = request.query
        self.headers = request.headers
        self.body = request.body

    def header(self, name):
        return _header(self.headers, name)

    def query_param(self, name):
        return _query_param(self.query, name)

    def text(self):
        """The body as a str, or None if it is not UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def claims(self):
        """The request's token claims (a dict, from the host's `x-wasmroom-claims` header,
        which no client can forge), or None."""
        return _parse_claims(self.header("x-wasmroom-claims"))


def _dumps(value):
    # As serde_json writes it: compact, non-ASCII as is.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Response:
    """The answer to a request. `body` is str (sent as UTF-8) or bytes; `headers` a dict
    or a list of (name, value); the host sets `content-length`."""

    def __init__(self, status, body=b"", headers=()):
        self.status = status
        self.body = body
        self.headers = headers

    @staticmethod
    def text(status, body):
        """A `text/plain` answer."""
        return Response(status, body, [("content-type", "text/plain; charset=utf-8")])

    @staticmethod
    def json(status, value):
        """An `application/json` answer: `value` serialized (compact, as serde_json)."""
        return Response(status, _dumps(value), [("content-type", "application/json")])


def accept(subprotocol=None):
    """`on_connect`'s answer: accept, choosing one of the offered subprotocols or none.
    (Returning None accepts too.)"""
    return _t.Decision_Accept(subprotocol)


def reject(status, reason):
    """`on_connect`'s answer: refuse with an HTTP status (400-599) and a short reason."""
    return _t.Decision_Reject(_t.Rejection(status, reason))


class Consumer:
    """The state of one document. Subclass it, override the hooks you need, and register
    the class with `@serve`. `self.document` is the document's id."""

    document = ""

    def open(self, document):
        """The document opens in a fresh instance (then `restore`, if it has a saved
        state). Raising refuses the document."""

    def on_connect(self, connection):
        """`connection` (a `Connect`) asks to join. Return None or `accept()` to accept,
        `reject(status, reason)` to refuse. What you `send` it now arrives right after
        the upgrade. Default: accept."""
        return None

    def on_message(self, sender, message):
        """`message` (str: text, bytes: binary) arrived from connection `sender`.
        Default: ignored."""

    def on_disconnect(self, connection, code):
        """`connection` left with close `code` (the server's when it closed it, else the
        client's; 1006: dropped). Default: nothing."""

    def on_timer(self, id):
        """Timer `id` is due. Default: nothing."""

    def on_request(self, request):
        """An HTTP request (a `Request`) to the document; return a `Response`.
        Default: 404."""
        return Response.text(404, "this consumer has no HTTP interface")

    def snapshot(self):
        """The whole state as bytes (or str), for saving and hot reloads. Default: empty."""
        return b""

    def restore(self, state):
        """Replaces the state with bytes from `snapshot`, perhaps an older version's;
        raising refuses them. Default: accepts an empty state only, so that state is
        never dropped silently."""
        if state:
            raise ValueError("this consumer does not implement restore")


def _as_bytes(value, what):
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def _response(response):
    if not isinstance(response, Response):
        raise TypeError(f"on_request must return a Response, not {type(response).__name__}")
    headers = response.headers
    headers = list(headers.items() if isinstance(headers, dict) else headers)
    return _t.HttpResponse(response.status, headers, _as_bytes(response.body, "a body"))


def _decision(decision):
    if decision is None or decision is True:
        return _t.Decision_Accept(None)
    if isinstance(decision, (_t.Decision_Accept, _t.Decision_Reject)):
        return decision
    raise TypeError("on_connect returns None, accept() or reject(status, reason)")


def _refused(error):
    return Err(str(error) or type(error).__name__)


def serve(cls):
    """Registers `cls` (a `Consumer` subclass) as the component's consumer; use it once,
    as a class decorator. It becomes componentize-py's export: the `Consumer` of the
    module that defines `cls` (the module you build)."""
    if not (isinstance(cls, type) and issubclass(cls, Consumer)):
        raise TypeError("@serve takes a subclass of wasmroom.Consumer")
    documents = []  # the one object of `cls`, once the document opened

    def current():
        return documents[0]

    class Export(exports.Consumer):
        def open(self, document):
            try:
                consumer = cls()
                consumer.document = document
                consumer.open(document)
            except Exception as e:
                raise _refused(e)
            documents[:] = [consumer]

        def on_connect(self, info):
            return _decision(current().on_connect(Connect(info)))

        def on_message(self, connection, msg):
            current().on_message(connection, msg.value)

        def on_disconnect(self, connection, code):
            current().on_disconnect(connection, code)

        def on_timer(self, id):
            current().on_timer(id)

        def on_request(self, request):
            return _response(current().on_request(Request(request)))

        def snapshot(self):
            return _as_bytes(current().snapshot(), "snapshot()'s result")

        def restore(self, state):
            try:
                current().restore(state)
            except Exception as e:
                raise _refused(e)

    setattr(sys.modules[cls.__module__], "Consumer", Export)
    return cls
