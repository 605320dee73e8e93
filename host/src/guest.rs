//! The host side of the WIT contract: bindings generated from `wit/`, the state each
//! document's store carries, and the host functions a consumer calls.
//!
//! Host functions never touch sockets. They check their arguments against the document's
//! state, then record an [`Effect`]; the [document](crate::document) applies the effects in
//! order once the guest call has returned. That keeps a guest call free of I/O and keeps
//! the store data `Send`, as wasmtime requires, while the lane's own state stays `!Send`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::timers::TimerTable;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "room",
    additional_derives: [PartialEq, Eq],
});

pub use self::wasmroom::consumer::types::{ConnectInfo, HostError, LogLevel, Message, Rejection};
pub use exports::wasmroom::consumer::consumer::{Decision, HttpRequest, HttpResponse};

/// Something a guest asked for during a call, applied by the document afterwards.
#[derive(Debug)]
pub enum Effect {
    /// Queue a frame for one connection.
    Send(u64, Frame),
    /// Queue one shared frame for every connection except some.
    Broadcast(Frame, Vec<u64>),
    /// Close a connection.
    Close(u64, u16, String),
}

/// The data of one document's store.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and instance caps, checked by wasmtime.
    pub limits: MeteredLimits,
    /// Effects of the current call, in call order.
    pub effects: Vec<Effect>,
    /// Open connections, oldest first (ids only grow).
    pub connections: BTreeSet<u64>,
    /// Connections the guest (or the host) has started to close.
    pub closing: BTreeSet<u64>,
    /// Pending timers.
    pub timers: TimerTable,
    /// Whether the current call set or cancelled a timer.
    pub timers_changed: bool,
    max_message_bytes: usize,
    max_timers: u32,
    /// `plugin/document`, for log lines.
    tag: Arc<str>,
}

/// The store's limits, also counting the linear memory the instance holds (for the
/// metrics and the admin API; wasmtime asks the limiter before every memory grows).
#[derive(Debug)]
pub struct MeteredLimits {
    limits: StoreLimits,
    /// Linear memory of all the instance's memories, in bytes.
    pub memory_bytes: u64,
}

impl wasmtime::ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes += desired.saturating_sub(current) as u64;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl std::fmt::Debug for GuestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestState")
            .field("tag", &self.tag)
            .field("connections", &self.connections.len())
            .field("timers", &self.timers.len())
            .finish_non_exhaustive()
    }
}

impl GuestState {
    /// State for a new document. WASI is linked but grants nothing: no files, network,
    /// environment or arguments; stdout and stderr are discarded.
    pub fn new(
        tag: Arc<str>,
        max_memory_bytes: usize,
        max_message_bytes: usize,
        max_timers: u32,
    ) -> GuestState {
        GuestState {
            wasi: crate::wasi::context(&tag),
            table: ResourceTable::new(),
            limits: MeteredLimits {
                limits: StoreLimitsBuilder::new()
                    .memory_size(max_memory_bytes)
                    .instances(CORE_INSTANCE_LIMIT)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_bytes: 0,
            },
            effects: Vec::new(),
            connections: BTreeSet::new(),
            closing: BTreeSet::new(),
            timers: TimerTable::default(),
            timers_changed: false,
            max_message_bytes,
            max_timers,
            tag,
        }
    }

    fn check_size(&self, msg: &Message) -> Result<(), HostError> {
        let len = match msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        if len > self.max_message_bytes {
            return Err(HostError::TooLarge(self.max_message_bytes as u64));
        }
        Ok(())
    }

    fn check_open(&self, connection: u64) -> Result<(), HostError> {
        if !self.connections.contains(&connection) {
            return Err(HostError::UnknownConnection);
        }
        if self.closing.contains(&connection) {
            return Err(HostError::Closing);
        }
        Ok(())
    }
}

/// Core instances one component may create; generous for Rust, C, JS and Python guests.
const CORE_INSTANCE_LIMIT: usize = 64;

/// Turns a guest message into a frame without copying its bytes.
pub fn frame(msg: Message) -> Frame {
    match msg {
        Message::Text(t) => Frame::Text(Utf8Bytes::from(t)),
        Message::Binary(b) => Frame::Binary(Bytes::from(b)),
    }
}

/// Whether a server may send `code` in a close frame (RFC 6455, section 7.4).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1003 | 1007..=1014 | 3000..=4999)
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl self::wasmroom::consumer::types::Host for GuestState {}

impl self::wasmroom::consumer::host::Host for GuestState {
    fn send(&mut self, connection: u64, msg: Message) -> Result<(), HostError> {
        self.check_open(connection)?;
        self.check_size(&msg)?;
        self.effects.push(Effect::Send(connection, frame(msg)));
        Ok(())
    }

    fn broadcast(&mut self, msg: Message, except: Vec<u64>) -> Result<(), HostError> {
        self.check_size(&msg)?;
        self.effects.push(Effect::Broadcast(frame(msg), except));
        Ok(())
    }

    fn close(&mut self, connection: u64, code: u16, reason: String) -> Result<(), HostError> {
        self.check_open(connection)?;
        if !valid_close_code(code) {
            return Err(HostError::InvalidCloseCode);
        }
        self.closing.insert(connection);
        self.effects
            .push(Effect::Close(connection, code, truncate_reason(reason)));
        Ok(())
    }

    fn set_timer(&mut self, id: u64, delay_ms: u64) -> Result<(), HostError> {
        if !self.timers.contains(id) && self.timers.len() >= self.max_timers as usize {
            return Err(HostError::TooManyTimers(self.max_timers));
        }
        // Clamp absurd delays instead of overflowing the clock: ~30 years is "never".
        let delay = Duration::from_millis(delay_ms.min(1 << 40));
        self.timers.set(id, Instant::now() + delay);
        self.timers_changed = true;
        Ok(())
    }

    fn cancel_timer(&mut self, id: u64) -> bool {
        self.timers_changed = true;
        self.timers.cancel(id)
    }

    fn connections(&mut self) -> Vec<u64> {
        self.connections.iter().copied().collect()
    }

    fn log(&mut self, level: LogLevel, text: String) {
        let tag = &*self.tag;
        match level {
            LogLevel::Trace => tracing::trace!(target: "guest", doc = tag, "{text}"),
            LogLevel::Debug => tracing::debug!(target: "guest", doc = tag, "{text}"),
            LogLevel::Info => tracing::info!(target: "guest", doc = tag, "{text}"),
            LogLevel::Warn => tracing::warn!(target: "guest", doc = tag, "{text}"),
            LogLevel::Error => tracing::error!(target: "guest", doc = tag, "{text}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Close reasons are limited to 123 bytes by the protocol; cut on a char boundary.
pub fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::wasmroom::consumer::host::Host;
    use super::*;

    fn state() -> GuestState {
        let mut s = GuestState::new("t/d".into(), 1 << 20, 10, 2);
        s.connections.insert(1);
        s
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let mut s = state();
        assert_eq!(
            s.send(9, Message::Text("x".into())),
            Err(HostError::UnknownConnection)
        );
        assert_eq!(
            s.send(1, Message::Text("x".repeat(11))),
            Err(HostError::TooLarge(10))
        );
        assert_eq!(
            s.close(1, 1005, String::new()),
            Err(HostError::InvalidCloseCode)
        );
        assert_eq!(s.close(1, 1000, String::new()), Ok(()));
        assert_eq!(s.close(1, 1000, String::new()), Err(HostError::Closing));
        assert_eq!(
            s.send(1, Message::Text("x".into())),
            Err(HostError::Closing)
        );
        assert_eq!(s.effects.len(), 1);
    }

    #[test]
    fn timers_are_capped_but_rescheduling_is_free() {
        let mut s = state();
        assert_eq!(s.set_timer(1, 10), Ok(()));
        assert_eq!(s.set_timer(2, 10), Ok(()));
        assert_eq!(s.set_timer(3, 10), Err(HostError::TooManyTimers(2)));
        assert_eq!(s.set_timer(2, 20), Ok(()));
        assert!(s.cancel_timer(1));
        assert_eq!(s.set_timer(3, u64::MAX), Ok(()));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let r = truncate_reason("é".repeat(100));
        assert!(r.len() <= 123);
        assert!(r.is_char_boundary(r.len()));
    }
}
