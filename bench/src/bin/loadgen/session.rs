//! The client side of the session subprotocol `wasmroom.session.v1` (docs/sessions.md)
//! for the lean generator (`run --session`): data messages numbered as they are sent,
//! the host's numbers checked and stripped as they arrive, and `!ack` sent the way
//! `clients/js` does. Parsing and the frames' text come from `wasmroom_wire::session`,
//! the host's own reader, so that the generator and the host cannot disagree on them.
//!
//! What differs from `clients/js`, and why: an acknowledgement is due when it would be
//! (32 messages after the last one, or 100 ms after the first message not yet
//! acknowledged; as many `!ack` frames as the client sends), but it goes out with the
//! client's next write (its messages', or its turn every tick, 50 ms, between them)
//! instead of in a `write` of its own at once: a `write` costs the generator ~10 us on
//! loopback, and one per acknowledgement would take its core at the loads the ceiling
//! sweep reaches. The host reads the same frames, up to a tick later and in fewer TCP
//! segments.

use wasmroom_wire::session::{self as frames, ClientText};

use crate::frame::{MASK, OP_BINARY, OP_TEXT, apply_mask, encode_masked, push_masked_header};

/// The client acknowledges after this many data messages (`clients/js`'s `ackEvery`)...
const ACK_EVERY: u64 = 32;
/// ...or this long after the first one not yet acknowledged (`ackDelayMs`), in ns.
const ACK_DELAY_NS: u64 = 100_000_000;
/// A data message's number has at most 20 digits (u64): its colon is within this many
/// bytes of the start.
const MAX_PREFIX: usize = 21;

/// What the sessions of one run saw, summed over its clients.
#[derive(Debug, Default)]
pub(crate) struct SessionStats {
    /// Data messages from the host numbered beyond the next one (some were skipped).
    pub(crate) gaps: u64,
    /// Data messages from the host numbered at most the last one received.
    pub(crate) duplicates: u64,
    /// Frames that are neither data nor `!ack`, and acknowledgements from the host that go
    /// backwards or beyond what was sent.
    pub(crate) malformed: u64,
    /// `!ack` frames sent by the clients and received from the host.
    pub(crate) acks_sent: u64,
    pub(crate) acks_received: u64,
    /// Bytes of the `!ack` frames each way, WebSocket headers included.
    pub(crate) ack_bytes_sent: u64,
    pub(crate) ack_bytes_received: u64,
    /// Bytes of the numbers (digits and colon) on the data messages received and sent.
    pub(crate) prefix_bytes_received: u64,
    pub(crate) prefix_bytes_sent: u64,
}

impl SessionStats {
    pub(crate) fn errors(&self) -> u64 {
        self.gaps + self.duplicates + self.malformed
    }
}

/// One client's session: the numbers each way and the acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// The last data message sent, and the last one the host acknowledged.
    sent: u64,
    host_acked: u64,
    /// The last data message received, and the last one this client acknowledged.
    received: u64,
    acked: u64,
    /// When an acknowledgement falls due by time (ns on the run's clock), if one is pending.
    ack_at: Option<u64>,
    /// `!ack` frames due, masked, waiting for the client's next write, and how many.
    acks: Vec<u8>,
    acks_queued: u64,
}

impl Session {
    /// The number of the next data message, taken.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// Data messages sent that the host has not acknowledged.
    pub(crate) fn unacked(&self) -> u64 {
        self.sent - self.host_acked
    }

    /// Reads a text or binary frame from the host, received at `now_ns`: for a data
    /// message, where in `payload` the message starts (after its number); `None` for an
    /// acknowledgement or a frame it counted as malformed.
    pub(crate) fn receive(
        &mut self,
        opcode: u8,
        payload: &[u8],
        now_ns: u64,
        stats: &mut SessionStats,
    ) -> Option<usize> {
        let read = match opcode {
            OP_TEXT => host_text(payload),
            OP_BINARY => frames::client_binary(payload).map(|seq| ClientText::Data {
                seq,
                start: frames::BINARY_PREFIX,
            }),
            _ => Err(frames::FrameError::Malformed),
        };
        match read {
            Ok(ClientText::Data { seq, start }) => {
                if seq <= self.received {
                    stats.duplicates += 1;
                    return Some(start);
                }
                if seq > self.received + 1 {
                    stats.gaps += 1;
                }
                self.received = seq;
                stats.prefix_bytes_received += start as u64;
                if self.received - self.acked >= ACK_EVERY {
                    self.queue_ack();
                } else if self.ack_at.is_none() {
                    self.ack_at = Some(now_ns + ACK_DELAY_NS);
                }
                Some(start)
            }
            Ok(ClientText::Ack(n)) => {
                stats.acks_received += 1;
                // The frame's header: 2 bytes for a payload under 126 bytes.
                stats.ack_bytes_received += 2 + payload.len() as u64;
                if n < self.host_acked || n > self.sent {
                    stats.malformed += 1;
                } else {
                    self.host_acked = n;
                }
                None
            }
            Err(_) => {
                stats.malformed += 1;
                None
            }
        }
    }

    /// Appends to `out` the acknowledgements due at `now_ns` (the one the delay made due
    /// included), counted as sent; whether there were any.
    pub(crate) fn take_acks(
        &mut self,
        now_ns: u64,
        out: &mut Vec<u8>,
        stats: &mut SessionStats,
    ) -> bool {
        if self.ack_at.is_some_and(|at| now_ns >= at) {
            self.queue_ack();
        }
        if self.acks.is_empty() {
            return false;
        }
        stats.acks_sent += self.acks_queued;
        stats.ack_bytes_sent += self.acks.len() as u64;
        self.acks_queued = 0;
        out.extend_from_slice(&self.acks);
        self.acks.clear();
        true
    }

    /// Acknowledges everything received so far (as `clients/js`'s `sendAck`).
    fn queue_ack(&mut self) {
        self.ack_at = None;
        if self.received > self.acked {
            encode_masked(
                &mut self.acks,
                OP_TEXT,
                MASK,
                frames::ack(self.received).as_bytes(),
            );
            self.acked = self.received;
            self.acks_queued += 1;
        }
    }
}

/// Reads a text frame from the host with the host's own reader of session text (data
/// and `!ack` are written alike both ways). Only the number is read as text, so that
/// the message is not validated again per delivery.
fn host_text(payload: &[u8]) -> Result<ClientText, frames::FrameError> {
    let head = &payload[..payload.len().min(MAX_PREFIX)];
    let end = head
        .iter()
        .position(|&b| b == b':')
        .map_or(payload.len(), |colon| colon + 1);
    let text = std::str::from_utf8(&payload[..end]).map_err(|_| frames::FrameError::Malformed)?;
    frames::client_text(text)
}

/// The id in the hello of a new session (`!hello <id> new`, the host's first frame on a
/// session socket), if `text` is one.
pub(crate) fn new_session_id(text: &str) -> Option<&str> {
    let id = text.strip_prefix("!hello ")?.split(' ').next()?;
    (frames::is_session_id(id) && text == frames::hello(id, false)).then_some(id)
}

/// The send time masked at each of the four offsets a message can start at (after a
/// number of any length): `[k]` is for a message starting at byte `k` (mod 4) of the
/// payload.
pub(crate) type Stamps = [[u8; 16]; 4];

/// A numbered text message of `size` bytes, pre-masked: the message part is masked once
/// for each offset its number can leave it at, so that a frame is its header, its masked
/// number, a copy and the 16 timestamp bytes.
#[derive(Debug)]
pub(crate) struct NumberedTemplate {
    /// The message masked from mask offset `k`.
    masked: [Vec<u8>; 4],
}

impl NumberedTemplate {
    pub(crate) fn new(message: &[u8]) -> Self {
        let masked = std::array::from_fn(|k| {
            let mut m = message.to_vec();
            apply_mask(&mut m, MASK, k);
            m
        });
        Self { masked }
    }

    /// Appends data message `seq` (its send time as `stamps`) to `out`; returns the
    /// bytes its number took.
    pub(crate) fn push(&self, out: &mut Vec<u8>, seq: u64, stamps: &Stamps) -> usize {
        let mut digits = [0u8; MAX_PREFIX];
        let prefix = write_prefix(seq, &mut digits);
        let message = &self.masked[prefix.len() % 4];
        push_masked_header(out, OP_TEXT, MASK, prefix.len() + message.len());
        let start = out.len();
        out.extend_from_slice(prefix);
        apply_mask(&mut out[start..], MASK, 0);
        let at = out.len();
        out.extend_from_slice(message);
        out[at..at + 16].copy_from_slice(&stamps[prefix.len() % 4]);
        prefix.len()
    }
}

/// `seq` in decimal and a colon, as `frames::text_data` writes it, without allocating.
fn write_prefix(mut seq: u64, buf: &mut [u8; MAX_PREFIX]) -> &[u8] {
    let mut at = MAX_PREFIX - 1;
    buf[at] = b':';
    loop {
        at -= 1;
        buf[at] = b'0' + (seq % 10) as u8;
        seq /= 10;
        if seq == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::decode_masked;
    use crate::frame::write_hex16;

    fn stamps(ns: u64) -> Stamps {
        let mut plain = [0u8; 16];
        write_hex16(ns, &mut plain);
        std::array::from_fn(|k| {
            let mut s = plain;
            apply_mask(&mut s, MASK, k);
            s
        })
    }

    #[test]
    fn numbered_frames_are_what_the_host_reads() {
        let mut message = vec![b'x'; 100];
        message[..16].fill(b'0');
        let template = NumberedTemplate::new(&message);
        for seq in [1, 9, 10, 99, 100, 12_345, 999_999_999, u64::MAX] {
            let mut out = Vec::new();
            let took = template.push(&mut out, seq, &stamps(0xabc));
            let (opcode, payload) = decode_masked(&out);
            let mut expected = message.clone();
            expected[..16].copy_from_slice(b"0000000000000abc");
            let expected = frames::text_data(seq, std::str::from_utf8(&expected).unwrap());
            assert_eq!(opcode, OP_TEXT);
            assert_eq!(payload, expected.as_bytes(), "seq {seq}");
            assert_eq!(took, seq.to_string().len() + 1);
            let text = std::str::from_utf8(&payload).unwrap();
            assert_eq!(
                frames::client_text(text),
                Ok(ClientText::Data { seq, start: took })
            );
        }
    }

    #[test]
    fn numbers_are_checked_and_acknowledged_like_clients_js() {
        let mut s = Session::default();
        let mut stats = SessionStats::default();
        let data = |seq: u64| format!("{seq}:0000000000000001xyz").into_bytes();
        assert_eq!(s.receive(OP_TEXT, &data(1), 0, &mut stats), Some(2));
        // Nothing due before 100 ms, then one ack of everything received.
        let mut out = Vec::new();
        assert!(!s.take_acks(ACK_DELAY_NS - 1, &mut out, &mut stats));
        for seq in 2..=5 {
            s.receive(OP_TEXT, &data(seq), 1, &mut stats);
        }
        assert!(s.take_acks(ACK_DELAY_NS, &mut out, &mut stats));
        assert_eq!(decode_masked(&out), (OP_TEXT, b"!ack 5".to_vec()));
        // 32 messages after the last ack: one due at once, one `!ack` per 32.
        for seq in 6..=69 {
            s.receive(OP_TEXT, &data(seq), 2, &mut stats);
        }
        let mut out = Vec::new();
        assert!(s.take_acks(3, &mut out, &mut stats));
        let (_, first) = decode_masked(&out[..2 + 4 + 7]);
        let (_, second) = decode_masked(&out[2 + 4 + 7..]);
        assert_eq!((first, second), (b"!ack 37".to_vec(), b"!ack 69".to_vec()));
        assert_eq!(stats.acks_sent, 3);
        // Each a masked frame: 2 bytes of header, 4 of mask, then `!ack <n>`.
        assert_eq!(stats.ack_bytes_sent, (6 + 6) + 2 * (6 + 7));
        assert_eq!(stats.errors(), 0);
        // A duplicate and a gap are errors; the message still starts after its number.
        assert_eq!(s.receive(OP_TEXT, &data(69), 4, &mut stats), Some(3));
        assert_eq!(s.receive(OP_TEXT, &data(71), 4, &mut stats), Some(3));
        assert_eq!((stats.duplicates, stats.gaps), (1, 1));
        // Binary data: 8 bytes of number.
        let mut binary = 72u64.to_be_bytes().to_vec();
        binary.extend_from_slice(b"0000000000000001");
        assert_eq!(s.receive(OP_BINARY, &binary, 4, &mut stats), Some(8));
        assert_eq!(stats.errors(), 2);
    }

    #[test]
    fn only_a_new_sessions_hello_is_one() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(new_session_id(&frames::hello(id, false)), Some(id));
        assert_eq!(new_session_id(&frames::hello(id, true)), None);
        assert_eq!(new_session_id("!hello 0123 new"), None);
        assert_eq!(new_session_id(&format!("!hello {id} new x")), None);
        assert_eq!(new_session_id("1:x"), None);
    }

    #[test]
    fn host_acks_count_and_bad_frames_are_malformed() {
        let mut s = Session::default();
        let mut stats = SessionStats::default();
        for _ in 0..3 {
            s.next_seq();
        }
        assert_eq!(s.receive(OP_TEXT, b"!ack 2", 0, &mut stats), None);
        assert_eq!(
            (s.unacked(), stats.acks_received, stats.ack_bytes_received),
            (1, 1, 8)
        );
        for bad in [
            &b"!ack 1"[..],
            b"!ack 4",
            b"!hello 0123 new",
            b"hello",
            b"01:x",
            b"",
        ] {
            assert_eq!(s.receive(OP_TEXT, bad, 0, &mut stats), None, "{bad:?}");
        }
        assert_eq!(s.receive(OP_BINARY, &[0; 7], 0, &mut stats), None);
        assert_eq!(stats.malformed, 7);
        assert_eq!(s.unacked(), 1);
    }
}
