//! The host functions a consumer calls (`wasmroom:consumer/host`): each checks its
//! arguments against the document's state and records an [`Effect`], or answers at once
//! (`connections`, `now-ms`, `log`). None does I/O. Also `wasmroom:consumer/context`
//! (0.1.1): a connection's token claims and the plugin's settings (the document's copy,
//! the same for the whole call).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wasmtime_wasi::{WasiCtxView, WasiView};

use crate::guest::bindings::wasmroom::consumer::{context, host, types};
use crate::guest::bindings::{HostError, LogLevel, Message};
use crate::guest::state::{Effect, GuestState};

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

impl types::Host for GuestState {}

impl host::Host for GuestState {
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
        if self.muted {
            return;
        }
        let tag = &*self.tag;
        match level {
            LogLevel::Trace => tracing::trace!(target: "guest", doc = tag, "{text}"),
            LogLevel::Debug => tracing::debug!(target: "guest", doc = tag, "{text}"),
            LogLevel::Info => tracing::info!(target: "guest", doc = tag, "{text}"),
            LogLevel::Warn => tracing::warn!(target: "guest", doc = tag, "{text}"),
            LogLevel::Error => tracing::error!(target: "guest", doc = tag, "{text}"),
        }
    }

    /// The document's clock for this call: the same for every read within it.
    fn now_ms(&mut self) -> u64 {
        self.clock.now_ms()
    }
}

impl context::Host for GuestState {
    fn claims(&mut self, connection: u64) -> Option<String> {
        self.claims.get(&connection).map(|c| c.to_string())
    }

    fn setting(&mut self, name: String) -> Option<String> {
        self.settings.get(&name)
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
    use super::*;
    use crate::guest::bindings::wasmroom::consumer::host::Host;

    fn state() -> GuestState {
        let mut s = GuestState::new("t/d".into(), 1 << 20, 10, 2, Default::default(), &[0; 32]);
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
