//! Checking a configuration that parsed: values that make no sense together or alone,
//! each refused with its name and the reason ([`ConfigError::Invalid`]).

use crate::config::{Config, ConfigError, MAX_GUEST_DEADLINE_MS};

impl Config {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason| Err(ConfigError::Invalid { name, reason });
        if self.admin_port.is_some()
            && !self.admin_bind.is_loopback()
            && self.admin_token.as_deref().is_none_or(str::is_empty)
        {
            return invalid(
                "admin_token",
                "required when the admin API listens beyond loopback: set admin_token or WASMROOM_ADMIN_TOKEN",
            );
        }
        if self.static_dir.as_ref().is_some_and(|d| !d.is_dir()) {
            return invalid("static", "not a directory");
        }
        if self.ports.is_empty() {
            return invalid("ports", "at least one port is needed");
        }
        let mut fixed: Vec<u16> = self.ports.iter().copied().filter(|&p| p != 0).collect();
        fixed.sort_unstable();
        if fixed.windows(2).any(|w| w[0] == w[1]) {
            return invalid("ports", "a port is listed twice");
        }
        let l = &self.limits;
        if l.max_message_bytes < 125 {
            return invalid("limits.max_message_bytes", "must be at least 125 bytes");
        }
        if l.guest_deadline_ms == 0 {
            return invalid("limits.guest_deadline_ms", "must be above 0");
        }
        if l.max_memory_bytes < (1 << 16) {
            return invalid(
                "limits.max_memory_bytes",
                "must be at least one page (64 KiB)",
            );
        }
        if l.max_documents == 0 {
            return invalid("limits.max_documents", "must be above 0");
        }
        if l.ping_interval_ms == 0 || l.ping_timeout_ms == 0 {
            return invalid(
                "limits.ping_interval_ms",
                "ping interval and timeout must be above 0",
            );
        }
        if l.crash_loop_traps == 0 {
            return invalid("limits.crash_loop_traps", "must be above 0");
        }
        if l.max_queued_frames == 0 {
            return invalid("limits.max_queued_frames", "must be above 0");
        }
        if l.max_incoming_bytes_per_lane < l.max_message_bytes {
            return invalid(
                "limits.max_incoming_bytes_per_lane",
                "must be at least limits.max_message_bytes",
            );
        }
        if l.open_rate_per_address == 0 || l.open_burst_per_address == 0 {
            return invalid(
                "limits.open_rate_per_address",
                "open rate and burst per address must be above 0",
            );
        }
        if l.max_messages_per_sec == 0 || l.max_bytes_per_sec == 0 {
            return invalid(
                "limits.max_messages_per_sec",
                "message and byte rates must be above 0",
            );
        }
        if l.max_connections_per_address == 0 {
            return invalid("limits.max_connections_per_address", "must be above 0");
        }
        self.validate_durations()?;
        if !(1..=64).contains(&self.store.pool_size) {
            return invalid("store.pool_size", "must be between 1 and 64");
        }
        self.validate_plugins()?;
        Ok(())
    }

    /// Durations must fit the clock (a huge value would overflow `Instant` arithmetic)
    /// and mean something; each bound is stated in its error.
    fn validate_durations(&self) -> Result<(), ConfigError> {
        const DAY: u64 = 86_400;
        const YEAR: u64 = 365 * DAY;
        let l = &self.limits;
        // (name, value, lowest, highest, what the error says)
        let secs: [(&'static str, u64, u64, u64, &'static str); 5] = [
            (
                "idle_grace_secs",
                self.idle_grace_secs,
                0,
                YEAR,
                "must be at most a year (31536000 s)",
            ),
            (
                "checkpoint_secs",
                self.checkpoint_secs,
                0,
                DAY,
                "must be at most a day (86400 s)",
            ),
            (
                "shutdown_timeout_secs",
                self.shutdown_timeout_secs,
                1,
                DAY,
                "must be between 1 s and a day (86400 s)",
            ),
            (
                "limits.crash_loop_window_secs",
                l.crash_loop_window_secs,
                1,
                YEAR,
                "must be between 1 s and a year (31536000 s)",
            ),
            (
                "limits.crash_backoff_secs",
                l.crash_backoff_secs,
                0,
                YEAR,
                "must be at most a year (31536000 s)",
            ),
        ];
        let millis: [(&'static str, u64, u64, u64, &'static str); 9] = [
            (
                "store.lease_ttl_ms",
                self.store.lease_ttl_ms,
                500,
                600_000,
                "must be between 500 ms and 10 minutes",
            ),
            (
                "store.handoff_timeout_ms",
                self.store.handoff_timeout_ms,
                0,
                60_000,
                "must be at most a minute (60000 ms)",
            ),
            (
                "session_grace_ms",
                self.session_grace_ms,
                0,
                DAY * 1000,
                "must be at most a day (86400000 ms)",
            ),
            (
                "http_idle_grace_ms",
                self.http_idle_grace_ms,
                0,
                DAY * 1000,
                "must be at most a day (86400000 ms)",
            ),
            (
                "limits.guest_deadline_ms",
                l.guest_deadline_ms,
                1,
                MAX_GUEST_DEADLINE_MS,
                "must be between 1 and 60000 ms",
            ),
            (
                "limits.handshake_timeout_ms",
                l.handshake_timeout_ms,
                1,
                DAY * 1000,
                "must be between 1 ms and a day (86400000 ms)",
            ),
            (
                "limits.ping_interval_ms",
                l.ping_interval_ms,
                1,
                DAY * 1000,
                "must be between 1 ms and a day (86400000 ms)",
            ),
            (
                "limits.ping_timeout_ms",
                l.ping_timeout_ms,
                1,
                DAY * 1000,
                "must be between 1 ms and a day (86400000 ms)",
            ),
            (
                "limits.message_timeout_ms",
                l.message_timeout_ms,
                1,
                DAY * 1000,
                "must be between 1 ms and a day (86400000 ms)",
            ),
        ];
        for (name, value, low, high, reason) in secs.into_iter().chain(millis) {
            if value < low || value > high {
                return Err(ConfigError::Invalid { name, reason });
            }
        }
        Ok(())
    }
}
