//! A queue's side of the journal's output gate (see [`crate::document::journal`]): frames
//! and a close that an input of a batch not yet durable caused stay queued, the queue
//! waits on that batch's list, and its release hands the queue back to its writer.

use std::rc::Weak;

use crate::document::journal::{self, Gated};
use crate::document::outbox::Outbox;

impl Gated for Outbox {
    fn released(&self) {
        Outbox::released(self);
    }
}

impl Outbox {
    /// Puts this queue on the list of journal batch `batch`, once.
    pub(super) fn wait_for(&self, batch: u64) {
        if self.waits_for.get() < batch {
            self.waits_for.set(batch);
            let me: Weak<dyn Gated> = self.me.clone();
            journal::wait_for(batch, me);
        }
    }

    /// A journal batch this queue waited for is durable: what it holds may be written.
    pub(crate) fn released(&self) {
        if self.is_open() && !self.task_waits.get() {
            self.schedule();
        } else {
            // Closing, or its client stopped sending: its task writes the rest.
            self.wake.notify_one();
        }
    }

    /// Whether the front of the queue may be written now (it is not waiting for its
    /// journal batch).
    pub fn has_writable(&self) -> bool {
        self.queue
            .borrow()
            .chunks
            .front()
            .is_some_and(|c| journal::is_durable(c.batch()))
    }

    /// Whether part of the queue, or the close, waits for a journal batch.
    pub fn has_gated(&self) -> bool {
        !journal::is_durable(self.close_batch())
            || self
                .queue
                .borrow()
                .chunks
                .iter()
                .any(|c| !journal::is_durable(c.batch()))
    }

    /// The connection's task waits for what its queue holds to be released (its client
    /// has stopped sending and it writes the rest itself): wake it on release.
    pub fn wake_on_release(&self) {
        self.task_waits.set(true);
    }

    /// [`Outbox::close`] asked by an input of journal batch `batch`: the close frame
    /// leaves only once that batch is durable (and after the frames queued before it).
    pub fn close_in(&self, code: u16, reason: &str, batch: u64) {
        if self.is_open() && !journal::is_durable(batch) {
            self.wait_for(batch);
            self.close_after(code, reason, batch);
        } else {
            self.close(code, reason);
        }
    }

    /// Drops everything queued (the document is dropped because its journal could not be
    /// written: what waited for it must never leave), except a frame the socket already
    /// took part of.
    pub fn drop_gated(&self) {
        self.forget_close_batch();
        self.drop_unsent();
    }
}
