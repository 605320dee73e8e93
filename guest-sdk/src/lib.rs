//! Write wasmroom consumers in Rust.
//!
//! A consumer holds the live state of one document. Implement [`Consumer`] for a type
//! that holds that state, export it with [`export!`], and build the crate as a
//! `cdylib` for `wasm32-wasip2`:
//!
//! ```ignore
//! use wasmroom_sdk::{Consumer, ConnectionId, Message};
//!
//! struct Relay;
//!
//! impl Consumer for Relay {
//!     fn open(_document: &str) -> Self {
//!         Relay
//!     }
//!
//!     fn on_message(&mut self, from: ConnectionId, msg: Message) {
//!         let _ = wasmroom_sdk::broadcast(msg, &[from]);
//!     }
//! }
//!
//! wasmroom_sdk::export!(Relay);
//! ```
//!
//! The host creates one instance per live document and calls it one event at a time, so
//! `&mut self` is all the synchronisation a consumer needs. Host functions ([`send`],
//! [`broadcast`], [`close`], [`set_timer`], ...) never block: what they ask for happens
//! in call order once the current hook returns.
//!
//! The component exports the `batched-room` world of WIT 0.1.2: messages of a connection
//! that arrive together reach [`Consumer::on_messages`] in one call, whose default hands
//! each to [`Consumer::on_message`]; a consumer gains from that without a change.

#![allow(unsafe_code)] // the generated bindings are `unsafe` glue

extern crate self as wasmroom_sdk;

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "batched-room",
        pub_export_macro: true,
        export_macro_name: "__export_room",
        default_bindings_module: "::wasmroom_sdk::wit",
        runtime_path: "::wasmroom_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

mod export;
mod host;
mod types;

pub use host::{
    broadcast, cancel_timer, claims, close, closed_in_this_call, connections, log, now_ms, send,
    set_timer, setting,
};
pub use types::{
    CLAIMS_HEADER, Connect, Decision, HostError, LogLevel, Message, Request, Response,
};

#[doc(hidden)]
pub use export::__private;

/// Identifies a connection of the document: unique within the document, never reused by
/// it (1, 2, 3... in the order connections ask to join; below 2^53).
pub type ConnectionId = u64;

/// Identifies a timer of the document. The consumer chooses it.
pub type TimerId = u64;

/// The state of one document. The host calls [`Consumer::open`] once per instance, then
/// [`Consumer::restore`] if the document has a saved state, then the other hooks as events
/// arrive. Every hook but `open` has a default that does nothing (or accepts).
pub trait Consumer: Sized + 'static {
    /// Creates the state of document `document` (its id from the URL, decoded).
    fn open(document: &str) -> Self;

    /// A connection asks to join. Messages sent to `conn.id` from here arrive right
    /// after the upgrade. Default: accept.
    fn on_connect(&mut self, conn: &Connect) -> Decision {
        let _ = conn;
        Decision::accept()
    }

    /// A message arrived from `from`.
    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        let _ = (from, msg);
    }

    /// Messages from `from` that arrived together (one read of its socket), in order, in
    /// one call: one deadline for all of them (the host keeps a batch small enough), one
    /// clock ([`now_ms`]). Returns how many it handled, counted from the first.
    ///
    /// Default: [`Consumer::on_message`] for each, stopping after one during which the
    /// consumer closed `from` ([`closed_in_this_call`]): the host does not apply what a
    /// closed connection sends. Override it to handle a batch at once (one merge for many
    /// updates, one broadcast for many lines); return `messages.len()` unless you closed
    /// `from`, else the host closes it (1011), since its stream would have a hole.
    fn on_messages(&mut self, from: ConnectionId, messages: Vec<Message>) -> usize {
        each_message(self, from, messages)
    }

    /// `conn` left with close `code`: the server's when it started the close (your own
    /// `close`, 1008 too slow, 1001 ping timeout, 1012 shutdown), else the client's (1006:
    /// dropped without a close frame).
    fn on_disconnect(&mut self, conn: ConnectionId, code: u16) {
        let _ = (conn, code);
    }

    /// Timer `timer` is due.
    fn on_timer(&mut self, timer: TimerId) {
        let _ = timer;
    }

    /// An HTTP request to the document. Default: 404.
    fn on_request(&mut self, request: Request) -> Response {
        let _ = request;
        Response::text(404, "this consumer has no HTTP interface")
    }

    /// Encodes the whole state (for saving and for hot reload). Default: nothing.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Replaces the state with bytes from [`Consumer::snapshot`], possibly written by an
    /// older version of this consumer. Default: accepts an empty state only, so state is
    /// never dropped silently.
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err("this consumer does not implement restore".into())
        }
    }
}

/// What the default [`Consumer::on_messages`] does: [`Consumer::on_message`] for each
/// message, stopping after one during which the consumer closed `from`; returns how many
/// it handled. For an override that handles some batches itself and leaves the others
/// to `on_message`.
pub fn each_message<C: Consumer>(
    consumer: &mut C,
    from: ConnectionId,
    messages: Vec<Message>,
) -> usize {
    let mut handled = 0;
    for msg in messages {
        consumer.on_message(from, msg);
        handled += 1;
        if closed_in_this_call(from) {
            break;
        }
    }
    handled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::CLOSED;

    #[test]
    fn the_default_batch_stops_after_closing_its_sender() {
        struct Log(Vec<String>);
        impl Consumer for Log {
            fn open(_: &str) -> Self {
                Log(Vec::new())
            }
            fn on_message(&mut self, from: ConnectionId, msg: Message) {
                let Message::Text(text) = msg else { return };
                // What `close` records once the host took it (no host here).
                let kicked = match text.as_str() {
                    "kick" => Some(from),
                    "kick-other" => Some(from + 1),
                    _ => None,
                };
                if let Some(conn) = kicked {
                    CLOSED.with_borrow_mut(|closed| closed.push(conn));
                }
                self.0.push(text);
            }
        }
        let mut log = Log::open("d");
        let batch = |texts: &[&str]| texts.iter().map(|&t| Message::from(t)).collect();
        assert_eq!(log.on_messages(1, batch(&["a", "kick-other", "b"])), 3);
        assert_eq!(log.on_messages(1, batch(&["c", "kick", "d"])), 2);
        CLOSED.with_borrow_mut(Vec::clear);
        assert_eq!(log.0, ["a", "kick-other", "b", "c", "kick"]);
    }
}
