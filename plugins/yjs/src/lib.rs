//! `yjs`: a [y-websocket](https://github.com/yjs/y-websocket) server. Each document is a
//! Yjs document ([yrs](https://docs.rs/yrs)) in the instance's memory.
//!
//! Connect an unmodified y-websocket client with the server URL `ws://HOST:PORT/ws/yjs`
//! and any room name: the provider appends `/{room}`, which is the wasmroom document.
//!
//! ```js
//! new WebsocketProvider('ws://127.0.0.1:8000/ws/yjs', 'my-doc', ydoc)
//! ```
//!
//! - Protocol: sync (step 1, step 2, updates) and awareness, one message per binary frame,
//!   as the reference `@y/websocket-server` speaks it (see `room.rs`). A frame that is not
//!   y-websocket closes its connection with 4400, which the client takes as final.
//! - State: the saved snapshot (and the hot-reload hand-over) is the whole document as one
//!   Yjs update (v1), so a `.snap` file's state is readable by any Yjs implementation.
//!   Awareness is ephemeral: after a restart or a hot reload clients announce themselves
//!   again within their 15 s renewal.
//! - HTTP: `GET /docs/yjs/{doc}` returns the document as one Yjs update (v1,
//!   `application/octet-stream`): `Y.applyUpdate(doc, body)`.
//! - Viewers: with access tokens on (`[plugin.yjs.auth]`), a connection whose token has
//!   `"role": "viewer"` gets the document and every change, but its updates are not
//!   applied: each is answered with y-protocols' auth message "permission denied" and a
//!   reason (the client's `permissionDeniedHandler` sees it). Its awareness (cursor,
//!   presence) is relayed as anyone's.
//! - No randomness: the server's client id and the document guid are fixed; awareness
//!   timestamps come from the host clock.

mod room;

use std::collections::HashMap;

use room::{Out, Room};
use wasmroom_sdk::{
    Connect, ConnectionId, Consumer, Decision, HostError, LogLevel, Message, Request, Response,
};

/// Close code when a message for a client is over the host's message size limit: in the
/// 4400-4499 range, so the client does not reconnect only to fail again.
const CLOSE_TOO_LARGE: u16 = 4413;

struct Yjs {
    room: Room,
    /// Whether each connection that sent something is a viewer, from its token's claims
    /// (asked once per connection; the host keeps the claims across hot reloads, this
    /// cache is rebuilt after one).
    viewers: HashMap<ConnectionId, bool>,
}

/// Whether `conn`'s access token makes it a viewer (`"role": "viewer"`).
fn is_viewer(conn: ConnectionId) -> bool {
    wasmroom_sdk::claims(conn)
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
        .is_some_and(|c| c["role"] == "viewer")
}

impl Yjs {
    /// Carries out what the room asked for, in order.
    fn run(&self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send(conn, frame) => {
                    if let Err(e) = wasmroom_sdk::send(conn, frame) {
                        refused(Some(conn), &e);
                    }
                }
                Out::Broadcast(frame) => {
                    if let Err(e) = wasmroom_sdk::broadcast(frame, &[]) {
                        refused(None, &e);
                    }
                }
                Out::Close(conn, code, reason) => {
                    let _ = wasmroom_sdk::close(conn, code, &reason);
                }
                Out::Warn(text) => wasmroom_sdk::log(LogLevel::Warn, &text),
            }
        }
    }
}

/// The host refused a message. Only a size over the limit matters: the client would
/// never sync, so it is told so (a connection that is gone or closing needs nothing).
fn refused(to: Option<ConnectionId>, error: &HostError) {
    let HostError::TooLarge(limit) = error else {
        return;
    };
    let what = format!("a y-websocket message is over the message size limit ({limit} bytes)");
    wasmroom_sdk::log(LogLevel::Error, &what);
    if let Some(conn) = to {
        let _ = wasmroom_sdk::close(conn, CLOSE_TOO_LARGE, "document too large for this server");
    }
}

impl Consumer for Yjs {
    fn open(document: &str) -> Self {
        Yjs {
            room: Room::new(document, wasmroom_sdk::now_ms),
            viewers: HashMap::new(),
        }
    }

    fn on_connect(&mut self, conn: &Connect) -> Decision {
        self.run(self.room.connect(conn.id));
        Decision::accept()
    }

    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        let out = match msg {
            Message::Binary(frame) => {
                let viewer = *self.viewers.entry(from).or_insert_with(|| is_viewer(from));
                self.room.message_from(from, &frame, viewer)
            }
            Message::Text(_) => vec![Out::Close(
                from,
                room::CLOSE_MALFORMED,
                "y-websocket messages are binary frames".into(),
            )],
        };
        self.run(out);
    }

    fn on_disconnect(&mut self, conn: ConnectionId, _code: u16) {
        self.viewers.remove(&conn);
        let out = self.room.disconnect(conn);
        self.run(out);
    }

    fn on_request(&mut self, request: Request) -> Response {
        match request.method.as_str() {
            "GET" => Response {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
                body: self.room.state(),
            },
            _ => Response::text(405, "use GET: the document as one Yjs update (v1)"),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.room.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.room.restore(state)
    }
}

wasmroom_sdk::export!(Yjs);
