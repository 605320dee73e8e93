//! Writing queued frames without waking every connection's task: a broadcast to 1,000
//! sockets used to wake 1,000 tasks, each of which re-armed its readiness, its timer and
//! its wake-up just to make one `write`. Now the first frame queued on an empty queue
//! puts the queue on its lane's list of queues to flush, and one lane task
//! ([`crate::lane::flusher`]) writes them all on its next turn. Frames queued in the
//! meantime, by any number of guest calls, go out in the same `write`.
//!
//! The connection's task still owns its socket: it hands the outbox a way to write to it
//! while it serves ([`Outbox::attach`]; the document knows no sockets), and takes the
//! writing back when the socket is full (the flusher wakes it to wait until the socket
//! takes more) or the connection ends.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::rc::Rc;

use tokio::sync::Notify;

use super::{Outbox, Written};

thread_local! {
    /// This lane's queues that got frames since its flusher last ran (outboxes never
    /// leave their lane's thread).
    static PENDING: Pending = Pending::default();
}

#[derive(Default)]
struct Pending {
    queues: RefCell<Vec<Rc<Outbox>>>,
    wake: Rc<Notify>,
}

/// A connection's socket as the flusher writes to it: a non-blocking vectored write. The
/// lane's socket implements it, so that the outbox keeps the socket's own handle, not a
/// closure around it (an allocation per connection).
pub trait VectoredWrite {
    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> std::io::Result<usize>;
}

impl<F: Fn(&[IoSlice<'_>]) -> std::io::Result<usize>> VectoredWrite for F {
    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self(slices)
    }
}

/// Where an outbox writes without its connection's task.
#[derive(Default)]
pub(super) struct Writer {
    /// Writes to the connection's socket while its task serves it.
    stream: Cell<Option<Rc<dyn VectoredWrite>>>,
    /// On the lane's list already.
    scheduled: Cell<bool>,
}

impl Writer {
    /// The socket, while one is attached.
    fn stream(&self) -> Option<Rc<dyn VectoredWrite>> {
        let stream = self.stream.take();
        self.stream.set(stream.clone());
        stream
    }

    fn attached(&self) -> bool {
        let stream = self.stream.take();
        let attached = stream.is_some();
        self.stream.set(stream);
        attached
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("attached", &self.attached())
            .field("scheduled", &self.scheduled.get())
            .finish()
    }
}

impl Outbox {
    /// Lets the lane's flusher write with `stream` (a non-blocking write to the socket)
    /// until [`Outbox::detach`]. The connection's task calls it when it starts serving
    /// the socket.
    pub fn attach(&self, stream: Rc<dyn VectoredWrite>) {
        self.writer.stream.set(Some(stream));
    }

    /// Ends [`Outbox::attach`]: from now on the connection's task is woken for every
    /// frame. Called before the socket closes.
    pub fn detach(&self) {
        self.writer.stream.take();
    }

    /// Whether the lane's flusher writes what is queued on its next turn: the socket is
    /// attached, the queue is on the lane's list and the connection is open.
    pub fn flusher_writes(&self) -> bool {
        self.writer.scheduled.get() && self.writer.attached() && self.is_open()
    }

    /// The first frame of an empty queue: the flusher writes it if the socket is
    /// attached, else the connection's task is woken to do so.
    pub(super) fn schedule(&self) {
        if !self.writer.attached() {
            self.wake.notify_one();
            return;
        }
        if self.writer.scheduled.replace(true) {
            return;
        }
        let me = self.me.upgrade().expect("a live outbox has an owner");
        PENDING.with(|p| {
            let mut queues = p.queues.borrow_mut();
            if queues.is_empty() {
                p.wake.notify_one();
            }
            queues.push(me);
        });
    }

    /// Writes what is queued as far as the socket takes it; `counted` hears of every
    /// write. Wakes the connection's task to carry on when the socket is full, broken
    /// or gone, or the connection is ending.
    pub fn flush(&self, mut counted: impl FnMut(&Written)) {
        self.writer.scheduled.set(false);
        let Some(stream) = self.writer.stream().filter(|_| self.is_open()) else {
            self.wake.notify_one();
            return;
        };
        loop {
            match self.write_with(|slices| stream.try_write_vectored(slices)) {
                Ok(None) => return,
                Ok(Some(written)) => {
                    counted(&written);
                    if written.bytes == 0 {
                        self.wake.notify_one();
                        return;
                    }
                }
                // Would block (the task waits until the socket takes more) or broke (the
                // task ends the connection).
                Err(_) => {
                    self.wake.notify_one();
                    return;
                }
            }
        }
    }
}

/// Moves the queues to flush on this lane now into `into` (empty), leaving its buffer
/// for the next ones.
pub fn take_pending(into: &mut Vec<Rc<Outbox>>) {
    PENDING.with(|p| std::mem::swap(into, &mut *p.queues.borrow_mut()));
}

/// Notified when this lane's list of queues to flush stops being empty.
pub fn pending_wake() -> Rc<Notify> {
    PENDING.with(|p| p.wake.clone())
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::document::outbox::Frame;

    /// An outbox attached to a socket that takes at most `room` bytes, then would block.
    fn attached(room: usize) -> (Rc<Outbox>, Rc<RefCell<Vec<u8>>>) {
        let outbox = Outbox::new(1 << 20, 100);
        let sent = Rc::new(RefCell::new(Vec::new()));
        let socket = sent.clone();
        outbox.attach(Rc::new(move |slices: &[IoSlice<'_>]| {
            let mut sent = socket.borrow_mut();
            if sent.len() >= room {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let before = sent.len();
            for slice in slices {
                let take = slice.len().min(room - sent.len());
                sent.extend_from_slice(&slice[..take]);
            }
            Ok(sent.len() - before)
        }));
        (outbox, sent)
    }

    fn pending() -> Vec<Rc<Outbox>> {
        let mut queues = Vec::new();
        take_pending(&mut queues);
        queues
    }

    #[test]
    fn the_first_frame_of_an_empty_queue_puts_it_on_the_lane_list_once() {
        let (outbox, sent) = attached(usize::MAX);
        assert!(outbox.push(&Frame::text("one")));
        assert!(outbox.push(&Frame::text("two")));
        let queues = pending();
        assert_eq!(queues.len(), 1);
        assert!(Rc::ptr_eq(&queues[0], &outbox));
        let mut messages = 0;
        queues[0].flush(|w| messages += w.messages);
        assert_eq!(messages, 2);
        assert_eq!(&sent.borrow()[..], b"\x81\x03one\x81\x03two");
        assert!(outbox.is_empty());
        // Its task was not woken for any of it.
        assert!(outbox.wake.notified().now_or_never().is_none());
        // Drained: the next frame schedules it again.
        assert!(outbox.push(&Frame::text("three")));
        assert_eq!(pending().len(), 1);
    }

    #[test]
    fn the_connection_task_leaves_a_scheduled_open_queue_to_the_flusher() {
        let (outbox, _sent) = attached(usize::MAX);
        assert!(!outbox.flusher_writes(), "nothing queued");
        assert!(outbox.push(&Frame::text("one")));
        assert!(outbox.flusher_writes());
        let queues = pending();
        queues[0].flush(|_| {});
        assert!(!outbox.flusher_writes(), "written");
        assert!(outbox.push(&Frame::text("two")));
        outbox.close(1000, "bye");
        assert!(
            !outbox.flusher_writes(),
            "a closing queue is the task's to finish"
        );
        let _ = pending();
    }

    #[test]
    fn a_full_socket_hands_the_rest_to_the_connection_task() {
        let (outbox, sent) = attached(4);
        assert!(outbox.push(&Frame::text("hello")));
        let queues = pending();
        queues[0].flush(|_| {});
        assert_eq!(&sent.borrow()[..], b"\x81\x05he");
        assert!(!outbox.is_empty(), "the rest waits for the socket");
        assert!(outbox.wake.notified().now_or_never().is_some());
    }

    #[test]
    fn without_a_socket_the_connection_task_is_woken() {
        let outbox = Outbox::new(1 << 20, 100);
        assert!(outbox.push(&Frame::text("before the upgrade")));
        assert!(pending().is_empty());
        assert!(outbox.wake.notified().now_or_never().is_some());
        let (attached, sent) = attached(usize::MAX);
        attached.detach();
        assert!(attached.push(&Frame::text("after the end")));
        assert!(pending().is_empty());
        assert!(sent.borrow().is_empty());
    }
}
