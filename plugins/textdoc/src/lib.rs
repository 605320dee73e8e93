//! `textdoc`: a plain-text document edited by many clients through a central authority,
//! in the style of prosemirror-collab and Fidus Writer. The server holds the text, its
//! version (0 when new, +1 per accepted diff) and the last 1,000 accepted steps (at most
//! about 1 MiB of them), kept as whole diffs with the version each produced; clients send
//! diffs against the version they have, and a diff applies only if it is against the
//! current version.
//!
//! All messages are JSON text frames.
//!
//! **Steps.** Positions and lengths count Unicode scalar values (Rust `char`s; in
//! JavaScript, code points as in `Array.from(text)`, not UTF-16 units). The steps of a
//! diff apply in order, each to the text the previous one left.
//! - `{"op":"insert","pos":3,"text":"ab"}`: insert `text` (non-empty) before char `pos`
//!   (`0 ≤ pos ≤ length`);
//! - `{"op":"delete","pos":3,"len":2}`: delete chars `pos..pos+len` (`len ≥ 1`,
//!   `pos + len ≤ length`).
//!
//! **Client to server.**
//! - `{"type":"diff","v":N,"rid":R,"steps":[step, ...]}`: 1 to 1,000 steps made on top of
//!   version `N`; `R` is a non-negative integer the client chooses, echoed in the answer.
//!
//! **Server to client.** Every client message gets exactly one answer:
//! - `{"type":"confirm","rid":R,"v":V}`: `N` was the current version; all the steps were
//!   applied, as version `V = N + 1`. The other clients get
//!   `{"type":"steps","v":V,"steps":[...]}` (the sender does not).
//! - `{"type":"behind","rid":R,"v":C,"diffs":[{"v":N+1,"steps":[...]},...,{"v":C,"steps":[...]}]}`:
//!   `N` is older than the current version `C`; these are the diffs the client missed. It
//!   applies them, rebases its own steps over them and sends its diff again at `C`.
//!   Nothing was applied.
//! - `{"type":"refetch","rid":R,"v":C,"text":"..."}`: `N` is ahead of the server, or too
//!   old for the history (or the missed diffs would not fit in one message). This is the
//!   whole document: the client replaces its text, rebases or drops its own changes, and
//!   carries on from `C`. Nothing was applied.
//! - `{"type":"error","rid":R,"reason":"..."}`: the message was refused (malformed JSON,
//!   unknown `type`, a malformed step, a step out of range, too many steps, a text that
//!   would grow beyond about 1 MB as JSON). `rid` is `null` when it could not be read.
//!   Nothing was applied: a diff applies completely or not at all.
//! - On connect: `{"type":"doc","v":V,"text":"..."}`.
//!
//! **Viewers.** With access tokens on (`[plugin.textdoc.auth]` in the host's config), a
//! connection whose token has the claim `"role": "viewer"` is read-only: it gets the
//! document and every change, and each of its diffs is answered with
//! `{"type":"error","rid":R,"reason":"read-only: ..."}` and not applied. Over HTTP, a
//! `PUT` whose token is a viewer's is refused with `403` (the host hands the request's
//! claims in `x-wasmroom-claims`); a backend writes with a token of another role.
//!
//! `steps` messages arrive in version order without gaps. A version can reach a client
//! twice (as `steps`, then in a `behind` answer sent after it): clients apply each version
//! once, by `v`.
//!
//! **HTTP** (`/docs/textdoc/{doc}`):
//! - `GET`: `{"v":V,"text":"..."}`, e.g. for a backend to save the document.
//! - `PUT` with the new text as a UTF-8 body (optionally `?v=N`: only if the current
//!   version is `N`, else `409`): replaces the whole text as one diff from the server
//!   (delete everything, insert the new text), so connected clients get it as `steps`
//!   like any other. Answers `{"v":V}`; `413` if the text is too large.
//!
//! The state (text, version, history) is kept by `snapshot`/`restore`, so it survives hot
//! reloads and restarts. The protocol lives in the `protocol` module, tested without a host.

mod chunked;
mod protocol;

use protocol::{ReplaceError, TextDoc};
use wasmroom_sdk::{
    Connect, ConnectionId, Consumer, Decision, LogLevel, Message, Request, Response, broadcast,
    claims, log, send,
};

/// Whether `conn`'s access token makes it a viewer (`"role": "viewer"`). Asked per
/// diff, not remembered: the host keeps the claims, also across hot reloads.
fn is_viewer(conn: ConnectionId) -> bool {
    claims(conn).is_some_and(|c| viewer_claims(&c))
}

/// Whether a token's claims (JSON) are a viewer's.
fn viewer_claims(claims: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(claims).is_ok_and(|c| c["role"] == "viewer")
}

/// Sends, logging what the host refused (the client would notice the gap and refetch).
fn send_or_log(to: ConnectionId, msg: String) {
    if let Err(e) = send(to, msg) {
        log(LogLevel::Warn, &format!("cannot send to {to}: {e}"));
    }
}

fn broadcast_or_log(msg: String, except: &[ConnectionId]) {
    if let Err(e) = broadcast(msg, except) {
        log(LogLevel::Warn, &format!("cannot broadcast: {e}"));
    }
}

impl Consumer for TextDoc {
    fn open(_document: &str) -> Self {
        TextDoc::default()
    }

    fn on_connect(&mut self, conn: &Connect) -> Decision {
        match send(conn.id, self.doc_message()) {
            Ok(()) => Decision::accept(),
            Err(e) => Decision::reject(500, format!("cannot send the document: {e}")),
        }
    }

    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        let Message::Text(raw) = msg else {
            send_or_log(
                from,
                protocol::error(None, "textdoc takes JSON text messages only"),
            );
            return;
        };
        if is_viewer(from) {
            let rid = serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|m| m["rid"].as_u64());
            let reason = "read-only: this connection's token is a viewer's";
            send_or_log(from, protocol::error(rid, reason));
            return;
        }
        let outcome = self.handle(&raw);
        send_or_log(from, outcome.reply);
        if let Some(steps) = outcome.broadcast {
            broadcast_or_log(steps, &[from]);
        }
    }

    fn on_request(&mut self, request: Request) -> Response {
        // `/docs/textdoc/{doc}` only: no sub-resources.
        if request.path.splitn(5, '/').nth(4).is_some() {
            return Response::text(404, "textdoc serves /docs/textdoc/{doc} only");
        }
        match request.method.as_str() {
            "GET" => Response::json(200, self.http_json()),
            "PUT" if request.claims().is_some_and(viewer_claims) => {
                Response::text(403, "read-only: this request's token is a viewer's")
            }
            "PUT" => {
                let expected = match request.query_param("v").map(str::parse::<u64>) {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(_)) => {
                        return Response::text(400, "v must be a non-negative integer");
                    }
                };
                let Ok(text) = String::from_utf8(request.body) else {
                    return Response::text(400, "the body must be UTF-8 text");
                };
                match self.replace(&text, expected) {
                    Ok(done) => {
                        if let Some(steps) = done.broadcast {
                            broadcast_or_log(steps, &[]);
                        }
                        Response::json(200, format!("{{\"v\":{}}}", done.v))
                    }
                    Err(ReplaceError::Conflict { current }) => Response::json(
                        409,
                        format!("{{\"error\":\"version conflict\",\"v\":{current}}}"),
                    ),
                    Err(ReplaceError::TooLarge) => Response::text(413, "the text is too large"),
                }
            }
            _ => Response::text(405, "use GET or PUT"),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        TextDoc::snapshot(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        *self = TextDoc::restore(state)?;
        Ok(())
    }
}

wasmroom_sdk::export!(TextDoc);
