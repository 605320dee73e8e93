//! The outbound queue of one connection, shared by the document (which fills it) and the
//! connection's task (which drains it into the socket).
//!
//! Everything here runs on the lane's thread, so the queue is a `RefCell` and frames are
//! moved, never copied: a broadcast pushes clones of one [`Frame`] whose payload is
//! reference-counted. The queue is bounded in bytes and in frames, and every frame costs
//! its payload plus [`FRAME_OVERHEAD`] (an empty frame still takes a slot): a client that
//! does not read fast enough to keep its queue under the bounds is closed with 1008
//! instead of growing the lane's memory without end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::config::FRAME_OVERHEAD;

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

/// One connection's outbound queue.
#[derive(Debug)]
pub struct Outbox {
    queue: RefCell<VecDeque<Frame>>,
    queued_bytes: Cell<usize>,
    max_bytes: usize,
    max_frames: usize,
    ending: RefCell<Ending>,
    /// Wakes the connection's task: frames were queued or the connection is ending.
    pub wake: Notify,
    give_up_at: Cell<Option<Instant>>,
}

/// How long a closing connection may take to flush, send its close frame and hear the
/// client's answer before it is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Outbox {
    /// An empty queue that holds at most `max_frames` frames and `max_bytes`, each frame
    /// counted as its payload plus [`FRAME_OVERHEAD`].
    pub fn new(max_bytes: usize, max_frames: usize) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            max_bytes,
            max_frames,
            ending: RefCell::new(Ending::Open),
            wake: Notify::new(),
            give_up_at: Cell::new(None),
        }
    }

    /// Queues a frame. Returns `false` if the connection is closing or gone (the frame is
    /// dropped) or if the frame overflowed the queue (the connection is then closed with
    /// 1008 and its queue freed).
    pub fn push(&self, frame: Frame) -> bool {
        if *self.ending.borrow() != Ending::Open {
            return false;
        }
        let total = self.queued_bytes.get() + cost(&frame);
        if total > self.max_bytes || self.queue.borrow().len() >= self.max_frames {
            self.queue.borrow_mut().clear();
            self.queued_bytes.set(0);
            self.close(1008, "client too slow: send queue full");
            return false;
        }
        self.queued_bytes.set(total);
        let mut queue = self.queue.borrow_mut();
        queue.push_back(frame);
        // One wake-up per batch: the connection drains the whole queue when it runs, so
        // only the first frame of an empty queue needs to wake it.
        if queue.len() == 1 {
            self.wake.notify_one();
        }
        true
    }

    /// Takes the next frame for the writer.
    pub fn pop(&self) -> Option<Frame> {
        let frame = self.queue.borrow_mut().pop_front()?;
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(cost(&frame)));
        Some(frame)
    }

    /// Starts closing: frames already queued are sent, then the close frame. Only the
    /// first close counts.
    pub fn close(&self, code: u16, reason: &str) {
        let mut ending = self.ending.borrow_mut();
        if *ending == Ending::Open {
            *ending = Ending::Close(code, reason.to_owned());
            self.give_up_at.set(Some(Instant::now() + CLOSE_TIMEOUT));
            self.wake.notify_one();
        }
    }

    /// When a closing connection is dropped whatever the client does.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.give_up_at.get()
    }

    /// The connection is ending: queued frames are dropped (a pending close frame is
    /// still sent: it tells the client why) and nothing more is accepted.
    pub fn finish(&self) {
        if self.give_up_at.get().is_none() {
            self.give_up_at.set(Some(Instant::now() + CLOSE_TIMEOUT));
        }
        {
            let mut ending = self.ending.borrow_mut();
            if *ending == Ending::Open {
                *ending = Ending::Gone;
            }
        }
        self.queue.borrow_mut().clear();
        self.queued_bytes.set(0);
        self.wake.notify_one();
    }

    /// Whether the connection accepts more frames.
    pub fn is_open(&self) -> bool {
        *self.ending.borrow() == Ending::Open
    }

    /// What the writer should do after draining the queue.
    pub fn ending(&self) -> Ending {
        self.ending.borrow().clone()
    }

    /// What the queued frames cost: payload plus [`FRAME_OVERHEAD`] each.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }
}

/// What a queued frame counts against the bounds.
fn cost(frame: &Frame) -> usize {
    frame.len() + FRAME_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_counts_bytes() {
        let o = Outbox::new(1000, 10);
        assert!(o.push(Frame::text("ab")));
        assert!(o.push(Frame::binary(vec![1, 2, 3])));
        assert_eq!(o.queued_bytes(), 5 + 2 * FRAME_OVERHEAD);
        assert_eq!(o.pop(), Some(Frame::text("ab")));
        assert_eq!(o.pop(), Some(Frame::binary(vec![1, 2, 3])));
        assert_eq!(o.pop(), None);
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn overflow_closes_with_1008_and_frees_the_queue() {
        let o = Outbox::new(FRAME_OVERHEAD + 10, 10);
        assert!(o.push(Frame::text("12345")));
        assert!(!o.push(Frame::text("1234567")));
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(o.pop(), None);
        assert!(matches!(o.ending(), Ending::Close(1008, _)));
        assert!(!o.push(Frame::text("x")));
    }

    #[test]
    fn empty_frames_are_bounded_too() {
        let o = Outbox::new(1 << 20, 100);
        for _ in 0..100 {
            assert!(o.push(Frame::text("")));
        }
        assert!(!o.push(Frame::text("")));
        assert!(matches!(o.ending(), Ending::Close(1008, _)));
        let by_bytes = Outbox::new(10 * FRAME_OVERHEAD, 1000);
        for _ in 0..10 {
            assert!(by_bytes.push(Frame::binary(Vec::new())));
        }
        assert!(!by_bytes.push(Frame::binary(Vec::new())));
    }

    #[test]
    fn first_close_wins() {
        let o = Outbox::new(100, 10);
        o.close(1001, "bye");
        o.close(1011, "crash");
        assert_eq!(o.ending(), Ending::Close(1001, "bye".into()));
        assert!(!o.is_open());
    }
}
