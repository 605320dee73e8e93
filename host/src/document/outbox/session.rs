//! A connection's session (docs/sessions.md), kept in its outbox because the outbox is
//! what outlives a socket: the numbers of both directions, and the replay buffer of data
//! messages the client has not acknowledged.
//!
//! The consumer's messages are numbered as they are queued ([`Outbox::push_in`]); each is
//! kept here, framed, with the journal batch it waits for, until the client acknowledges
//! it, so that a resume can queue it again behind the same gate. What the replay buffer
//! holds counts against the connection's bounds together with the send queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message as Frame;
use wasmroom_wire::session::DataPrefix;

use crate::config::FRAME_OVERHEAD;
use crate::document::outbox::{INLINE_MAX, Outbox};
use crate::store::{SavedFrame, SavedSession};

/// One data message sent and not acknowledged.
#[derive(Debug)]
struct Sent {
    seq: u64,
    /// As the consumer sent it (its number is written in front as it is queued): a
    /// broadcast's payload is shared by every recipient's replay buffer.
    frame: Frame,
    batch: u64,
    at: Instant,
    cost: usize,
}

/// The session of one connection.
#[derive(Debug)]
pub(super) struct Session {
    /// The session's id (what a client resumes it by).
    id: String,
    /// The last data message numbered for the client.
    sent: u64,
    /// Everything after `floor` not acknowledged, oldest first.
    replay: VecDeque<Sent>,
    replay_bytes: usize,
    /// Messages up to here were acknowledged or dropped by age: a resume from before it
    /// cannot be served.
    floor: u64,
    /// The last client data message applied.
    applied: u64,
    /// How long an unacknowledged message is kept.
    keep: Duration,
    /// Restored from a document that left its last host at this time (Unix ms): its
    /// grace runs from there.
    parked_at_ms: Option<u64>,
}

/// What to do with a client's data message, by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// The next one: apply it.
    Apply,
    /// Applied already (a resend after a resume): drop it, acknowledge again.
    Duplicate,
    /// Beyond the next one: a protocol error.
    Gap,
}

/// What a frame costs against the bounds (as the send queue counts it).
fn cost(payload: usize) -> usize {
    if payload <= INLINE_MAX {
        payload + 10
    } else {
        payload + FRAME_OVERHEAD
    }
}

impl Outbox {
    /// Makes this connection session `id`'s: its messages are numbered and kept until the
    /// client acknowledges them, at most `keep` each.
    pub fn start_session(&self, id: String, keep: Duration) {
        *self.session.borrow_mut() = Some(Box::new(Session {
            id,
            sent: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            floor: 0,
            applied: 0,
            keep,
            parked_at_ms: None,
        }));
    }

    /// [`Outbox::start_session`] for a connection with no socket (a replay rebuilding it):
    /// what the consumer sends it is kept for a resume, not queued.
    pub fn start_socketless_session(&self, id: String, keep: Duration) {
        self.start_session(id, keep);
        self.socketless.set(true);
    }

    /// The session's id, for a session's connection.
    pub fn session_id(&self) -> Option<String> {
        self.session.borrow().as_ref().map(|s| s.id.clone())
    }

    /// When the document that carried this session left its last host (Unix ms), if it
    /// was restored from such a snapshot.
    pub fn parked_at_ms(&self) -> Option<u64> {
        self.session.borrow().as_ref().and_then(|s| s.parked_at_ms)
    }

    /// Counts `n` more client messages applied (a replay of them).
    pub fn applied_more(&self, n: u64) {
        if let Some(s) = self.session.borrow_mut().as_mut() {
            s.applied += n;
        }
    }

    /// Whether this connection is a session's.
    pub fn is_session(&self) -> bool {
        self.session.borrow().is_some()
    }

    /// What a snapshot saves of this connection's session, as connection `connection`,
    /// carried at `now_ms` (0: taken while the document stays, so a replay after a crash
    /// gives it a fresh grace); `None` for a plain connection.
    pub fn saved_session(&self, connection: u64, now_ms: u64) -> Option<SavedSession> {
        let session = self.session.borrow();
        let s = session.as_ref()?;
        let replay = s
            .replay
            .iter()
            .map(|m| SavedFrame {
                seq: m.seq,
                binary: matches!(m.frame, Frame::Binary(_)),
                payload: m.frame.clone().into_data().to_vec(),
            })
            .collect();
        Some(SavedSession {
            connection,
            session: s.id.clone(),
            sent: s.sent,
            applied: s.applied,
            floor: s.floor,
            parked_at_ms: now_ms,
            replay,
        })
    }

    /// Makes this (new, socketless) connection the session `saved` a document carried
    /// from its last host, its messages kept at most `keep`. Returns `false`, and starts
    /// nothing, if a saved text message is not UTF-8 (the file was not written by us).
    pub fn restore_session(&self, saved: &SavedSession, keep: Duration) -> bool {
        let now = Instant::now();
        let mut replay = VecDeque::with_capacity(saved.replay.len());
        let mut replay_bytes = 0;
        for m in &saved.replay {
            let frame = if m.binary {
                Frame::Binary(Bytes::from(m.payload.clone()))
            } else {
                match String::from_utf8(m.payload.clone()) {
                    Ok(text) => Frame::Text(text.into()),
                    Err(_) => return false,
                }
            };
            let cost = cost(DataPrefix::new(m.seq, m.binary).as_bytes().len() + frame.len());
            replay_bytes += cost;
            replay.push_back(Sent {
                seq: m.seq,
                frame,
                batch: 0,
                at: now,
                cost,
            });
        }
        *self.session.borrow_mut() = Some(Box::new(Session {
            id: saved.session.clone(),
            sent: saved.sent,
            replay,
            replay_bytes,
            floor: saved.floor,
            applied: saved.applied,
            keep,
            parked_at_ms: (saved.parked_at_ms > 0).then_some(saved.parked_at_ms),
        }));
        self.socketless.set(true);
        true
    }

    /// A data message the consumer sends a session's connection while its document
    /// leaves the host (its socket is closing or gone): numbered and kept for the next
    /// host, not sent. Past the connection's bounds the kept messages are dropped, and a
    /// resume from before them fails as after any loss. Returns whether it was kept.
    pub(super) fn keep_for_next_host(&self, frame: &Frame) -> bool {
        if self.number(frame, 0).is_none() {
            return false;
        }
        let (bytes, frames) = self.replay_held();
        if bytes > self.max_bytes || frames > self.max_frames {
            let mut session = self.session.borrow_mut();
            let s = session.as_mut().expect("numbered: a session");
            s.replay.clear();
            s.replay_bytes = 0;
            s.floor = s.sent;
        }
        true
    }

    /// Numbers a consumer's data message for a session and keeps it for a resume;
    /// `None` for a plain connection or a frame that is not data.
    pub(super) fn number(&self, frame: &Frame, batch: u64) -> Option<DataPrefix> {
        let mut session = self.session.borrow_mut();
        let session = session.as_mut()?;
        let seq = session.sent + 1;
        let prefix = match frame {
            Frame::Text(_) => DataPrefix::new(seq, false),
            Frame::Binary(_) => DataPrefix::new(seq, true),
            _ => return None,
        };
        session.sent = seq;
        let now = Instant::now();
        // Kept only so long: a client that does not acknowledge cannot pin memory.
        while let Some(old) = session.replay.front()
            && now.duration_since(old.at) > session.keep
        {
            session.floor = old.seq;
            session.replay_bytes -= old.cost;
            session.replay.pop_front();
        }
        let cost = cost(prefix.as_bytes().len() + frame.len());
        session.replay_bytes += cost;
        session.replay.push_back(Sent {
            seq,
            frame: frame.clone(),
            batch,
            at: now,
            cost,
        });
        Some(prefix)
    }

    /// Bytes and frames the replay buffer holds (counted with the queue's).
    pub(super) fn replay_held(&self) -> (usize, usize) {
        self.session
            .borrow()
            .as_ref()
            .map_or((0, 0), |s| (s.replay_bytes, s.replay.len()))
    }

    /// The client acknowledged every data message up to `seq`.
    pub fn session_acked(&self, seq: u64) {
        let mut session = self.session.borrow_mut();
        let Some(session) = session.as_mut() else {
            return;
        };
        while let Some(old) = session.replay.front()
            && old.seq <= seq
        {
            session.replay_bytes -= old.cost;
            session.replay.pop_front();
        }
        session.floor = session.floor.max(seq.min(session.sent));
    }

    /// What to do with the client's data message `seq`, when the `waiting` messages after
    /// the last applied one are read and wait in a batch for their guest call.
    pub fn incoming(&self, seq: u64, waiting: u64) -> Incoming {
        let session = self.session.borrow();
        let applied = session.as_ref().map_or(0, |s| s.applied) + waiting;
        match seq {
            s if s <= applied => Incoming::Duplicate,
            s if s == applied + 1 => Incoming::Apply,
            _ => Incoming::Gap,
        }
    }

    /// The client's data message `seq` was applied.
    pub fn applied(&self, seq: u64) {
        if let Some(s) = self.session.borrow_mut().as_mut() {
            s.applied = seq;
        }
    }

    /// The last client data message applied (0: none).
    pub fn last_applied(&self) -> u64 {
        self.session.borrow().as_ref().map_or(0, |s| s.applied)
    }

    /// Whether a client that received every message up to `last` can resume: the replay
    /// buffer holds all after it, and the host sent that many.
    pub fn can_resume(&self, last: u64) -> bool {
        self.is_open()
            && self
                .session
                .borrow()
                .as_ref()
                .is_some_and(|s| s.floor <= last && last <= s.sent)
    }

    /// A new socket takes the session over: the old socket's queue is dropped (part of a
    /// frame included: the new socket starts at a frame boundary), then `hello` and every
    /// data message after `last` are queued again, each behind its journal batch.
    pub fn resume(&self, last: u64, hello: &str) {
        self.socketless.set(false);
        self.session_acked(last);
        self.drop_queue();
        self.task_waits.set(false);
        self.push_control(hello, 0);
        let again: Vec<(u64, Frame, u64)> = self
            .session
            .borrow()
            .as_ref()
            .map(|s| {
                s.replay
                    .iter()
                    .map(|m| (m.seq, m.frame.clone(), m.batch))
                    .collect()
            })
            .unwrap_or_default();
        for (seq, frame, batch) in again {
            let prefix = DataPrefix::new(seq, matches!(frame, Frame::Binary(_)));
            // Counted already: in the replay buffer.
            self.push_raw(&frame, prefix.as_bytes(), batch, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::IoSlice;
    use std::rc::Rc;

    fn written(outbox: &Outbox) -> Vec<u8> {
        let out = RefCell::new(Vec::new());
        while let Ok(Some(w)) = outbox.write_with(|slices: &[IoSlice<'_>]| {
            let mut out = out.borrow_mut();
            let n: usize = slices.iter().map(|s| s.len()).sum();
            for s in slices {
                out.extend_from_slice(s);
            }
            Ok(n)
        }) {
            if w.bytes == 0 {
                break;
            }
        }
        out.into_inner()
    }

    /// The payloads of unmasked server frames (all short here).
    fn payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = (bytes[at + 1] & 0x7f) as usize;
            out.push(bytes[at + 2..at + 2 + len].to_vec());
            at += 2 + len;
        }
        out
    }

    fn session_outbox() -> Rc<Outbox> {
        let outbox = Outbox::new(1 << 20, 1000);
        outbox.start_session("s".into(), Duration::from_secs(30));
        outbox
    }

    #[test]
    fn messages_are_numbered_and_resent_after_last() {
        let outbox = session_outbox();
        for text in ["a", "b", "c"] {
            assert!(outbox.push(&Frame::Text(text.into())));
        }
        assert!(outbox.push(&Frame::Binary(Bytes::from_static(b"\x01"))));
        let first = payloads(&written(&outbox));
        assert_eq!(
            first[..3],
            [b"1:a".to_vec(), b"2:b".to_vec(), b"3:c".to_vec()]
        );
        assert_eq!(first[3], [0, 0, 0, 0, 0, 0, 0, 4, 1]);
        assert!(outbox.can_resume(1));
        outbox.resume(1, "!hello x resumed");
        let again = payloads(&written(&outbox));
        assert_eq!(again[0], b"!hello x resumed");
        assert_eq!(again[1..3], [b"2:b".to_vec(), b"3:c".to_vec()]);
        assert_eq!(again.len(), 4);
        // Acknowledged messages are gone: resuming from before them cannot be served.
        assert!(!outbox.can_resume(0));
        assert!(!outbox.can_resume(5), "beyond what was sent");
    }

    #[test]
    fn acknowledged_messages_leave_the_replay_buffer() {
        let outbox = session_outbox();
        for _ in 0..10 {
            outbox.push(&Frame::Text("x".into()));
        }
        written(&outbox);
        assert_eq!(outbox.replay_held().1, 10);
        outbox.session_acked(7);
        assert_eq!(outbox.replay_held().1, 3);
        outbox.session_acked(10);
        assert_eq!(outbox.replay_held(), (0, 0));
    }

    #[test]
    fn the_replay_buffer_counts_against_the_bounds() {
        let outbox = Outbox::new(1 << 20, 10);
        outbox.start_session("s".into(), Duration::from_secs(30));
        for _ in 0..9 {
            assert!(outbox.push(&Frame::Text("x".into())));
            written(&outbox);
        }
        // Written, not acknowledged: nine in the replay buffer, and the tenth counts in
        // the queue as well.
        assert!(!outbox.push(&Frame::Text("x".into())));
        assert!(!outbox.is_open());
    }

    #[test]
    fn a_saved_session_resumes_where_it_left_on_another_outbox() {
        let outbox = session_outbox();
        for text in ["a", "b"] {
            outbox.push(&Frame::Text(text.into()));
        }
        outbox.push(&Frame::Binary(Bytes::from_static(b"\x01")));
        written(&outbox);
        outbox.session_acked(1);
        outbox.applied(4);
        // The document leaves: what the consumer sends now is kept, not queued.
        outbox.close_leaving(1012, "moving");
        assert!(outbox.push(&Frame::Text("late".into())));
        assert!(written(&outbox).len() < 10, "only the close frame at most");
        let saved = outbox.saved_session(9, 123).unwrap();
        assert_eq!((saved.sent, saved.applied, saved.floor), (4, 4, 1));
        assert_eq!(saved.replay.len(), 3);

        let next = Outbox::new(1 << 20, 1000);
        assert!(next.restore_session(&saved, Duration::from_secs(30)));
        assert!(next.can_resume(2) && !next.can_resume(0));
        assert_eq!(next.incoming(4, 0), Incoming::Duplicate);
        assert_eq!(next.incoming(5, 0), Incoming::Apply);
        next.resume(2, "!hello s resumed");
        let again = payloads(&written(&next));
        assert_eq!(again[1], [0, 0, 0, 0, 0, 0, 0, 3, 1]);
        assert_eq!(again[2], b"4:late");
        assert_eq!(again.len(), 3);
        // Numbering goes on after what the last host numbered.
        next.push(&Frame::Text("new".into()));
        assert_eq!(payloads(&written(&next)), [b"5:new".to_vec()]);
    }

    #[test]
    fn what_a_leaving_session_keeps_is_bounded() {
        let outbox = Outbox::new(1 << 20, 4);
        outbox.start_session("s".into(), Duration::from_secs(30));
        outbox.close_leaving(1012, "moving");
        for _ in 0..5 {
            outbox.push(&Frame::Text("x".into()));
        }
        // Four fit its bounds; the fifth overflows them, and all are let go: a resume
        // from before the fifth then fails rather than skip what was dropped.
        let saved = outbox.saved_session(1, 0).unwrap();
        assert_eq!((saved.sent, saved.floor), (5, 5));
        assert!(saved.replay.is_empty());
    }

    #[test]
    fn client_numbers_are_checked() {
        let outbox = session_outbox();
        assert_eq!(outbox.incoming(2, 0), Incoming::Gap);
        assert_eq!(outbox.incoming(1, 0), Incoming::Apply);
        outbox.applied(1);
        assert_eq!(outbox.incoming(1, 0), Incoming::Duplicate);
        assert_eq!(outbox.incoming(2, 0), Incoming::Apply);
        // 2 and 3 read, waiting for their call: the next is 4, 3 is a resend.
        assert_eq!(outbox.incoming(4, 2), Incoming::Apply);
        assert_eq!(outbox.incoming(3, 2), Incoming::Duplicate);
        assert_eq!(outbox.incoming(5, 2), Incoming::Gap);
    }
}
