//! Sessions that travel with their document (docs/sessions.md, "a graceful move"): when
//! the document leaves this host (a hand-back, a shutdown), a session's socket closes with
//! 1012 but the consumer is not told: the connection stays open as far as it knows, what
//! it sends the connection is numbered and kept, and the document's last snapshot carries
//! the session (its numbers and its unacknowledged messages). The host that opens the
//! document next attaches the connection again, without a socket, and the client resumes
//! it there as after a network blip.
//!
//! In journal mode every checkpoint carries the document's sessions, and the journal
//! records which connection is a session's: a replay after a crash or a takeover numbers
//! what the consumer sent each one again, exactly as it was numbered live, and counts
//! what each client had applied, so their clients resume on the host that reopens the
//! document. In checkpoint mode only a leaving document's snapshot carries sessions: after
//! a crash its clients start new sessions.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use crate::document::live::Document;
use crate::document::outbox::Outbox;
use crate::guest::clock::unix_ms;
use crate::store::{SavedSession, Snapshot};

/// A session a document carried from its last host, its connection attached again.
#[derive(Debug)]
pub struct Carried {
    /// The connection's id in the document.
    pub connection: u64,
    /// The session's id.
    pub session: String,
    pub outbox: Rc<Outbox>,
    /// When its last host let it go (Unix ms): its grace runs from there; `None` for a
    /// session rebuilt after a crash, whose grace starts at the reopen.
    pub parked_at_ms: Option<u64>,
}

impl Document {
    /// The socket of session connection `id` ended because the document is leaving: the
    /// connection stays (the consumer hears nothing), its outbox keeps numbering what the
    /// consumer sends it, and it no longer holds the document's departure
    /// ([`Document::connections_gone`]).
    pub fn carry(&mut self, id: u64) {
        if self.outboxes.contains_key(&id) && self.carried.insert(id) {
            self.notify_if_gone();
        }
    }

    /// Whether every connection left is a carried session's.
    pub(super) fn only_carried_left(&self) -> bool {
        self.outboxes.len() == self.carried.len()
    }

    /// The sessions a snapshot carries: a leaving document's (stamped with the time it
    /// leaves), and in journal mode every checkpoint's (its replay goes on from them).
    pub(super) fn sessions_to_carry(&self) -> Vec<SavedSession> {
        if self.retired || !(self.leaving || self.journaled) {
            return Vec::new();
        }
        let now_ms = if self.leaving { unix_ms() } else { 0 };
        let mut sessions: Vec<SavedSession> = self
            .outboxes
            .iter()
            .filter(|(_, outbox)| travels(outbox))
            .filter_map(|(id, outbox)| outbox.saved_session(*id, now_ms))
            .collect();
        sessions.sort_by_key(|s| s.connection);
        sessions
    }

    /// Whether the document is leaving with sessions that no write carries yet: it must
    /// be written even if its state did not change.
    pub(super) fn sessions_unsaved(&self) -> bool {
        self.leaving
            && !self.persistence.sessions_written
            && self.outboxes.values().any(|o| o.is_session() && travels(o))
    }

    /// The document stays after all: its carried sessions end as the host closed them
    /// (their sockets are gone), and the consumer hears of each.
    pub(super) fn end_carried(&mut self) {
        let carried: HashSet<u64> = std::mem::take(&mut self.carried);
        for id in carried {
            if let Some(outbox) = self.outboxes.get(&id) {
                outbox.finish();
            }
            self.disconnect(id, 1006);
        }
        self.persistence.sessions_written = false;
    }

    /// Attaches again, without sockets, the sessions `snapshot` carried (from the
    /// document's last host, or from its last checkpoint in journal mode), before a
    /// replay goes on from them.
    pub fn restore_sessions(&mut self, snapshot: &Snapshot) {
        let keep = self.limits.sessions.keep;
        for saved in &snapshot.sessions {
            let claims = snapshot
                .connections
                .iter()
                .find(|(id, _)| *id == saved.connection)
                .and_then(|(_, claims)| claims.as_deref().map(Arc::<str>::from));
            let outbox = self.session_outbox();
            if outbox.restore_session(saved, keep) {
                self.attach(saved.connection, outbox, claims);
                self.had_sockets = true;
            }
        }
    }

    /// A replayed `Connect` of session `session`: its connection is attached with an
    /// outbox that numbers and keeps what the consumer sends it, as live.
    pub(super) fn replayed_session(&mut self, id: u64, session: &str, claims: Option<&str>) {
        let outbox = self.session_outbox();
        outbox.start_socketless_session(session.to_owned(), self.limits.sessions.keep);
        self.attach(id, outbox, claims.map(Arc::<str>::from));
        self.had_sockets = true;
    }

    /// `n` replayed messages of `connection` were applied: its session counts them.
    pub(super) fn replayed_applied(&mut self, connection: u64, n: u64) {
        if let Some(outbox) = self.outboxes.get(&connection) {
            outbox.applied_more(n);
        }
    }

    /// The session connections without a socket (all of them, right after an open), for
    /// the lane to park until their clients resume them.
    pub fn socketless_sessions(&self) -> Vec<Carried> {
        let mut sessions: Vec<Carried> = self
            .outboxes
            .iter()
            .filter(|(_, o)| o.is_open())
            .filter_map(|(id, o)| {
                Some(Carried {
                    connection: *id,
                    session: o.session_id()?,
                    outbox: o.clone(),
                    parked_at_ms: o.parked_at_ms(),
                })
            })
            .collect();
        sessions.sort_by_key(|c| c.connection);
        sessions
    }

    fn session_outbox(&self) -> Rc<Outbox> {
        let bounds = self.limits.sessions;
        Outbox::new(bounds.max_bytes, bounds.max_frames)
    }
}

/// Whether a connection's session goes on after this host (a snapshot carries it): not one
/// the consumer (or a broken bound) closed, which ends here.
fn travels(outbox: &Outbox) -> bool {
    outbox.is_open() || outbox.closed_by_leaving()
}
