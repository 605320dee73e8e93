//! How a connection's queue ends: the close the consumer, a limit or a leaving document
//! asked for, or the connection gone; when a closing connection is given up on; and the
//! journal batch its close frame waits for.
//!
//! An open connection, which most connections are for most of their lives, keeps none of
//! this: it is boxed once the queue starts ending, so the outbox holds one pointer for it.

use std::time::{Duration, Instant};

use crate::document::journal;
use crate::document::outbox::Outbox;

/// How long a closing connection may take to flush, send its close frame and hear the
/// client's answer before it is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connection should do once the queue is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Keep the connection open.
    Open,
    /// Send a close frame with this code and reason, then wait for the client's reply.
    Close(u16, String),
    /// The connection is gone; stop.
    Gone,
}

/// A queue that is ending ([`Outbox::ending`] is not [`Ending::Open`]).
#[derive(Debug)]
pub(super) struct Closing {
    ending: Ending,
    /// When the connection is dropped whatever the client does.
    give_up_at: Instant,
    /// The journal batch the close frame waits for (0: none).
    close_batch: u64,
}

impl Outbox {
    /// Starts closing: frames already queued are sent, then the close frame. Only the
    /// first close counts.
    pub fn close(&self, code: u16, reason: &str) {
        self.close_after(code, reason, 0);
    }

    /// [`Outbox::close`], the close frame leaving only once journal batch `batch` is
    /// durable (0: at once).
    pub(super) fn close_after(&self, code: u16, reason: &str, batch: u64) {
        let mut closing = self.closing.borrow_mut();
        if closing.is_none() {
            *closing = Some(Box::new(Closing {
                ending: Ending::Close(code, reason.to_owned()),
                give_up_at: Instant::now() + CLOSE_TIMEOUT,
                close_batch: batch,
            }));
            self.wake.notify_one();
        }
    }

    /// Starts closing because the document leaves this host (hand-back, shutdown): like
    /// [`Outbox::close`], but the client's messages keep applying until its own close
    /// frame arrives, since TCP delivers everything it sent before that frame first. A
    /// connection already closing for another reason stays as it was.
    pub fn close_leaving(&self, code: u16, reason: &str) {
        if self.is_open() {
            self.close(code, reason);
            self.leaving.set(true);
            self.moving.set(true);
        }
    }

    /// Whether it was closed because its document leaves the host
    /// ([`Outbox::close_leaving`]).
    pub fn closed_by_leaving(&self) -> bool {
        self.moving.get()
    }

    /// Whether what the client sends now may still change the document: the connection is
    /// open, or it is closing only because the document leaves ([`Outbox::close_leaving`]).
    /// Once the consumer (or a broken limit) closed it, nothing it sends applies.
    pub fn takes_input(&self) -> bool {
        match self.closing.borrow().as_deref() {
            None => true,
            Some(Closing {
                ending: Ending::Close(..),
                ..
            }) => self.leaving.get(),
            Some(_) => false,
        }
    }

    /// When a closing connection is dropped whatever the client does.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.closing.borrow().as_ref().map(|c| c.give_up_at)
    }

    /// The connection is ending: queued frames are dropped (a pending close frame is
    /// still sent: it tells the client why) and nothing more is accepted.
    pub fn finish(&self) {
        {
            let mut closing = self.closing.borrow_mut();
            if closing.is_none() {
                *closing = Some(Box::new(Closing {
                    ending: Ending::Gone,
                    give_up_at: Instant::now() + CLOSE_TIMEOUT,
                    close_batch: 0,
                }));
            }
        }
        self.leaving.set(false);
        self.drop_unsent();
        self.wake.notify_one();
    }

    /// Whether the connection accepts more frames.
    pub fn is_open(&self) -> bool {
        self.closing.borrow().is_none()
    }

    /// What the writer should do after draining the queue.
    pub fn ending(&self) -> Ending {
        self.closing
            .borrow()
            .as_ref()
            .map_or(Ending::Open, |c| c.ending.clone())
    }

    /// Whether the close frame may be sent now (it does not wait for a journal batch).
    pub fn close_releasable(&self) -> bool {
        journal::is_durable(self.close_batch())
    }

    /// The journal batch the close frame waits for (0: none).
    pub(super) fn close_batch(&self) -> u64 {
        self.closing.borrow().as_ref().map_or(0, |c| c.close_batch)
    }

    /// The close frame no longer waits for a journal batch.
    pub(super) fn forget_close_batch(&self) {
        if let Some(closing) = self.closing.borrow_mut().as_mut() {
            closing.close_batch = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_queue_keeps_a_pointer_for_its_ending() {
        let outbox = Outbox::new(1 << 20, 100);
        assert!(outbox.is_open() && outbox.give_up_at().is_none());
        assert_eq!(outbox.ending(), Ending::Open);
        outbox.close(4000, "kicked");
        outbox.finish();
        // The first ending counts, and its deadline.
        assert_eq!(outbox.ending(), Ending::Close(4000, "kicked".into()));
        let at = outbox.give_up_at().expect("closing");
        assert!(at <= Instant::now() + CLOSE_TIMEOUT);
        assert!(!outbox.takes_input());
        let gone = Outbox::new(1 << 20, 100);
        gone.finish();
        assert_eq!(gone.ending(), Ending::Gone);
        assert_eq!(
            std::mem::size_of::<std::cell::RefCell<Option<Box<Closing>>>>(),
            16
        );
    }
}
