//! A request head as a client sends it: parsed with `httparse` (hyper's parser) into
//! owned fields, and the client address behind a proxy. The host reads the bytes; this
//! module only looks at them.

use std::net::{IpAddr, SocketAddr};

/// The largest request head accepted. Browsers send 1-4 KiB; cookies can add more.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why bytes are not a request head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More headers than a head may have: answer 431.
    #[error("request head too large")]
    TooLarge,
    /// Not HTTP/1.x: answer 400.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// A parsed request head, plus any bytes the peer sent after it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Upper-case method.
    pub method: String,
    /// The path as received (still percent-encoded), without the query.
    pub path: String,
    /// The query string without `?`, or empty.
    pub query: String,
    /// Headers with lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Bytes read past the end of the head: the start of a body or of WebSocket frames.
    pub rest: Vec<u8>,
}

impl RequestHead {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (such as `Connection`) contains `token`,
    /// compared case-insensitively.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's order.
    pub fn subprotocols(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "sec-websocket-protocol")
            .flat_map(|(_, v)| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// Parses `buf` as a request head. `Ok(None)` means "incomplete, read more".
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooLarge),
        Err(e) => return Err(ParseError::Malformed(e.to_string())),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(RequestHead {
        method: req.method.unwrap_or("GET").to_ascii_uppercase(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        rest: buf[len..].to_vec(),
    }))
}

/// The client's address as the consumer sees it. Behind a proxy (`trust_proxy`), that is
/// the address the proxy reports: the last `X-Forwarded-For` entry (the one the proxy
/// appended; entries before it come from the client and prove nothing), else
/// `X-Real-IP`. The proxy does not tell the client's port, so it is 0 (a port in the
/// entry is dropped). An entry that is not an address is ignored.
pub fn client_address(head: &RequestHead, peer: SocketAddr, trust_proxy: bool) -> SocketAddr {
    if !trust_proxy {
        return peer;
    }
    let ip = |text: &str| {
        let text = text.trim();
        text.parse::<IpAddr>()
            .ok()
            .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
    };
    let forwarded = head
        .headers
        .iter()
        .rev()
        .find(|(n, _)| n == "x-forwarded-for")
        .and_then(|(_, v)| v.rsplit(',').next())
        .and_then(ip);
    forwarded
        .or_else(|| head.header("x-real-ip").and_then(ip))
        .map_or(peer, |ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/ws/chat/x".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            rest: Vec::new(),
        }
    }

    #[test]
    fn client_address_trusts_proxy_headers_only_when_told() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let spoofed = head_with(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(client_address(&spoofed, peer, false), peer);
        // The proxy appends the address it saw: the last entry counts, not the client's.
        let appended = head_with(&[("x-forwarded-for", "10.9.9.9, 192.0.2.7")]);
        assert_eq!(
            client_address(&appended, peer, true),
            "192.0.2.7:0".parse().unwrap()
        );
        let real = head_with(&[("x-real-ip", "2001:db8::1")]);
        assert_eq!(
            client_address(&real, peer, true),
            "[2001:db8::1]:0".parse().unwrap()
        );
        // A client's own X-Real-IP does not beat what the proxy appended.
        let spoof = head_with(&[
            ("x-forwarded-for", "192.0.2.7:5555"),
            ("x-real-ip", "10.1.1.1"),
        ]);
        assert_eq!(
            client_address(&spoof, peer, true),
            "192.0.2.7:0".parse().unwrap()
        );
        let garbage = head_with(&[("x-real-ip", "not an address")]);
        assert_eq!(client_address(&garbage, peer, true), peer);
    }

    #[test]
    fn parses_heads_incrementally() {
        let full =
            b"GET /ws/relay/a?x=1 HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: a, b\r\n\r\nREST";
        assert!(parse_head(&full[..20]).unwrap().is_none());
        let head = parse_head(full).unwrap().unwrap();
        assert_eq!(head.path, "/ws/relay/a");
        assert_eq!(head.query, "x=1");
        assert_eq!(head.header("host"), Some("h"));
        assert_eq!(head.subprotocols(), vec!["a", "b"]);
        assert_eq!(head.rest, b"REST");
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    mod properties {
        use super::*;
        use crate::route::{Route, route};
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = parse_head(&bytes);
            }

            #[test]
            fn valid_ids_survive_percent_encoding(id in "[^/*\\p{Cc}]{1,60}") {
                prop_assume!(id != "." && id != "..");
                let encoded = utf8_percent_encode(&id, NON_ALPHANUMERIC).to_string();
                let head = format!("GET /ws/chat/{encoded}?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
                let parsed = parse_head(head.as_bytes()).unwrap().unwrap();
                prop_assert_eq!(
                    route(&parsed.path).unwrap(),
                    Route::Socket { plugin: "chat".into(), document: id }
                );
            }
        }
    }
}
