//! Sessions that travel with their document (docs/sessions.md, "a graceful move"): when
//! the document leaves this host (a hand-back, a shutdown), a session's socket closes with
//! 1012 but the consumer is not told: the connection stays open as far as it knows, what
//! it sends the connection is numbered and kept, and the document's last snapshot carries
//! the session (its numbers and its unacknowledged messages). The host that opens the
//! document next attaches the connection again, without a socket, and the client resumes
//! it there as after a network blip.
//!
//! A carried session is trusted only if the snapshot is the document's last state: in
//! journal mode, inputs journaled after it (the next host took inputs, then crashed) mean
//! the session's numbers are stale, so its connection is reported gone like any other
//! the journal leaves open.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

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
    /// When its last host let it go, Unix milliseconds: its grace runs from there.
    pub parked_at_ms: u64,
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

    /// The sessions a leaving document's snapshot carries: every session connection's,
    /// whether its socket is gone or still closing. None while the document stays.
    pub(super) fn sessions_to_carry(&self) -> Vec<SavedSession> {
        if !self.leaving || self.retired {
            return Vec::new();
        }
        let now_ms = unix_ms();
        let mut sessions: Vec<SavedSession> = self
            .outboxes
            .iter()
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
            && self.outboxes.values().any(|o| o.is_session())
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

    /// Attaches again the sessions `snapshot` carried from the document's last host, each
    /// with a fresh outbox from `outbox` that keeps messages at most `keep`; returns
    /// them for the lane to park. Nothing if inputs were journaled after the snapshot.
    pub fn restore_sessions(
        &mut self,
        snapshot: &Snapshot,
        outbox: impl Fn() -> Rc<Outbox>,
        keep: Duration,
    ) -> Vec<Carried> {
        if snapshot.sessions.is_empty() {
            return Vec::new();
        }
        let inputs = self.lineage.inputs();
        if let Some(tail) = &self.tail
            && tail.borrow().entries().any(|e| e.seq > inputs)
        {
            tracing::debug!(doc = %self.id, "{} carried session(s) not resumable: inputs came after them", snapshot.sessions.len());
            return Vec::new();
        }
        let mut restored = Vec::new();
        for saved in &snapshot.sessions {
            let claims = snapshot
                .connections
                .iter()
                .find(|(id, _)| *id == saved.connection)
                .and_then(|(_, claims)| claims.as_deref().map(Arc::<str>::from));
            let out = outbox();
            if !out.restore_session(saved, keep) {
                continue;
            }
            self.attach(saved.connection, out.clone(), claims);
            self.had_sockets = true;
            restored.push(Carried {
                connection: saved.connection,
                session: saved.session.clone(),
                outbox: out,
                parked_at_ms: saved.parked_at_ms,
            });
        }
        restored
    }
}
