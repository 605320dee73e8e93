//! `chat`: a chat room per document, with its history in the instance's memory.
//!
//! Protocol (JSON text frames from the server; plain text frames from clients):
//! - on connect (`/ws/chat/{doc}?name=ann`): `{"type":"history","messages":[...]}` to the
//!   new client, `{"type":"join","name":"ann"}` to the others;
//! - a text frame from a client is a chat line: stored (the last 100 are kept, or the
//!   number the `history` setting names, up to 100,000) and sent to
//!   the others as `{"type":"message","name":"ann","text":"...","at":1700000000000}`;
//! - on disconnect: `{"type":"leave","name":"ann"}`.
//!
//! With access tokens on (`[plugin.chat.auth]`), the name is the token's `name` claim (else
//! `sub`) and `?name=` is ignored: the backend vouches for it.
//!
//! HTTP: `GET /docs/chat/{doc}` returns `{"document":"...","messages":[...]}`;
//! `POST /docs/chat/{doc}` with a text body adds a line from `server`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wasmroom_sdk::{
    Connect, ConnectionId, Consumer, Decision, Message, Request, Response, broadcast, now_ms, send,
    setting,
};

/// Lines kept per document, unless `[plugin.chat.settings] history` says otherwise.
const HISTORY: usize = 100;

/// The most lines the `history` setting may keep (a line is at least ~40 bytes of state).
const MAX_HISTORY: usize = 100_000;

#[derive(Serialize, Deserialize, Clone)]
struct Line {
    name: String,
    text: String,
    at: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct Chat {
    document: String,
    history: VecDeque<Line>,
    names: BTreeMap<ConnectionId, String>,
    /// Lines kept, read from the settings once per instance.
    #[serde(skip)]
    limit: Option<usize>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Event<'a> {
    History { messages: &'a VecDeque<Line> },
    Join { name: &'a str },
    Leave { name: &'a str },
    Message(&'a Line),
    Error { reason: &'a str },
}

fn json(event: &Event<'_>) -> String {
    serde_json::to_string(event).expect("chat events serialize")
}

impl Chat {
    fn add(&mut self, line: Line, except: &[ConnectionId]) {
        let _ = broadcast(json(&Event::Message(&line)), except);
        let limit = *self.limit.get_or_insert_with(|| {
            setting("history")
                .and_then(|n| n.parse().ok())
                .map_or(HISTORY, |n: usize| n.clamp(1, MAX_HISTORY))
        });
        while self.history.len() >= limit {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }
}

/// The `name` (else `sub`) claim of the connection's access token, cut to 64 bytes.
fn token_name(conn: &Connect) -> Option<String> {
    let claims: serde_json::Value = serde_json::from_str(&conn.claims()?).ok()?;
    let name = claims["name"].as_str().or(claims["sub"].as_str())?;
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    (end > 0).then(|| name[..end].to_owned())
}

impl Consumer for Chat {
    fn open(document: &str) -> Self {
        Chat {
            document: document.to_owned(),
            ..Chat::default()
        }
    }

    fn on_connect(&mut self, conn: &Connect) -> Decision {
        // With access tokens on, the name is the verified one; `?name=` is not trusted.
        let name = match (token_name(conn), conn.query_param("name")) {
            (Some(n), _) => n,
            (None, Some(n)) if !n.is_empty() && n.len() <= 64 => n.to_owned(),
            (None, Some(_)) => return Decision::reject(400, "name must be 1 to 64 bytes"),
            (None, None) => format!("guest-{}", conn.id),
        };
        let _ = send(
            conn.id,
            json(&Event::History {
                messages: &self.history,
            }),
        );
        let _ = broadcast(json(&Event::Join { name: &name }), &[conn.id]);
        self.names.insert(conn.id, name);
        Decision::accept()
    }

    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        let Message::Text(text) = msg else {
            let _ = send(
                from,
                json(&Event::Error {
                    reason: "chat takes text messages only",
                }),
            );
            return;
        };
        let name = self.names.get(&from).cloned().unwrap_or_default();
        let text = if cfg!(feature = "tag") {
            format!("[v2] {text}")
        } else {
            text
        };
        self.add(
            Line {
                name,
                text,
                at: now_ms(),
            },
            &[from],
        );
    }

    fn on_disconnect(&mut self, conn: ConnectionId, _code: u16) {
        if let Some(name) = self.names.remove(&conn) {
            let _ = broadcast(json(&Event::Leave { name: &name }), &[]);
        }
    }

    fn on_request(&mut self, request: Request) -> Response {
        match request.method.as_str() {
            "GET" => {
                #[derive(Serialize)]
                struct Doc<'a> {
                    document: &'a str,
                    messages: &'a VecDeque<Line>,
                }
                let doc = Doc {
                    document: &self.document,
                    messages: &self.history,
                };
                Response::json(
                    200,
                    serde_json::to_string(&doc).expect("history serializes"),
                )
            }
            "POST" => match String::from_utf8(request.body) {
                Ok(text) if !text.is_empty() => {
                    self.add(
                        Line {
                            name: "server".into(),
                            text,
                            at: now_ms(),
                        },
                        &[],
                    );
                    Response::json(201, format!("{{\"messages\":{}}}", self.history.len()))
                }
                _ => Response::text(400, "send a non-empty UTF-8 body"),
            },
            _ => Response::text(405, "use GET or POST"),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chat state serializes")
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if cfg!(feature = "broken-restore") {
            panic!("this build of chat cannot restore");
        }
        *self = serde_json::from_slice(state).map_err(|e| format!("not a chat snapshot: {e}"))?;
        Ok(())
    }
}

wasmroom_sdk::export!(Chat);
