//! The lean generator's WebSocket upgrade (blocking, before anything is measured): a
//! hand-written request and, with a session, the subprotocol offered, the `101` checked
//! for it and the host's hello read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use wasmroom_wire::session::SUBPROTOCOL;

use crate::frame::{OP_TEXT, parse_header};
use crate::session::new_session_id;

/// Connects and upgrades `path`, offering a session if `session`. Returns the stream and
/// the bytes that came after the response head (after the hello, with a session).
pub(crate) fn handshake(
    addr: SocketAddr,
    host: &str,
    path: &str,
    session: bool,
) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let offer = if session {
        format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n")
    } else {
        String::new()
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed during the upgrade of {path}");
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&head[..head.len().min(64)]);
            ensure!(
                head.starts_with(b"HTTP/1.1 101"),
                "upgrade of {path} refused: {}",
                status.lines().next().unwrap_or_default()
            );
            let early = head.split_off(end + 4);
            if !session {
                return Ok((stream, early));
            }
            ensure!(
                names_subprotocol(&head),
                "the host did not accept {SUBPROTOCOL} for {path}"
            );
            let rest = read_hello(&mut stream, early).with_context(|| path.to_owned())?;
            return Ok((stream, rest));
        }
        ensure!(head.len() < 16 << 10, "response head of {path} too long");
    }
}

/// Whether a `101` response head names the session subprotocol.
pub(crate) fn names_subprotocol(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-protocol")
                && value.trim() == SUBPROTOCOL
        })
    })
}

/// Reads the host's first frame, which must be the hello of a new session; returns what
/// came after it.
fn read_hello(stream: &mut TcpStream, mut buf: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(h) = parse_header(&buf).map_err(|e| anyhow::anyhow!("{e:?}"))?
            && buf.len() >= h.frame_len()
        {
            let payload = &buf[h.payload_at..h.frame_len()];
            let text = std::str::from_utf8(payload).unwrap_or_default();
            if h.opcode != OP_TEXT || !h.fin || new_session_id(text).is_none() {
                bail!("the first frame is not a new session's hello: {text:?}");
            }
            return Ok(buf.split_off(h.frame_len()));
        }
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the hello");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A host that answers one upgrade with `answer`; returns its address and the request
    /// it read.
    fn one_upgrade(answer: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let host = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut b = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                request.extend_from_slice(&b[..n]);
            }
            s.write_all(&answer).unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, host)
    }

    fn text_frame(text: &str) -> Vec<u8> {
        let mut f = vec![0x81, text.len() as u8];
        f.extend_from_slice(text.as_bytes());
        f
    }

    const SWITCHING: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                             Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n";

    #[test]
    fn a_session_upgrade_offers_the_subprotocol_and_reads_the_hello() {
        let hello = wasmroom_wire::session::hello("0123456789abcdef0123456789abcdef", false);
        let mut answer =
            format!("{SWITCHING}Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n").into_bytes();
        answer.extend(text_frame(&hello));
        answer.extend(text_frame("1:after"));
        let (addr, host) = one_upgrade(answer);
        let (_stream, rest) = handshake(addr, "h", "/ws/relay/d", true).unwrap();
        assert_eq!(rest, text_frame("1:after"));
        let request = host.join().unwrap();
        assert!(request.contains(&format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n")));
    }

    #[test]
    fn a_session_upgrade_without_the_subprotocol_or_the_hello_fails() {
        let answer = format!("{SWITCHING}\r\n").into_bytes();
        let (addr, _host) = one_upgrade(answer);
        assert!(handshake(addr, "h", "/d", true).is_err());

        let mut answer =
            format!("{SWITCHING}Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n").into_bytes();
        answer.extend(text_frame("1:not a hello"));
        let (addr, _host) = one_upgrade(answer);
        assert!(handshake(addr, "h", "/d", true).is_err());

        // A plain upgrade offers nothing and keeps what follows the head.
        let mut answer = format!("{SWITCHING}\r\n").into_bytes();
        answer.extend(text_frame("x"));
        let (addr, host) = one_upgrade(answer);
        let (_stream, rest) = handshake(addr, "h", "/d", false).unwrap();
        assert_eq!(rest, text_frame("x"));
        assert!(!host.join().unwrap().contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn the_subprotocol_header_is_found_in_any_case() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nsec-websocket-protocol: wasmroom.session.v1\r\n\r\n";
        assert!(names_subprotocol(head));
        assert!(names_subprotocol(
            b"HTTP/1.1 101 x\r\nSec-WebSocket-Protocol:wasmroom.session.v1\r\n\r\n"
        ));
        assert!(!names_subprotocol(
            b"HTTP/1.1 101 x\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        ));
        assert!(!names_subprotocol(b"HTTP/1.1 101 x\r\n\r\n"));
    }
}
