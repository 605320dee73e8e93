//! The values a consumer gets and gives: messages, a connection asking to join and the
//! answer, HTTP requests and responses, the host's refusals, log levels.

use crate::ConnectionId;

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

    /// The claims of this connection's verified access token (see [`claims`](crate::claims)).
    pub fn claims(&self) -> Option<String> {
        crate::claims(self.id)
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

/// The header in which the host hands [`Consumer::on_request`](crate::Consumer::on_request) the claims of the
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

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
