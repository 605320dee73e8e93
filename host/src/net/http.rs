//! The HTTP/1.1 edge of a lane: reading one request head (where it goes is
//! [`crate::route`]'s), writing plain responses and the WebSocket `101 Switching Protocols`.
//!
//! wasmroom parses the head itself (with `httparse`, hyper's parser) instead of running a
//! full HTTP server: every connection serves exactly one request or one WebSocket, so all
//! that is needed is the head, an optional `Content-Length` body, and full control over
//! what happens before the upgrade (404/400/503 with a reason, the consumer's own rejection).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use wasmroom_wire::head::ParseError;
pub use wasmroom_wire::head::{MAX_HEAD_BYTES, RequestHead, client_address, parse_head};
use wasmroom_wire::websocket::{KeyError, check_key};

use crate::net::budget::Charge;

/// How long a client may take to receive an answer: one that does not read cannot hold
/// its connection (and the memory of the answer) for longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read into a body per step: a body's memory grows as its bytes arrive (by at
/// most this much ahead of them), never from what its `Content-Length` announces.
const BODY_STEP: usize = 16 * 1024;

/// Why a request head could not be read. Each maps to one HTTP answer (or none).
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The peer closed the connection or sent nothing usable in time: drop it silently.
    #[error("connection closed before a complete request head")]
    Closed,
    /// The peer did not finish its request head within the handshake timeout.
    #[error("request head not complete within {0:?}")]
    Timeout(Duration),
    /// The head is larger than [`MAX_HEAD_BYTES`]: answer 431.
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    /// Not HTTP/1.x: answer 400.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one request head, waiting at most `timeout` for it to complete.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<RequestHead, HeadError> {
    match tokio::time::timeout(timeout, read_head_inner(stream)).await {
        Ok(result) => result,
        Err(_) => Err(HeadError::Timeout(timeout)),
    }
}

async fn read_head_inner<S: AsyncRead + Unpin>(stream: &mut S) -> Result<RequestHead, HeadError> {
    // Read straight into the heap buffer: a stack array here would live in every
    // connection task's future for the connection's whole life.
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        buf.reserve(1024.min(MAX_HEAD_BYTES - buf.len()));
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        match parse_head(&buf) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(ParseError::TooLarge) => return Err(HeadError::TooLarge),
            Err(ParseError::Malformed(why)) => return Err(HeadError::Malformed(why)),
        }
    }
}

/// The reason phrase of the status codes wasmroom sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes a complete response and flushes it, within [`WRITE_TIMEOUT`]. The connection
/// is not reused afterwards (`Connection: close`): each socket carries one request.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_response_within(WRITE_TIMEOUT, stream, status, headers, body).await
}

/// [`write_response`] with another time limit (large static files).
pub async fn write_response_within<S: AsyncWrite + Unpin>(
    timeout: Duration,
    stream: &mut S,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let head = response_head(status, headers, body.len());
    write_within(timeout, stream, &[head.as_bytes(), body]).await
}

/// Writes only the head of a response whose body would be `length` bytes (`HEAD`).
pub async fn write_head<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &[(String, String)],
    length: usize,
) -> std::io::Result<()> {
    let head = response_head(status, headers, length);
    write_within(WRITE_TIMEOUT, stream, &[head.as_bytes()]).await
}

/// Writes `parts` (in one vectored write where the stream allows, so that a small
/// answer leaves in one segment) and flushes, or fails with `TimedOut` after `timeout`.
async fn write_within<S: AsyncWrite + Unpin>(
    timeout: Duration,
    stream: &mut S,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let write = async {
        match parts {
            [one] => stream.write_all(one).await?,
            [head, body] => {
                let mut both = bytes::Buf::chain(*head, *body);
                stream.write_all_buf(&mut both).await?;
            }
            _ => {
                for part in parts {
                    stream.write_all(part).await?;
                }
            }
        }
        stream.flush().await
    };
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn response_head(status: u16, headers: &[(String, String)], length: usize) -> String {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    let mut has_type = false;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        // The host owns framing; a consumer cannot break it.
        if matches!(
            lower.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) || !valid_header(name, value)
        {
            continue;
        }
        has_type |= lower == "content-type";
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_type && length > 0 {
        out.push_str("content-type: text/plain; charset=utf-8\r\n");
    }
    out.push_str(&format!(
        "content-length: {length}\r\nconnection: close\r\n\r\n"
    ));
    out
}

/// Writes a plain-text error or status response with a one-line body.
pub async fn write_text<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    text: &str,
) -> std::io::Result<()> {
    let body = format!("{text}\n");
    write_response(stream, status, &[], body.as_bytes()).await
}

/// Whether a consumer's header may be sent: the name an RFC 9110 token, the value
/// without control characters (tab allowed), so that no header can end the head early or
/// smuggle another one.
fn valid_header(name: &str, value: &str) -> bool {
    is_token(name) && !value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Whether `text` is an HTTP token (a header name, a method).
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why a request is not a WebSocket upgrade this server accepts (400, or 426 without an
/// `Upgrade` header), with the text to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotUpgrade {
    /// Another method than GET.
    #[error("WebSocket upgrades must use GET")]
    Method,
    /// No `Upgrade: websocket`.
    #[error("expected 'Upgrade: websocket'")]
    Upgrade,
    /// No `Connection: Upgrade`.
    #[error("expected 'Connection: Upgrade'")]
    Connection,
    /// Another protocol version than 13.
    #[error("expected 'Sec-WebSocket-Version: 13'")]
    Version,
    /// `Sec-WebSocket-Key` missing, or not 16 bytes in base64.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Checks that a request head is a valid WebSocket upgrade and returns the
/// `Sec-WebSocket-Accept` value to answer with.
pub fn websocket_accept_key(head: &RequestHead) -> Result<String, NotUpgrade> {
    if head.method != "GET" {
        return Err(NotUpgrade::Method);
    }
    if !head.header_has_token("upgrade", "websocket") {
        return Err(NotUpgrade::Upgrade);
    }
    if !head.header_has_token("connection", "upgrade") {
        return Err(NotUpgrade::Connection);
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err(NotUpgrade::Version);
    }
    let key = check_key(head.header("sec-websocket-key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Writes `101 Switching Protocols`, with the subprotocol the consumer chose, if any.
pub async fn write_switching_protocols<S: AsyncWrite + Unpin>(
    stream: &mut S,
    accept_key: &str,
    subprotocol: Option<&str>,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept_key}\r\n"
    );
    if let Some(p) = subprotocol {
        out.push_str(&format!("sec-websocket-protocol: {p}\r\n"));
    }
    out.push_str("\r\n");
    write_within(WRITE_TIMEOUT, stream, &[out.as_bytes()]).await
}

/// How long, and for how many bytes, a connection answered before its request body was
/// read keeps reading (and discarding) after the answer: closing a socket with unread
/// input makes the kernel reset it, and the client may lose the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 2 << 20;

/// Closes our side after an early answer, then reads and discards what the client still
/// sends, for at most [`LINGER_TIME`] and [`LINGER_BYTES`] (as nginx's lingering close).
pub async fn linger(stream: &mut tokio::net::TcpStream) {
    let _ = stream.shutdown().await;
    let mut left = LINGER_BYTES;
    // On the heap: an array here would be part of every connection task's future.
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Reads a `Content-Length` body of at most `limit` bytes, starting with the bytes that
/// came with the head, within `timeout`. Memory grows as the bytes arrive, and every byte
/// is held in `charge` first: when the lane's budget is spent, [`BodyError::Busy`].
pub async fn read_body(
    stream: &mut tokio::net::TcpStream,
    head: &RequestHead,
    limit: usize,
    timeout: Duration,
    charge: &mut Charge,
) -> Result<Vec<u8>, BodyError> {
    if head
        .header("transfer-encoding")
        .is_some_and(|te| !te.eq_ignore_ascii_case("identity"))
    {
        return Err(BodyError::LengthRequired);
    }
    let len: usize = match head.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v.trim().parse().map_err(|_| BodyError::BadLength)?,
    };
    if len > limit {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = head.rest[..head.rest.len().min(len)].to_vec();
    if !charge.resize(body.len()) {
        return Err(BodyError::Busy);
    }
    let read = async {
        while body.len() < len {
            // Memory only once bytes are there to read: a client that announces a body
            // and sends nothing costs nothing.
            stream.readable().await?;
            body.reserve((len - body.len()).min(BODY_STEP));
            if !charge.resize(body.capacity()) {
                return Err(BodyError::Busy);
            }
            let room = len - body.len();
            match stream.try_read_buf(&mut bytes::BufMut::limit(&mut body, room)) {
                Ok(0) => return Err(BodyError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| BodyError::Timeout)??;
    Ok(body)
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Chunked bodies are not supported: send `Content-Length` (411).
    #[error("send the body with Content-Length (chunked transfer encoding is not supported)")]
    LengthRequired,
    /// `Content-Length` is not a number (400).
    #[error("invalid Content-Length")]
    BadLength,
    /// The body is larger than the message size limit (413).
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time.
    #[error("body not complete in time")]
    Timeout,
    /// The lane holds as many bytes of unfinished requests as it may: retry later (503).
    #[error("server busy: too many request bytes in flight; retry later")]
    Busy,
    /// A socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_websocket_upgrades() {
        let head = parse_head(
            b"GET /ws/a/b HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        // The example key and answer of RFC 6455, section 1.3.
        assert_eq!(
            websocket_accept_key(&head).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let plain = parse_head(b"GET /ws/a/b HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(websocket_accept_key(&plain), Err(NotUpgrade::Upgrade));
        // A key that is not 16 bytes in base64 is refused, saying why.
        let short = parse_head(
            b"GET /ws/a/b HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            websocket_accept_key(&short).unwrap_err().to_string(),
            "Sec-WebSocket-Key must be 16 bytes in base64, not 15"
        );
    }

    #[test]
    fn consumer_headers_cannot_break_the_head() {
        let head = response_head(
            200,
            &[
                ("x-ok".into(), "a\tb".into()),
                ("x-split".into(), "a\r\nset-cookie: evil=1".into()),
                ("x-nul".into(), "a\0b".into()),
                ("x-esc".into(), "\u{1b}[31m".into()),
                ("bad name".into(), "v".into()),
                ("x:colon".into(), "v".into()),
                ("".into(), "v".into()),
                ("content-length".into(), "1".into()),
            ],
            0,
        );
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nx-ok: a\tb\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }
}
