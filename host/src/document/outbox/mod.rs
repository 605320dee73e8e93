//! The outbound queue of one connection, shared by the document (which fills it) and the
//! connection's task (which writes it to the socket).
//!
//! Everything here runs on the lane's thread, so the queue is a `RefCell`. Frames are
//! encoded as they are queued: small ones (the common case: chat lines, steps, Yjs
//! updates) are copied back to back into a buffer of the connection, so a delivery costs
//! one short copy of bytes that are still in cache and the writer hands whole runs of
//! frames to the kernel without touching them again; a large one keeps its payload
//! shared (a broadcast of 1 MiB to 1,000 sockets is not copied 1,000 times) and only its
//! header is written beside it. The writer gathers both into one vectored `write`.
//!
//! The queue is bounded in bytes and in frames: a small frame counts its encoded bytes, a
//! large one its payload plus [`FRAME_OVERHEAD`]. A client that does not read fast
//! enough to keep its queue under the bounds is closed with 1008 instead of growing the
//! lane's memory without end. An empty queue holds no buffer: a drained one goes back
//! to the lane, which keeps the last few (at most 1 MiB) for the next chunks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::config::FRAME_OVERHEAD;
use crate::net::websocket::frame::{opcode, server_frame_end, server_header};

mod chunks;
pub mod flush;

use chunks::{Chunk, INLINE_CHUNK, MAX_SLICES, MIN_CHUNK, Queue};
pub use chunks::{INLINE_MAX, Written};
pub use flush::{WriteFn, pending_wake, take_pending};

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
    queue: RefCell<Queue>,
    queued_bytes: Cell<usize>,
    queued_frames: Cell<usize>,
    /// How full the last buffer of small frames got: the next one starts that large, so
    /// a busy connection does not grow its buffer again on every batch, and a quiet one
    /// keeps small ones.
    chunk_hint: Cell<u32>,
    max_bytes: usize,
    max_frames: usize,
    ending: RefCell<Ending>,
    /// The close is the document's leaving (a hand-back, a shutdown): what the client
    /// sends until its own close frame is still applied.
    leaving: Cell<bool>,
    /// Wakes the connection's task: the connection is ending, or frames were queued and
    /// the lane's flusher does not write them ([`flush`]).
    pub wake: Notify,
    give_up_at: Cell<Option<Instant>>,
    /// The lane's flusher's handle on the socket.
    writer: flush::Writer,
    /// This outbox, for the lane's list of queues to flush.
    me: Weak<Outbox>,
}

/// How long a closing connection may take to flush, send its close frame and hear the
/// client's answer before it is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Outbox {
    /// An empty queue that holds at most `max_frames` frames and `max_bytes` (see the
    /// module's documentation for what a frame counts).
    pub fn new(max_bytes: usize, max_frames: usize) -> Rc<Outbox> {
        Rc::new_cyclic(|me| Outbox {
            queue: RefCell::new(Queue::default()),
            queued_bytes: Cell::new(0),
            queued_frames: Cell::new(0),
            chunk_hint: Cell::new(0),
            max_bytes,
            max_frames,
            ending: RefCell::new(Ending::Open),
            leaving: Cell::new(false),
            wake: Notify::new(),
            give_up_at: Cell::new(None),
            writer: flush::Writer::default(),
            me: me.clone(),
        })
    }

    /// Queues a frame. Returns `false` if the connection is closing or gone (the frame is
    /// dropped) or if the frame overflowed the queue (the connection is then closed with
    /// 1008 and its queue freed).
    pub fn push(&self, frame: &Frame) -> bool {
        if *self.ending.borrow() != Ending::Open {
            return false;
        }
        let (op, payload): (u8, &[u8]) = match frame {
            Frame::Text(text) => (opcode::TEXT, text.as_bytes()),
            Frame::Binary(bytes) => (opcode::BINARY, bytes),
            Frame::Ping(bytes) => (opcode::PING, bytes),
            Frame::Pong(bytes) => (opcode::PONG, bytes),
            // Closes go through the ending, never through the queue.
            Frame::Close(_) | Frame::Frame(_) => return false,
        };
        let message = op == opcode::TEXT || op == opcode::BINARY;
        let (header, header_len) = server_header(op, payload.len());
        let inline = payload.len() <= INLINE_MAX;
        let cost = if inline {
            header_len + payload.len()
        } else {
            payload.len() + FRAME_OVERHEAD
        };
        let (bytes, frames) = (self.queued_bytes.get() + cost, self.queued_frames.get() + 1);
        if bytes > self.max_bytes || frames > self.max_frames {
            self.drop_unsent();
            self.close(1008, "client too slow: send queue full");
            return false;
        }
        self.queued_bytes.set(bytes);
        self.queued_frames.set(frames);
        let mut queue = self.queue.borrow_mut();
        let was_empty = queue.chunks.is_empty();
        if inline {
            let encoded = header_len + payload.len();
            let room = match queue.chunks.back_mut() {
                // A chunk the writer started on may still take frames: only its front
                // bytes are gone.
                Some(Chunk::Inline { bytes, .. }) => bytes.len() + encoded <= INLINE_CHUNK,
                _ => false,
            };
            if !room {
                queue.chunks.push_back(Chunk::Inline {
                    bytes: chunks::buffer(encoded.max(self.chunk_hint.get() as usize)),
                    frames: 0,
                    messages: 0,
                    message_bytes: 0,
                });
            }
            let Some(Chunk::Inline {
                bytes,
                frames,
                messages,
                message_bytes,
            }) = queue.chunks.back_mut()
            else {
                unreachable!("an inline chunk was just ensured");
            };
            bytes.extend_from_slice(&header[..header_len]);
            bytes.extend_from_slice(payload);
            *frames += 1;
            if message {
                *messages += 1;
                *message_bytes += payload.len() as u64;
            }
        } else {
            let payload = match frame {
                Frame::Text(text) => Bytes::from(text.clone()),
                Frame::Binary(bytes) | Frame::Ping(bytes) | Frame::Pong(bytes) => bytes.clone(),
                Frame::Close(_) | Frame::Frame(_) => unreachable!("refused above"),
            };
            queue.chunks.push_back(Chunk::Shared {
                header,
                header_len: header_len as u8,
                payload,
                message,
            });
        }
        // One write per batch: the whole queue is written at once, so only the first
        // frame of an empty queue needs to ask for it.
        if was_empty {
            self.schedule();
        }
        true
    }

    /// Hands the queued bytes to `write` as slices, in order (one call), and takes off
    /// what it reports written. `Ok(None)` when nothing is queued.
    pub fn write_with(
        &self,
        write: impl FnOnce(&[IoSlice<'_>]) -> std::io::Result<usize>,
    ) -> std::io::Result<Option<Written>> {
        let mut queue = self.queue.borrow_mut();
        if queue.chunks.is_empty() {
            return Ok(None);
        }
        let n = {
            let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
            let mut used = 0;
            let mut skip = queue.written;
            'chunks: for chunk in &queue.chunks {
                let parts: [&[u8]; 2] = match chunk {
                    Chunk::Inline { bytes, .. } => [bytes, &[]],
                    Chunk::Shared {
                        header,
                        header_len,
                        payload,
                        ..
                    } => [&header[..*header_len as usize], payload],
                };
                for part in parts {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    slices[used] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    used += 1;
                    if used == MAX_SLICES {
                        break 'chunks;
                    }
                }
            }
            write(&slices[..used])?
        };
        let mut written = Written {
            bytes: n,
            ..Written::default()
        };
        let mut left = n;
        while left > 0 {
            let front = queue.chunks.front().expect("written bytes were queued");
            let remaining = front.len() - queue.written;
            if left < remaining {
                queue.written += left;
                break;
            }
            left -= remaining;
            queue.written = 0;
            let chunk = queue.chunks.pop_front().expect("checked above");
            let (bytes, frames) = chunk.cost();
            self.queued_bytes
                .set(self.queued_bytes.get().saturating_sub(bytes));
            self.queued_frames
                .set(self.queued_frames.get().saturating_sub(frames));
            match chunk {
                Chunk::Inline {
                    bytes,
                    messages,
                    message_bytes,
                    ..
                } => {
                    self.chunk_hint
                        .set(bytes.len().clamp(MIN_CHUNK, INLINE_CHUNK) as u32);
                    written.messages += messages;
                    written.message_bytes += message_bytes;
                    chunks::give_back(bytes);
                }
                Chunk::Shared {
                    payload,
                    message: true,
                    ..
                } => {
                    written.messages += 1;
                    written.message_bytes += payload.len() as u64;
                }
                Chunk::Shared { .. } => {}
            }
        }
        if queue.chunks.is_empty() {
            // Drained: an idle connection keeps no buffer.
            queue.chunks = VecDeque::new();
        }
        Ok(Some(written))
    }

    /// Whether nothing is queued (not even part of a frame).
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().chunks.is_empty()
    }

    fn drop_queue(&self) {
        *self.queue.borrow_mut() = Queue::default();
        self.queued_bytes.set(0);
        self.queued_frames.set(0);
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

    /// Starts closing because the document leaves this host (hand-back, shutdown): like
    /// [`Outbox::close`], but the client's messages keep applying until its own close
    /// frame arrives, since TCP delivers everything it sent before that frame first. A
    /// connection already closing for another reason stays as it was.
    pub fn close_leaving(&self, code: u16, reason: &str) {
        if self.is_open() {
            self.close(code, reason);
            self.leaving.set(true);
        }
    }

    /// Whether what the client sends now may still change the document: the connection is
    /// open, or it is closing only because the document leaves ([`Outbox::close_leaving`]).
    /// Once the consumer (or a broken limit) closed it, nothing it sends applies.
    pub fn takes_input(&self) -> bool {
        match *self.ending.borrow() {
            Ending::Open => true,
            Ending::Close(..) => self.leaving.get(),
            Ending::Gone => false,
        }
    }

    /// Queues the close frame, the last frame of the connection, whatever the bounds
    /// and the ending.
    pub fn push_close(&self, payload: &[u8]) {
        let (header, header_len) = server_header(opcode::CLOSE, payload.len());
        let mut bytes = Vec::with_capacity(header_len + payload.len());
        bytes.extend_from_slice(&header[..header_len]);
        bytes.extend_from_slice(payload);
        self.queue.borrow_mut().chunks.push_back(Chunk::Inline {
            bytes,
            frames: 1,
            messages: 0,
            message_bytes: 0,
        });
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
        self.leaving.set(false);
        self.drop_unsent();
        self.wake.notify_one();
    }

    /// Drops what is queued, except the rest of a frame the socket already took part of:
    /// cutting a frame would break the stream.
    fn drop_unsent(&self) {
        let mut queue = self.queue.borrow_mut();
        if queue.written == 0 {
            drop(queue);
            self.drop_queue();
            return;
        }
        let written = queue.written;
        let mut front = queue.chunks.pop_front().expect("a started chunk is queued");
        queue.chunks = VecDeque::new();
        if let Chunk::Inline {
            bytes,
            frames,
            messages,
            message_bytes,
        } = &mut front
        {
            bytes.truncate(server_frame_end(bytes, written));
            // Only the started frame is left; it is not counted as a message sent.
            (*frames, *messages, *message_bytes) = (1, 0, 0);
        }
        let (bytes, frames) = front.cost();
        queue.chunks.push_back(front);
        self.queued_bytes.set(bytes);
        self.queued_frames.set(frames);
    }

    /// Whether the connection accepts more frames.
    pub fn is_open(&self) -> bool {
        *self.ending.borrow() == Ending::Open
    }

    /// What the writer should do after draining the queue.
    pub fn ending(&self) -> Ending {
        self.ending.borrow().clone()
    }

    /// What the queued frames count against the bounds. A buffer of small frames counts
    /// until the socket took all of it.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::websocket::frame::encode;

    /// Writes up to `limit` bytes of the queue into `out`.
    fn write(o: &Outbox, out: &mut Vec<u8>, limit: usize) -> Option<Written> {
        o.write_with(|slices| {
            let before = out.len();
            for slice in slices {
                let take = slice.len().min(limit - (out.len() - before));
                out.extend_from_slice(&slice[..take]);
            }
            Ok(out.len() - before)
        })
        .expect("infallible")
    }

    fn encoded(frames: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (op, payload) in frames {
            encode(&mut out, *op, payload);
        }
        out
    }

    #[test]
    fn encodes_in_order_and_counts_bytes() {
        let o = Outbox::new(1 << 20, 10);
        let big = vec![7u8; INLINE_MAX + 1];
        assert!(o.push(&Frame::text("ab")));
        assert!(o.push(&Frame::binary(big.clone())));
        assert!(o.push(&Frame::Ping(Bytes::new())));
        assert_eq!(o.queued_bytes(), 4 + big.len() + FRAME_OVERHEAD + 2);
        let mut out = Vec::new();
        let written = write(&o, &mut out, usize::MAX).expect("queued");
        let expected = encoded(&[
            (opcode::TEXT, b"ab"),
            (opcode::BINARY, &big),
            (opcode::PING, b""),
        ]);
        assert_eq!(out, expected);
        assert_eq!(written.messages, 2);
        assert_eq!(written.message_bytes, 2 + big.len() as u64);
        assert_eq!(o.queued_bytes(), 0);
        assert!(o.is_empty());
        assert_eq!(write(&o, &mut out, usize::MAX), None);
    }

    #[test]
    fn short_writes_resume_where_they_stopped() {
        let o = Outbox::new(1 << 20, 100);
        let big = vec![1u8; 70_000];
        let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
        for i in 0..30 {
            let payload = if i % 10 == 3 {
                big.clone()
            } else {
                vec![i as u8; 100 + i]
            };
            assert!(o.push(&Frame::binary(payload.clone())));
            frames.push((opcode::BINARY, payload));
        }
        let mut out = Vec::new();
        let mut messages = 0;
        while let Some(written) = write(&o, &mut out, 777) {
            messages += written.messages;
        }
        let expected: Vec<(u8, &[u8])> = frames.iter().map(|(op, p)| (*op, &p[..])).collect();
        assert_eq!(out, encoded(&expected));
        assert_eq!(messages, 30);
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn overflow_closes_with_1008_and_frees_the_queue() {
        let o = Outbox::new(10, 10);
        assert!(o.push(&Frame::text("12345")));
        assert!(!o.push(&Frame::text("1234")));
        assert_eq!(o.queued_bytes(), 0);
        assert!(o.is_empty());
        assert!(matches!(o.ending(), Ending::Close(1008, _)));
        assert!(!o.push(&Frame::text("x")));
    }

    #[test]
    fn a_started_frame_is_finished_whatever_is_dropped() {
        let o = Outbox::new(1 << 20, 100);
        assert!(o.push(&Frame::text("first")));
        assert!(o.push(&Frame::text("second")));
        let mut out = Vec::new();
        write(&o, &mut out, 3);
        o.finish();
        o.push_close(&[0x03, 0xe8]);
        while write(&o, &mut out, usize::MAX).is_some() {}
        let expected = encoded(&[(opcode::TEXT, b"first"), (opcode::CLOSE, &[0x03, 0xe8])]);
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_frames_are_bounded_too() {
        let o = Outbox::new(1 << 20, 100);
        for _ in 0..100 {
            assert!(o.push(&Frame::text("")));
        }
        assert!(!o.push(&Frame::text("")));
        assert!(matches!(o.ending(), Ending::Close(1008, _)));
        let by_bytes = Outbox::new(20, 1000);
        for _ in 0..10 {
            assert!(by_bytes.push(&Frame::binary(Vec::new())));
        }
        assert!(!by_bytes.push(&Frame::binary(Vec::new())));
    }

    #[test]
    fn a_kicked_connection_takes_no_input_a_leaving_one_does() {
        let kicked = Outbox::new(100, 10);
        assert!(kicked.takes_input());
        kicked.close(4000, "kicked");
        kicked.close_leaving(1012, "moving");
        assert!(!kicked.takes_input(), "the consumer's close comes first");
        assert_eq!(kicked.ending(), Ending::Close(4000, "kicked".into()));
        let leaving = Outbox::new(100, 10);
        leaving.close_leaving(1012, "moving");
        assert!(leaving.takes_input());
        assert!(!leaving.push(&Frame::text("x")), "nothing more is sent");
        leaving.finish();
        assert!(!leaving.takes_input(), "the connection ended");
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
