//! One socket of the lean generator: its reusable out buffer written in one `write`, and
//! its reads parsed in place from one shared buffer (a socket keeps only the bytes of a
//! frame that has not fully arrived). With a session the host's numbers are checked and
//! stripped here (`session.rs`).

use std::io::{self, Read, Write};

use hdrhistogram::Histogram;
use mio::net::TcpStream;

use crate::frame::{
    MASK, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, ParseError,
    encode_masked, parse_header, read_hex16,
};
use crate::session::{Session, SessionStats};

pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// The start of a frame that has not fully arrived.
    pub(crate) partial: Vec<u8>,
    /// Frames for the server; `out[written..]` is not written yet.
    pub(crate) out: Vec<u8>,
    written: usize,
    /// Bytes written to the socket so far.
    pub(crate) bytes_written: u64,
    /// Messages sent so far, and where in each tick this client writes (0..1): the
    /// clients are spread over the tick so that they do not write in lockstep.
    pub(crate) sent: u64,
    pub(crate) phase: f64,
    pub(crate) open: bool,
    /// This client sent its close frame: the server's close is not answered.
    pub(crate) closing: bool,
    /// With `--session`: the numbers each way.
    pub(crate) session: Option<Session>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, early: Vec<u8>, out_capacity: usize, phase: f64) -> Self {
        Self {
            stream,
            partial: early,
            out: Vec::with_capacity(out_capacity),
            written: 0,
            bytes_written: 0,
            sent: 0,
            phase,
            open: true,
            closing: false,
            session: None,
        }
    }

    /// One `write` of what is pending (the rest waits for the socket to be writable).
    pub(crate) fn flush(&mut self) {
        if !self.open || self.written == self.out.len() {
            return;
        }
        loop {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    self.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.open = false,
            }
            break;
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }
}

/// What the run received, over every socket.
pub(crate) struct Received {
    pub(crate) delivered: u64,
    /// Delivery latencies in us (send time in the message to its read).
    pub(crate) latency: Histogram<u64>,
    /// `read` calls that returned data, and the bytes they returned.
    pub(crate) reads: u64,
    pub(crate) bytes_read: u64,
    /// Connections the server closed or broke.
    pub(crate) closed: u64,
    pub(crate) protocol_errors: u64,
    /// With `--session`: numbers, acknowledgements and errors.
    pub(crate) session: SessionStats,
}

impl Received {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            delivered: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            reads: 0,
            bytes_read: 0,
            closed: 0,
            protocol_errors: 0,
            session: SessionStats::default(),
        })
    }
}

/// Handles the complete frames at the start of `buf` (received at `now_ns`); returns how
/// many bytes they took and whether the server closed the connection. Pings and the
/// close (unless `closing`: this side closed first) are answered into `out`.
pub(crate) fn consume(
    buf: &[u8],
    now_ns: u64,
    out: &mut Vec<u8>,
    mut session: Option<&mut Session>,
    closing: bool,
    received: &mut Received,
) -> Result<(usize, bool), ParseError> {
    let mut at = 0;
    while let Some(h) = parse_header(&buf[at..])? {
        let end = at + h.frame_len();
        if end > buf.len() {
            break;
        }
        let payload = &buf[at + h.payload_at..end];
        match h.opcode {
            OP_TEXT | OP_BINARY => {
                let message = match session.as_deref_mut() {
                    None => Some(payload),
                    Some(s) => s
                        .receive(h.opcode, payload, now_ns, &mut received.session)
                        .map(|start| &payload[start..]),
                };
                if let Some(message) = message {
                    if let Some(sent_ns) = read_hex16(message) {
                        let us = (now_ns.saturating_sub(sent_ns) / 1000).max(1);
                        let _ = received.latency.record(us);
                    }
                    received.delivered += u64::from(h.fin);
                }
            }
            OP_CONTINUATION => received.delivered += u64::from(h.fin),
            OP_PING => encode_masked(out, OP_PONG, MASK, payload),
            OP_CLOSE => {
                if !closing {
                    encode_masked(out, OP_CLOSE, MASK, payload.get(..2).unwrap_or_default());
                }
                return Ok((end, true));
            }
            _ => {}
        }
        at = end;
    }
    Ok((at, false))
}

/// Reads what `conn` has into `scratch` (after the partial frame it kept), handles the
/// complete frames and keeps the incomplete rest; `now_ns` reads the run's clock.
pub(crate) fn read_ready(
    conn: &mut Conn,
    scratch: &mut Vec<u8>,
    now_ns: impl Fn() -> u64,
    received: &mut Received,
) {
    let mut filled = conn.partial.len();
    scratch[..filled].copy_from_slice(&conn.partial);
    conn.partial.clear();
    let mut closed = false;
    loop {
        let space = scratch.len() - filled;
        let n = match conn.stream.read(&mut scratch[filled..]) {
            Ok(0) => {
                closed = true;
                0
            }
            Ok(n) => {
                received.reads += 1;
                received.bytes_read += n as u64;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                closed = true;
                0
            }
        };
        filled += n;
        let consumed = consume(
            &scratch[..filled],
            now_ns(),
            &mut conn.out,
            conn.session.as_mut(),
            conn.closing,
            received,
        );
        let (used, close) = consumed.unwrap_or_else(|_| {
            received.protocol_errors += 1;
            (filled, true)
        });
        scratch.copy_within(used..filled, 0);
        filled -= used;
        if close {
            closed = true;
        }
        // A read that did not fill the buffer emptied the socket: with edge-triggered
        // readiness, later data raises a new event.
        if closed || n < space {
            break;
        }
        if filled == scratch.len() {
            // One frame larger than the buffer.
            scratch.resize(2 * scratch.len(), 0);
        }
    }
    if closed {
        conn.flush();
        conn.open = false;
        return;
    }
    conn.partial.extend_from_slice(&scratch[..filled]);
    conn.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_counts_messages_answers_pings_and_keeps_partial_frames() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&[0x81, 20]);
        buf.extend_from_slice(b"00000000000003e8xxxx"); // sent at 1000 ns
        buf.extend_from_slice(&[0x89, 2, b'h', b'i']);
        buf.extend_from_slice(&[0x01, 16]); // a fragment, then its end
        buf.extend_from_slice(b"00000000000007d0");
        buf.extend_from_slice(&[0x80, 1, b'z']);
        buf.extend_from_slice(&[0x81, 126, 0, 200, b'0']); // incomplete
        let mut out = Vec::new();
        let mut received = Received::new().unwrap();
        let (used, closed) =
            consume(&buf, 5_001_000, &mut out, None, false, &mut received).unwrap();
        assert_eq!(used, buf.len() - 5);
        assert!(!closed);
        assert_eq!(received.delivered, 2);
        assert_eq!(received.latency.len(), 2);
        assert!(received.latency.equivalent(received.latency.max(), 5000));
        assert_eq!(out[0], 0x80 | OP_PONG);
        assert_eq!(out.len(), 2 + 4 + 2);

        let mut out = Vec::new();
        let close = [0x88, 2, 0x03, 0xe8, 0x81, 0];
        let (used, closed) = consume(&close, 0, &mut out, None, false, &mut received).unwrap();
        assert_eq!((used, closed), (4, true));
        assert_eq!(out[0], 0x80 | OP_CLOSE);
        // After this side's own close frame, the server's close is not answered.
        let mut out = Vec::new();
        assert_eq!(
            consume(&close, 0, &mut out, None, true, &mut received).unwrap(),
            (4, true)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn with_a_session_numbers_are_stripped_and_acks_are_not_deliveries() {
        let mut buf = Vec::new();
        let data = b"1:00000000000003e8xxxx";
        buf.extend_from_slice(&[0x81, data.len() as u8]);
        buf.extend_from_slice(data);
        buf.extend_from_slice(&[0x81, 6]);
        buf.extend_from_slice(b"!ack 0");
        let data = b"3:00000000000003e8xxxx"; // 2 is missing
        buf.extend_from_slice(&[0x81, data.len() as u8]);
        buf.extend_from_slice(data);
        let mut session = Session::default();
        let mut received = Received::new().unwrap();
        let mut out = Vec::new();
        let (used, closed) = consume(
            &buf,
            2_001_000,
            &mut out,
            Some(&mut session),
            false,
            &mut received,
        )
        .unwrap();
        assert_eq!((used, closed), (buf.len(), false));
        assert_eq!(received.delivered, 2);
        // The timestamp was read after the number: 2 ms ago.
        assert!(received.latency.equivalent(received.latency.max(), 2000));
        let s = &received.session;
        assert_eq!(
            (s.acks_received, s.gaps, s.prefix_bytes_received),
            (1, 1, 4)
        );
        assert!(
            out.is_empty(),
            "acknowledgements wait for the client's next write"
        );
    }
}
