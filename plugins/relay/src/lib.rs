//! `relay`: every message goes to all the other connections of the document.
//!
//! HTTP: `POST /docs/relay/{doc}` pushes the body to every connection of the document
//! (as binary with `content-type: application/octet-stream`, as text otherwise) and answers
//! with the number of recipients; `GET` answers with the number of connections.

use wasmroom_sdk::{ConnectionId, Consumer, Message, Request, Response, broadcast, connections};

struct Relay;

impl Consumer for Relay {
    fn open(_document: &str) -> Self {
        Relay
    }

    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        #[cfg(feature = "tag")]
        let msg = match msg {
            Message::Text(text) => Message::Text(format!("[v2] {text}")),
            other => other,
        };
        // The only possible error is a message over the size limit, which the host
        // already refused on the way in.
        let _ = broadcast(msg, &[from]);
    }

    fn on_request(&mut self, request: Request) -> Response {
        let count = connections().len();
        match request.method.as_str() {
            "GET" => Response::json(200, format!("{{\"connections\":{count}}}")),
            "POST" => {
                let binary = request
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("application/octet-stream"));
                let msg = if binary {
                    Message::Binary(request.body)
                } else {
                    match String::from_utf8(request.body) {
                        Ok(text) => Message::Text(text),
                        Err(_) => {
                            return Response::text(
                                400,
                                "body is not UTF-8; send it as application/octet-stream",
                            );
                        }
                    }
                };
                match broadcast(msg, &[]) {
                    Ok(()) => Response::json(202, format!("{{\"delivered\":{count}}}")),
                    Err(e) => Response::text(413, e.to_string()),
                }
            }
            _ => Response::text(405, "use GET or POST"),
        }
    }
}

wasmroom_sdk::export!(Relay);
