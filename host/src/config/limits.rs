//! The `[limits]` section: what protects the lanes from guests and clients.

use std::time::Duration;

use serde::Deserialize;

/// The longest guest call deadline: a lane serves nothing else while a call runs.
pub const MAX_GUEST_DEADLINE_MS: u64 = 60_000;

/// What a queued frame with a shared payload costs beyond its payload, for the queue
/// bounds: the queue's slot, the frame's header and its reference count (about 55 bytes
/// measured; rounded up).
pub const FRAME_OVERHEAD: usize = 64;

/// Limits. Defaults follow Daphne where it has one (message size, handshake timeout).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message or HTTP body, in either direction.
    pub max_message_bytes: usize,
    /// Longest a single guest call may run before it traps.
    pub guest_deadline_ms: u64,
    /// Largest linear memory of one document's instance.
    pub max_memory_bytes: usize,
    /// Most pending timers per document.
    pub max_timers: u32,
    /// Most live documents in the whole process (sizes the instance pool).
    pub max_documents: u32,
    /// Time allowed for a client to send its complete HTTP request head.
    pub handshake_timeout_ms: u64,
    /// Bytes a connection may have queued before it counts as a slow reader (1008). A
    /// queued frame counts its encoded bytes, or, when its payload is larger than
    /// `outbox::INLINE_MAX` (and shared), its payload plus [`FRAME_OVERHEAD`] bytes.
    pub max_queued_bytes: usize,
    /// Frames a connection may have queued before it counts as a slow reader (1008).
    pub max_queued_frames: usize,
    /// How long a client may take to send one whole message (every frame of it) once
    /// its first byte arrived, and any frame; 1008 beyond.
    pub message_timeout_ms: u64,
    /// Bytes a lane holds for requests and messages still arriving: HTTP bodies, partial
    /// WebSocket messages, static files being sent. Beyond it, new ones are refused (503,
    /// close 1013).
    pub max_incoming_bytes_per_lane: usize,
    /// Documents one client address may open per second on a lane (refilling), beyond
    /// `open_burst_per_address` (429).
    pub open_rate_per_address: u32,
    /// Documents one client address may open at once before the rate applies.
    pub open_burst_per_address: u32,
    /// Messages (and pings) one connection may send per second, after a burst of two
    /// seconds' worth (1008 beyond).
    pub max_messages_per_sec: u32,
    /// Message bytes one connection may send per second, after a burst of two seconds'
    /// worth or one largest message (1008 beyond).
    pub max_bytes_per_sec: u64,
    /// WebSocket connections one client address may hold at once in the process (IPv6
    /// by /64; behind a proxy with `proxy_headers`, the address it reports); 429 beyond.
    pub max_connections_per_address: u32,
    /// Most WebSocket connections of one document (503 beyond).
    pub max_connections_per_document: usize,
    /// Most connections of one lane, WebSocket or HTTP (503 beyond).
    pub max_connections_per_lane: usize,
    /// How often the server pings an idle client.
    pub ping_interval_ms: u64,
    /// How long a client may take to answer a ping (with any frame) before it is closed.
    pub ping_timeout_ms: u64,
    /// Traps within `crash_loop_window_secs` that put a document in back-off.
    pub crash_loop_traps: u32,
    /// The window over which traps are counted.
    pub crash_loop_window_secs: u64,
    /// How long a crash-looping document refuses connections (close 1013).
    pub crash_backoff_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            guest_deadline_ms: 100,
            max_memory_bytes: 64 << 20,
            max_timers: 1000,
            max_documents: 10_000,
            handshake_timeout_ms: 5_000,
            max_queued_bytes: 8 << 20,
            max_queued_frames: 16_384,
            message_timeout_ms: 10_000,
            max_incoming_bytes_per_lane: 64 << 20,
            open_rate_per_address: 100,
            open_burst_per_address: 1_000,
            max_messages_per_sec: 1_000,
            max_bytes_per_sec: 16 << 20,
            max_connections_per_address: 256,
            max_connections_per_document: 10_000,
            max_connections_per_lane: 100_000,
            ping_interval_ms: 20_000,
            ping_timeout_ms: 30_000,
            crash_loop_traps: 3,
            crash_loop_window_secs: 60,
            crash_backoff_secs: 30,
        }
    }
}

impl Limits {
    /// The guest call deadline.
    pub fn guest_deadline(&self) -> Duration {
        Duration::from_millis(self.guest_deadline_ms)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The ping interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// The ping timeout.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    /// How long one message may take to arrive.
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }
}
