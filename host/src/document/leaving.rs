//! A document leaving this host: handed back to another host or saved for a shutdown
//! (its sockets drain first, see [`Document::leave`]), or retired at once when this host
//! may no longer serve it (another host took it, the lease lapsed).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::document::live::{Document, DocumentCell};

impl Document {
    /// Whether the document was ended without a trap ([`Document::retire`]).
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Ends the document at once, without a save and without calling its consumer
    /// again: its instance is dropped and every connection is closed with `code`. For
    /// a document this host may no longer serve (another host took it, or the lease
    /// lapsed): what changed since its last save is lost, as documented.
    pub fn retire(&mut self, code: u16, reason: &str) {
        self.retired = true;
        if self.instance.take().is_some() {
            self.plugin.live.fetch_sub(1, Ordering::Relaxed);
        }
        self.sync_memory();
        for outbox in self.outboxes.values() {
            outbox.close(code, reason);
        }
        self.wake.notify_one();
    }

    /// Starts leaving this host (a hand-back, a shutdown): every connection is closed
    /// with `code`, but what its client sends until its own close frame still applies
    /// (TCP delivers it first), and no connection joins meanwhile. See
    /// [`Document::connections_gone`].
    pub fn leave(&mut self, code: u16, reason: &str) {
        self.leaving = true;
        for outbox in self.outboxes.values() {
            outbox.close_leaving(code, reason);
        }
        // Its timers wait: they travel with the saved state and fire on the next host.
        self.wake.notify_one();
    }

    /// The document stays after all (its last state could not be saved): connections
    /// may join again.
    pub fn stay(&mut self) {
        self.end_carried();
        self.leaving = false;
        self.wake.notify_one();
    }

    /// Whether the document is leaving this host ([`Document::leave`]).
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Waits until the document has no connection left but the sessions it carries to
    /// the next host ([`Document::carry`]); with `deadline`, no longer than that. Returns
    /// whether none is left.
    pub async fn connections_gone(cell: &DocumentCell, deadline: Instant) -> bool {
        loop {
            let emptied = cell.borrow().emptied.clone();
            let notified = emptied.notified();
            if cell.borrow().only_carried_left() {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return cell.borrow().only_carried_left();
                }
            }
        }
    }

    /// Ends the document at once because its journal could not be written: like
    /// [`Document::retire`], but what its inputs caused and still waits for the journal
    /// is dropped first, so it never leaves the host.
    pub fn drop_unjournaled(&mut self, code: u16, reason: &str) {
        for outbox in self.outboxes.values() {
            outbox.drop_gated();
        }
        self.retire(code, reason);
    }
}
