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
    },
    /// One large frame: its header, and its payload shared with other connections.
    Shared {
        header: [u8; 10],
        header_len: u8,
        payload: Bytes,
        message: bool,
    },
}

impl Chunk {
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
