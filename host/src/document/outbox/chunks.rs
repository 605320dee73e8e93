//! The bytes of a connection's queue: small frames encoded back to back, large ones as
//! a header beside their shared payload (see [`super`]).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::config::FRAME_OVERHEAD;

/// Payloads up to this size are copied into the connection's buffer; larger ones stay
/// shared between the connections they are queued for.
pub const INLINE_MAX: usize = 1024;

/// A buffer of small frames is closed at this size and a new one started, so that the
/// bytes a write took are given back soon after (see [`super::Outbox::queued_bytes`]).
pub(super) const INLINE_CHUNK: usize = 16 * 1024;

/// The smallest buffer of small frames.
pub(super) const MIN_CHUNK: usize = 256;

/// Most slices handed to one vectored write.
pub(super) const MAX_SLICES: usize = 64;

/// Most drained buffers a lane keeps for its next chunks.
const MAX_SPARE: usize = 64;

thread_local! {
    /// Buffers of small frames the socket took all of, kept for the next chunk of any
    /// connection of this lane (outboxes never leave their lane's thread). The one
    /// reused is the one written last, still in the CPU's cache; a fresh allocation
    /// per batch made the copies into 1,000 queues miss it.
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer for a chunk of at least `capacity` bytes: the last one given back
/// if there is one.
pub(super) fn buffer(capacity: usize) -> Vec<u8> {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(mut spare) => {
            spare.reserve(capacity);
            spare
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Keeps a drained chunk's buffer for [`buffer`], unless the lane keeps enough.
pub(super) fn give_back(mut bytes: Vec<u8>) {
    if bytes.capacity() < MIN_CHUNK || bytes.capacity() > INLINE_CHUNK {
        return;
    }
    bytes.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE {
            spare.push(bytes);
        }
    });
}

/// Text and binary messages whose last byte the socket took, for the lane's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes the socket took.
    pub bytes: usize,
    /// Text and binary messages completed.
    pub messages: u64,
    /// Their payload bytes.
    pub message_bytes: u64,
}

/// Queued frames, in order.
#[derive(Debug)]
pub(super) enum Chunk {
    /// Small frames, encoded back to back.
    Inline {
        bytes: Vec<u8>,
        frames: usize,
        messages: u64,
        message_bytes: u64,
        /// The journal batch its frames wait for (0: none; see `document::journal`).
        batch: u64,
    },
    /// One large frame: its header, and its payload shared with other connections.
    Shared {
        header: [u8; 10],
        header_len: u8,
        payload: Bytes,
        message: bool,
        /// The journal batch it waits for (0: none).
        batch: u64,
    },
}

impl Chunk {
    /// The journal batch the chunk waits for (0: none).
    pub(super) fn batch(&self) -> u64 {
        match self {
            Chunk::Inline { batch, .. } | Chunk::Shared { batch, .. } => *batch,
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Chunk::Inline { bytes, .. } => bytes.len(),
            Chunk::Shared {
                header_len,
                payload,
                ..
            } => *header_len as usize + payload.len(),
        }
    }

    /// What the chunk counts against the bounds, in bytes and frames.
    pub(super) fn cost(&self) -> (usize, usize) {
        match self {
            Chunk::Inline { bytes, frames, .. } => (bytes.len(), *frames),
            Chunk::Shared { payload, .. } => (payload.len() + FRAME_OVERHEAD, 1),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk the socket already took.
    pub(super) written: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare_count() -> usize {
        SPARE.with_borrow(Vec::len)
    }

    #[test]
    fn the_last_buffer_given_back_is_the_next_one_taken() {
        let mut drained = buffer(MIN_CHUNK);
        drained.extend_from_slice(b"frames the socket took");
        let address = drained.as_ptr();
        give_back(drained);
        let next = buffer(MIN_CHUNK);
        assert_eq!(next.as_ptr(), address);
        assert!(next.is_empty(), "a reused buffer starts empty");
    }

    #[test]
    fn a_lane_keeps_a_bounded_number_of_ordinary_buffers() {
        for _ in 0..MAX_SPARE + 10 {
            give_back(Vec::with_capacity(MIN_CHUNK));
        }
        assert_eq!(spare_count(), MAX_SPARE);
        while spare_count() > 0 {
            drop(buffer(0));
        }
        give_back(Vec::with_capacity(INLINE_CHUNK * 2));
        give_back(Vec::with_capacity(8));
        assert_eq!(spare_count(), 0, "oversized and tiny buffers are freed");
    }
}
