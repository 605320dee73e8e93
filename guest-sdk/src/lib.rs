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

#![allow(unsafe_code)] // the generated bindings are `unsafe` glue

extern crate self as wasmroom_sdk;

use std::time::Duration;

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "room",
        pub_export_macro: true,
        export_macro_name: "__export_room",
        default_bindings_module: "::wasmroom_sdk::wit",
        runtime_path: "::wasmroom_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

use wit::wasmroom::consumer::context as c;
use wit::wasmroom::consumer::host as h;
use wit::wasmroom::consumer::types as t;

/// Identifies a connection of the document: unique within the document, never reused by
/// it (1, 2, 3... in the order connections ask to join; below 2^53).
pub type ConnectionId = u64;

/// Identifies a timer of the document. The consumer chooses it.
pub type TimerId = u64;

/// One WebSocket message. Text stays text and binary stays binary end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl Message {
    /// The payload as bytes, whatever the frame type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Message::Binary(bytes)
    }
}

/// A connection asking to join the document.
#[derive(Debug, Clone)]
pub struct Connect {
    /// The id the connection will have if accepted.
    pub id: ConnectionId,
    /// The request path as received, e.g. `/ws/chat/room%201`.
    pub path: String,
    /// The query string without `?`, or empty.
    pub query: String,
    /// Request headers; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// Offered subprotocols, in the client's order.
    pub subprotocols: Vec<String>,
    /// The client's `ip:port`.
    pub remote_address: String,
}

impl Connect {
    /// The first header named `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The raw (still percent-encoded) value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param(&self.query, name)
    }

    /// The claims of this connection's verified access token (see [`claims`]).
    pub fn claims(&self) -> Option<String> {
        claims(self.id)
    }
}

/// The answer to a [`Connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept, optionally choosing one of the offered subprotocols.
    Accept {
        /// The chosen subprotocol.
        subprotocol: Option<String>,
    },
    /// Refuse with an HTTP status (400-599) and a short reason, before the upgrade.
    Reject {
        /// HTTP status.
        status: u16,
        /// Response body.
        reason: String,
    },
}

impl Decision {
    /// Accept without a subprotocol.
    pub fn accept() -> Decision {
        Decision::Accept { subprotocol: None }
    }

    /// Refuse with `status` and `reason`.
    pub fn reject(status: u16, reason: impl Into<String>) -> Decision {
        Decision::Reject {
            status,
            reason: reason.into(),
        }
    }
}

/// The header in which the host hands [`Consumer::on_request`] the claims of the
/// request's verified access token (see [`Request::claims`]).
pub const CLAIMS_HEADER: &str = "x-wasmroom-claims";

/// An HTTP request to `/docs/{plugin}/{document}...`.
///
/// With access tokens on (`[plugin.NAME.auth]`), the host has verified the request's
/// token and removed it (from the query, `Authorization`, the cookie); its claims are in
/// [`Request::claims`].
#[derive(Debug, Clone)]
pub struct Request {
    /// Upper-case method.
    pub method: String,
    /// The path as received.
    pub path: String,
    /// The query string without `?`, or empty.
    pub query: String,
    /// Request headers; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The raw (still percent-encoded) value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param(&self.query, name)
    }

    /// The claims of the request's verified access token as its JSON payload (e.g.
    /// `{"sub":"42","doc":"notes","role":"viewer","exp":...}`), from the
    /// `x-wasmroom-claims` header the host sets. `None` when the plugin takes no tokens;
    /// a client cannot forge it, since the host removes the header whatever the plugin.
    pub fn claims(&self) -> Option<&str> {
        self.header(CLAIMS_HEADER)
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (the host sets `content-length`).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` response; `json` must already be JSON.
    pub fn json(status: u16, json: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json.into().into_bytes(),
        }
    }
}

/// Why the host refused a request. The document is unharmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The connection is not (or no longer) part of this document.
    UnknownConnection,
    /// The connection is closing; nothing more can be sent to it.
    Closing,
    /// The message exceeds the host's limit (bytes).
    TooLarge(u64),
    /// The document has the most pending timers allowed.
    TooManyTimers(u32),
    /// A server may not send this close code.
    InvalidCloseCode,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::UnknownConnection => write!(f, "unknown connection"),
            HostError::Closing => write!(f, "connection is closing"),
            HostError::TooLarge(max) => write!(f, "message larger than {max} bytes"),
            HostError::TooManyTimers(max) => write!(f, "more than {max} pending timers"),
            HostError::InvalidCloseCode => write!(f, "invalid close code"),
        }
    }
}

impl std::error::Error for HostError {}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

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

/// Sends `msg` to one connection of this document.
pub fn send(to: ConnectionId, msg: impl Into<Message>) -> Result<(), HostError> {
    h::send(to, &to_wit(msg.into())).map_err(from_wit_error)
}

/// Sends `msg` to every connection of this document except those in `except`. The host
/// encodes it once for all recipients.
pub fn broadcast(msg: impl Into<Message>, except: &[ConnectionId]) -> Result<(), HostError> {
    h::broadcast(&to_wit(msg.into()), except).map_err(from_wit_error)
}

/// Closes a connection with a close code (1000, 1001, 1008, 1011, 3000-4999...) and a
/// short reason.
pub fn close(conn: ConnectionId, code: u16, reason: &str) -> Result<(), HostError> {
    h::close(conn, code, reason).map_err(from_wit_error)
}

/// Calls [`Consumer::on_timer`] with `id` after `delay`; setting a pending id
/// reschedules it.
pub fn set_timer(id: TimerId, delay: Duration) -> Result<(), HostError> {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    h::set_timer(id, ms).map_err(from_wit_error)
}

/// Cancels a pending timer; returns whether it was pending.
pub fn cancel_timer(id: TimerId) -> bool {
    h::cancel_timer(id)
}

/// The open connections of this document, oldest first.
pub fn connections() -> Vec<ConnectionId> {
    h::connections()
}

/// Writes a line to the host's log, tagged with the plugin and document.
pub fn log(level: LogLevel, text: &str) {
    let level = match level {
        LogLevel::Trace => t::LogLevel::Trace,
        LogLevel::Debug => t::LogLevel::Debug,
        LogLevel::Info => t::LogLevel::Info,
        LogLevel::Warn => t::LogLevel::Warn,
        LogLevel::Error => t::LogLevel::Error,
    };
    h::log(level, text);
}

/// The claims of `conn`'s access token, verified by the host before `on_connect`, as the
/// token's JSON payload (e.g. `{"sub":"42","doc":"notes","role":"viewer","exp":...}`).
/// `None` when the plugin takes no tokens (`[plugin.NAME.auth]`) or `conn` is not a
/// connection of this document. Parse it with any JSON library to decide roles.
pub fn claims(conn: ConnectionId) -> Option<String> {
    c::claims(conn)
}

/// The setting `name` from `[plugin.NAME.settings]` in the host's config (environment
/// variables substituted), or `None`. Read it when needed rather than once in `open`:
/// a config reload changes it under live documents.
pub fn setting(name: &str) -> Option<String> {
    c::setting(name)
}

/// The document's clock: milliseconds since the Unix epoch as of the start of this call.
/// It does not move during the call (`std::time` reads the same clock) and never goes
/// backwards; to wait, set a timer.
pub fn now_ms() -> u64 {
    h::now_ms()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn to_wit(msg: Message) -> t::Message {
    match msg {
        Message::Text(s) => t::Message::Text(s),
        Message::Binary(b) => t::Message::Binary(b),
    }
}

fn from_wit_error(e: t::HostError) -> HostError {
    match e {
        t::HostError::UnknownConnection => HostError::UnknownConnection,
        t::HostError::Closing => HostError::Closing,
        t::HostError::TooLarge(n) => HostError::TooLarge(n),
        t::HostError::TooManyTimers(n) => HostError::TooManyTimers(n),
        t::HostError::InvalidCloseCode => HostError::InvalidCloseCode,
    }
}

/// Exports a [`Consumer`] as the component's `wasmroom:consumer/consumer` interface.
/// Use it once per plugin crate: `wasmroom_sdk::export!(MyConsumer);`.
#[macro_export]
macro_rules! export {
    ($consumer:ty) => {
        const _: () = {
            struct __WasmroomGuest;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$consumer>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::wit::exports::wasmroom::consumer::consumer::Guest for __WasmroomGuest {
                fn open(
                    document: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::open::<$consumer>(&STATE, &document)
                }
                fn on_connect(
                    info: $crate::wit::exports::wasmroom::consumer::consumer::ConnectInfo,
                ) -> $crate::wit::exports::wasmroom::consumer::consumer::Decision {
                    $crate::__private::on_connect::<$consumer>(&STATE, info)
                }
                fn on_message(
                    connection: u64,
                    msg: $crate::wit::exports::wasmroom::consumer::consumer::Message,
                ) {
                    $crate::__private::on_message::<$consumer>(&STATE, connection, msg)
                }
                fn on_disconnect(connection: u64, code: u16) {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| {
                        c.on_disconnect(connection, code)
                    })
                }
                fn on_timer(id: u64) {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| c.on_timer(id))
                }
                fn on_request(
                    request: $crate::wit::exports::wasmroom::consumer::consumer::HttpRequest,
                ) -> $crate::wit::exports::wasmroom::consumer::consumer::HttpResponse {
                    $crate::__private::on_request::<$consumer>(&STATE, request)
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| {
                        $crate::Consumer::snapshot(c)
                    })
                }
                fn restore(
                    state: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| {
                        $crate::Consumer::restore(c, &state)
                    })
                }
            }

    $crate::wit::__export_room!(__WasmroomGuest with_types_in $crate::wit);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::wit::exports::wasmroom::consumer::consumer as e;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    type Slot<C> = LocalKey<RefCell<Option<C>>>;

    pub fn open<C: Consumer>(slot: &'static Slot<C>, document: &str) -> Result<(), String> {
        let state = C::open(document);
        slot.with(|s| *s.borrow_mut() = Some(state));
        Ok(())
    }

    pub fn with<C: Consumer, R>(slot: &'static Slot<C>, f: impl FnOnce(&mut C) -> R) -> R {
        slot.with(|s| {
            let mut s = s.borrow_mut();
            // The host always calls `open` first; anything else is a host bug worth a trap.
            let consumer = s.as_mut().expect("wasmroom called a hook before open");
            f(consumer)
        })
    }

    pub fn on_connect<C: Consumer>(slot: &'static Slot<C>, info: e::ConnectInfo) -> e::Decision {
        let connect = Connect {
            id: info.id,
            path: info.path,
            query: info.query,
            headers: info.headers,
            subprotocols: info.subprotocols,
            remote_address: info.remote_address,
        };
        match with(slot, |c| c.on_connect(&connect)) {
            Decision::Accept { subprotocol } => e::Decision::Accept(subprotocol),
            Decision::Reject { status, reason } => {
                e::Decision::Reject(t::Rejection { status, reason })
            }
        }
    }

    pub fn on_message<C: Consumer>(slot: &'static Slot<C>, from: u64, msg: e::Message) {
        let msg = match msg {
            e::Message::Text(s) => Message::Text(s),
            e::Message::Binary(b) => Message::Binary(b),
        };
        with(slot, |c| c.on_message(from, msg))
    }

    pub fn on_request<C: Consumer>(slot: &'static Slot<C>, r: e::HttpRequest) -> e::HttpResponse {
        let request = Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        };
        let response = with(slot, |c| c.on_request(request));
        e::HttpResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_and_headers() {
        assert_eq!(query_param("a=1&b=two&c", "b"), Some("two"));
        assert_eq!(query_param("a=1&b=two&c", "c"), Some(""));
        assert_eq!(query_param("a=1", "z"), None);
        let h = vec![("x-user".to_owned(), "ann".to_owned())];
        assert_eq!(header(&h, "X-User"), Some("ann"));
    }

    #[test]
    fn request_claims_come_from_the_hosts_header() {
        let request = |headers: Vec<(String, String)>| Request {
            method: "PUT".into(),
            path: "/docs/textdoc/a".into(),
            query: String::new(),
            headers,
            body: Vec::new(),
        };
        let claims = r#"{"role":"viewer"}"#;
        let signed = request(vec![(CLAIMS_HEADER.into(), claims.into())]);
        assert_eq!(signed.claims(), Some(claims));
        assert_eq!(request(Vec::new()).claims(), None);
    }

    #[test]
    fn messages_convert() {
        assert_eq!(Message::from("hi"), Message::Text("hi".into()));
        assert_eq!(Message::from(vec![1u8]).as_bytes(), &[1]);
    }
}
