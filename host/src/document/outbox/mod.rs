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

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::config::FRAME_OVERHEAD;
use crate::document::journal;
use crate::net::websocket::frame::{opcode, server_frame_end, server_header};

mod chunks;
mod closing;
pub mod flush;
mod gate;
mod session;
mod wake;

use chunks::{Chunk, INLINE_CHUNK, MAX_SLICES, MIN_CHUNK, Queue};
pub use chunks::{INLINE_MAX, Written};
pub use closing::{CLOSE_TIMEOUT, Ending};
pub use flush::{VectoredWrite, pending_wake, take_pending};
pub use session::Incoming;
pub use wake::Wake;

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
    /// Once it is ending: how, by when, after which journal batch ([`closing`]).
    closing: RefCell<Option<Box<closing::Closing>>>,
    /// The latest journal batch this queue waits on (it is on that batch's list).
    waits_for: Cell<u64>,
    /// Its task writes it and waits for releases ([`Outbox::wake_on_release`]).
    task_waits: Cell<bool>,
    /// The close is the document's leaving (a hand-back, a shutdown): what the client
    /// sends until its own close frame is still applied.
    leaving: Cell<bool>,
    /// The close was the document's leaving, whatever happened since (the client's close
    /// frame ends [`Outbox::takes_input`], not this): a session's connection then travels
    /// with the document.
    moving: Cell<bool>,
    /// A session's connection with no socket yet, restored from a snapshot or a journal:
    /// what the consumer sends it is numbered and kept for its client's resume, not
    /// queued.
    socketless: Cell<bool>,
    /// Wakes the connection's task: the connection is ending, or frames were queued and
    /// the lane's flusher does not write them ([`flush`]).
    pub wake: Wake,
    /// The lane's flusher's handle on the socket.
    writer: flush::Writer,
    /// This outbox, for the lane's list of queues to flush.
    me: Weak<Outbox>,
    /// The connection's session, if its client asked for one (boxed: a plain connection
    /// pays one pointer for it).
    session: RefCell<Option<Box<session::Session>>>,
}

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
            closing: RefCell::new(None),
            waits_for: Cell::new(0),
            task_waits: Cell::new(false),
            leaving: Cell::new(false),
            moving: Cell::new(false),
            socketless: Cell::new(false),
            wake: Wake::default(),
            writer: flush::Writer::default(),
            me: me.clone(),
            session: RefCell::new(None),
        })
    }

    /// Queues a frame. Returns `false` if the connection is closing or gone (the frame is
    /// dropped) or if the frame overflowed the queue (the connection is then closed with
    /// 1008 and its queue freed).
    pub fn push(&self, frame: &Frame) -> bool {
        self.push_in(frame, 0)
    }

    /// [`Outbox::push`] for a frame an input of journal batch `batch` caused: it leaves
    /// only once that batch is durable (0: at once).
    /// On a session's connection a data message is numbered and kept until the client
    /// acknowledges it.
    pub fn push_in(&self, frame: &Frame, batch: u64) -> bool {
        if !self.is_open() {
            // A session's document leaving the host: kept for the next host to resend.
            return self.moving.get() && self.keep_for_next_host(frame);
        }
        if self.socketless.get() {
            return self.keep_for_next_host(frame);
        }
        match self.number(frame, batch) {
            Some(prefix) => self.push_raw(frame, prefix.as_bytes(), batch, true),
            None => self.push_raw(frame, &[], batch, true),
        }
    }

    /// Queues a session's control frame (an `!ack`, the hello): not numbered, never
    /// resent; behind journal batch `batch` like [`Outbox::push_in`].
    pub fn push_control(&self, text: &str, batch: u64) -> bool {
        self.push_raw(&Frame::Text(text.into()), &[], batch, true)
    }

    /// Queues `frame`, its payload after `prefix` (a session's number; empty otherwise),
    /// checking the bounds if `bounded`.
    fn push_raw(&self, frame: &Frame, prefix: &[u8], batch: u64, bounded: bool) -> bool {
        if !self.is_open() {
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
        let length = prefix.len() + payload.len();
        let (header, header_len) = server_header(op, length);
        let inline = length <= INLINE_MAX;
        let cost = if inline {
            header_len + length
        } else {
            length + FRAME_OVERHEAD
        };
        let (bytes, frames) = (self.queued_bytes.get() + cost, self.queued_frames.get() + 1);
        let (replay_bytes, replay_frames) = self.replay_held();
        if bounded
            && (bytes + replay_bytes > self.max_bytes || frames + replay_frames > self.max_frames)
        {
            self.drop_unsent();
            self.close(1008, "client too slow: send queue full");
            return false;
        }
        self.queued_bytes.set(bytes);
        self.queued_frames.set(frames);
        let mut queue = self.queue.borrow_mut();
        let was_empty = queue.chunks.is_empty();
        if inline {
            let encoded = header_len + length;
            let room = match queue.chunks.back_mut() {
                // A chunk the writer started on may still take frames: only its front
                // bytes are gone. Frames of another journal batch start a chunk of their
                // own: a chunk is released whole.
                Some(Chunk::Inline {
                    bytes, batch: b, ..
                }) => *b == batch && bytes.len() + encoded <= INLINE_CHUNK,
                _ => false,
            };
            if !room {
                queue.chunks.push_back(Chunk::Inline {
                    bytes: chunks::buffer(encoded.max(self.chunk_hint.get() as usize)),
                    frames: 0,
                    messages: 0,
                    message_bytes: 0,
                    batch,
                });
            }
            let Some(Chunk::Inline {
                bytes,
                frames,
                messages,
                message_bytes,
                ..
            }) = queue.chunks.back_mut()
            else {
                unreachable!("an inline chunk was just ensured");
            };
            bytes.extend_from_slice(&header[..header_len]);
            bytes.extend_from_slice(prefix);
            bytes.extend_from_slice(payload);
            *frames += 1;
            if message {
                *messages += 1;
                *message_bytes += length as u64;
            }
        } else {
            let payload = if !prefix.is_empty() {
                // A session's large message: copied once, with its number in front.
                Bytes::from([prefix, payload].concat())
            } else {
                match frame {
                    Frame::Text(text) => Bytes::from(text.clone()),
                    Frame::Binary(bytes) | Frame::Ping(bytes) | Frame::Pong(bytes) => bytes.clone(),
                    Frame::Close(_) | Frame::Frame(_) => unreachable!("refused above"),
                }
            };
            queue.chunks.push_back(Chunk::Shared {
                header,
                header_len: header_len as u8,
                payload,
                message,
                batch,
            });
        }
        drop(queue);
        if !journal::is_durable(batch) {
            // Written once its batch is durable (`Outbox::released`).
            self.wait_for(batch);
        } else if was_empty {
            // One write per batch: the whole queue is written at once, so only the first
            // frame of an empty queue needs to ask for it.
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
        let durable = journal::durable();
        let n = {
            let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
            let mut used = 0;
            let mut skip = queue.written;
            'chunks: for chunk in &queue.chunks {
                // What waits for its journal batch, and everything after it, stays.
                let batch = chunk.batch();
                if batch > durable {
                    break;
                }
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
            if used == 0 {
                // Everything queued waits for its journal batch.
                return Ok(None);
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
            batch: 0,
        });
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
            ..
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

    /// What the queued frames count against the bounds. A buffer of small frames counts
    /// until the socket took all of it.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }
}

#[cfg(test)]
mod tests;
