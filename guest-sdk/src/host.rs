//! The host functions, as plain Rust functions: what they ask for happens in call order
//! once the current hook returns.

use std::time::Duration;

use crate::wit::wasmroom::consumer::context as c;
use crate::wit::wasmroom::consumer::host as h;
use crate::wit::wasmroom::consumer::types as t;
use crate::{ConnectionId, HostError, LogLevel, Message, TimerId};

/// Sends `msg` to one connection of this document.
pub fn send(to: ConnectionId, msg: impl Into<Message>) -> Result<(), HostError> {
    h::send(to, &to_wit(msg.into())).map_err(from_wit_error)
}

/// Sends `msg` to every connection of this document except those in `except`. The host
/// encodes it once for all recipients.
pub fn broadcast(msg: impl Into<Message>, except: &[ConnectionId]) -> Result<(), HostError> {
    h::broadcast(&to_wit(msg.into()), except).map_err(from_wit_error)
}

/// Closes a connection with a close code (1000, 1001, 1008, 1011, 3000-4999...) and a
/// short reason.
pub fn close(conn: ConnectionId, code: u16, reason: &str) -> Result<(), HostError> {
    h::close(conn, code, reason).map_err(from_wit_error)?;
    CLOSED.with_borrow_mut(|closed| closed.push(conn));
    Ok(())
}

std::thread_local! {
    /// The connections [`close`] closed during the current hook (cleared as each starts).
    pub(crate) static CLOSED: std::cell::RefCell<Vec<ConnectionId>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether the current hook closed `conn` with [`close`]: what the default
/// [`Consumer::on_messages`](crate::Consumer::on_messages) stops at.
pub fn closed_in_this_call(conn: ConnectionId) -> bool {
    CLOSED.with_borrow(|closed| closed.contains(&conn))
}

/// Calls [`Consumer::on_timer`](crate::Consumer::on_timer) with `id` after `delay`; setting a pending id
/// reschedules it.
pub fn set_timer(id: TimerId, delay: Duration) -> Result<(), HostError> {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    h::set_timer(id, ms).map_err(from_wit_error)
}

/// Cancels a pending timer; returns whether it was pending.
pub fn cancel_timer(id: TimerId) -> bool {
    h::cancel_timer(id)
}

/// The open connections of this document, oldest first.
pub fn connections() -> Vec<ConnectionId> {
    h::connections()
}

/// Writes a line to the host's log, tagged with the plugin and document.
pub fn log(level: LogLevel, text: &str) {
    let level = match level {
        LogLevel::Trace => t::LogLevel::Trace,
        LogLevel::Debug => t::LogLevel::Debug,
        LogLevel::Info => t::LogLevel::Info,
        LogLevel::Warn => t::LogLevel::Warn,
        LogLevel::Error => t::LogLevel::Error,
    };
    h::log(level, text);
}

/// The claims of `conn`'s access token, verified by the host before `on_connect`, as the
/// token's JSON payload (e.g. `{"sub":"42","doc":"notes","role":"viewer","exp":...}`).
/// `None` when the plugin takes no tokens (`[plugin.NAME.auth]`) or `conn` is not a
/// connection of this document. Parse it with any JSON library to decide roles.
pub fn claims(conn: ConnectionId) -> Option<String> {
    c::claims(conn)
}

/// The setting `name` from `[plugin.NAME.settings]` in the host's config (environment
/// variables substituted), or `None`. Read it when needed rather than once in `open`:
/// a config reload changes it under live documents.
pub fn setting(name: &str) -> Option<String> {
    c::setting(name)
}

/// The document's clock: milliseconds since the Unix epoch as of the start of this call.
/// It does not move during the call (`std::time` reads the same clock) and never goes
/// backwards; to wait, set a timer.
pub fn now_ms() -> u64 {
    h::now_ms()
}

pub(crate) fn to_wit(msg: Message) -> t::Message {
    match msg {
        Message::Text(s) => t::Message::Text(s),
        Message::Binary(b) => t::Message::Binary(b),
    }
}

fn from_wit_error(e: t::HostError) -> HostError {
    match e {
        t::HostError::UnknownConnection => HostError::UnknownConnection,
        t::HostError::Closing => HostError::Closing,
        t::HostError::TooLarge(n) => HostError::TooLarge(n),
        t::HostError::TooManyTimers(n) => HostError::TooManyTimers(n),
        t::HostError::InvalidCloseCode => HostError::InvalidCloseCode,
    }
}
