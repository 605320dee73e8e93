//! The sessions a snapshot carries (format version 4): the `wasmroom.session.v1`
//! connections of a document that left its host gracefully (a hand-back, a shutdown), so
//! that the host that opens it next can resume them (docs/sessions.md). Only a leaving
//! document's snapshot holds any.
//!
//! After the connections, little-endian:
//!
//! ```text
//! u32, then each:
//!   u64                        the connection's id
//!   u32 + bytes                the session id
//!   u64, u64, u64              the last message numbered for the client, the last client
//!                              message applied, the floor (a resume from before it fails)
//!   u64                        when it was carried, Unix milliseconds
//!   u32, then each:            the messages the client did not acknowledge, oldest first
//!     u64, u8, u32 + bytes     number, 1 if binary, the payload as the consumer sent it
//! ```

use super::Reader;

/// One session carried to the next host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// The connection's id in its document.
    pub connection: u64,
    /// The session's id (32 hex digits).
    pub session: String,
    /// The last data message numbered for the client.
    pub sent: u64,
    /// The last client data message applied.
    pub applied: u64,
    /// Messages up to here were acknowledged or dropped: a resume from before it fails.
    pub floor: u64,
    /// When its document left, Unix milliseconds: its grace runs from there.
    pub parked_at_ms: u64,
    /// Data messages sent and not acknowledged, oldest first.
    pub replay: Vec<SavedFrame>,
}

/// A data message of a session's replay buffer: its number, and its payload as the
/// consumer sent it (the number goes in front when it is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFrame {
    pub seq: u64,
    pub binary: bool,
    pub payload: Vec<u8>,
}

pub(super) fn put(out: &mut Vec<u8>, sessions: &[SavedSession]) {
    out.extend_from_slice(&(sessions.len() as u32).to_le_bytes());
    for s in sessions {
        out.extend_from_slice(&s.connection.to_le_bytes());
        super::put_bytes(out, s.session.as_bytes());
        for n in [s.sent, s.applied, s.floor, s.parked_at_ms] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(s.replay.len() as u32).to_le_bytes());
        for frame in &s.replay {
            out.extend_from_slice(&frame.seq.to_le_bytes());
            out.push(u8::from(frame.binary));
            super::put_bytes(out, &frame.payload);
        }
    }
}

pub(super) fn read(r: &mut Reader<'_>) -> Result<Vec<SavedSession>, String> {
    let count = r.u32()? as usize;
    let mut sessions = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let connection = r.u64()?;
        let session = r.string()?;
        let (sent, applied, floor, parked_at_ms) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        if floor > sent {
            return Err(format!(
                "session {session}: floor {floor} beyond {sent} sent"
            ));
        }
        let frames = r.u32()? as usize;
        let mut replay = Vec::with_capacity(frames.min(4096));
        for _ in 0..frames {
            let seq = r.u64()?;
            let binary = match r.take(1)?[0] {
                0 => false,
                1 => true,
                _ => return Err("a saved frame's kind is neither 0 nor 1".into()),
            };
            let len = r.u32()? as usize;
            let payload = r.take(len)?.to_vec();
            if seq <= floor || seq > sent {
                return Err(format!(
                    "session {session}: saved message {seq} outside {floor}..={sent}"
                ));
            }
            replay.push(SavedFrame {
                seq,
                binary,
                payload,
            });
        }
        sessions.push(SavedSession {
            connection,
            session,
            sent,
            applied,
            floor,
            parked_at_ms,
            replay,
        });
    }
    Ok(sessions)
}
