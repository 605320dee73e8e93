//! The frames the lean generator's clients send, masked once per run: a message is a copy
//! of its template with the 16-digit send time rewritten (and, with a session, its number
//! written in front: `session.rs`).

use crate::conn::Conn;
use crate::frame::{MASK, OP_TEXT, apply_mask, encode_masked, write_hex16};
use crate::session::{NumberedTemplate, Stamps};

/// The message every client sends: `size` bytes, the first 16 the send time in hex.
fn message(size: usize) -> Vec<u8> {
    let mut payload = vec![b'x'; size];
    payload[..16].fill(b'0');
    payload
}

/// How every message is framed, masked once: only the 16 timestamp digits are rewritten
/// per tick (from `masked_stamps`).
pub(crate) enum Frames {
    /// A plain frame, the timestamp at `stamp_at`.
    Plain { template: Vec<u8>, stamp_at: usize },
    /// Numbered for a session.
    Numbered(NumberedTemplate),
}

impl Frames {
    pub(crate) fn new(size: usize, session: bool) -> Self {
        let message = message(size);
        if session {
            return Self::Numbered(NumberedTemplate::new(&message));
        }
        let mut template = Vec::new();
        encode_masked(&mut template, OP_TEXT, MASK, &message);
        let stamp_at = template.len() - size;
        Self::Plain { template, stamp_at }
    }

    /// Appends `conn`'s next message, sent at `stamps`; returns the bytes its number took.
    pub(crate) fn push(&self, conn: &mut Conn, stamps: &Stamps) -> usize {
        match self {
            Self::Plain { template, stamp_at } => {
                conn.out.extend_from_slice(template);
                let at = conn.out.len() - template.len() + stamp_at;
                conn.out[at..at + 16].copy_from_slice(&stamps[0]);
                0
            }
            Self::Numbered(template) => {
                let session = conn
                    .session
                    .as_mut()
                    .expect("numbered frames go to sessions");
                template.push(&mut conn.out, session.next_seq(), stamps)
            }
        }
    }
}

/// A send time as the 16 first bytes of a message, masked for each offset (mod 4) the
/// message can start at in its payload (0: a plain message).
pub(crate) fn masked_stamps(ns: u64) -> Stamps {
    let mut plain = [0u8; 16];
    write_hex16(ns, &mut plain);
    std::array::from_fn(|k| {
        let mut stamp = plain;
        apply_mask(&mut stamp, MASK, k);
        stamp
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::read_hex16;
    use crate::frame::tests::decode_masked;

    #[test]
    fn stamped_templates_are_masked_text_frames_with_the_send_time() {
        for size in [16, 100, 200] {
            let Frames::Plain { template, stamp_at } = Frames::new(size, false) else {
                panic!("plain frames expected");
            };
            let mut frame = template.clone();
            frame[stamp_at..stamp_at + 16].copy_from_slice(&masked_stamps(0x1234_5678_9abc)[0]);
            // What a server sees: unmask the payload.
            assert_eq!(frame[0], 0x80 | OP_TEXT);
            assert_eq!(&frame[stamp_at - 4..stamp_at], &MASK);
            let (_, payload) = decode_masked(&frame);
            assert_eq!(payload.len(), size);
            assert_eq!(read_hex16(&payload), Some(0x1234_5678_9abc));
            assert!(payload[16..].iter().all(|&b| b == b'x'));
        }
    }
}
