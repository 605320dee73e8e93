//! The `[store]` section: where documents live when several hosts share them.

use std::time::Duration;

use serde::Deserialize;

/// The `[store]` section.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (also `--store` and `WASMROOM_STORE`):
    /// documents in PostgreSQL, so that several hosts can serve them, one at a time.
    pub url: Option<String>,
    /// How long a host's leases live without a heartbeat (it heartbeats every third).
    pub lease_ttl_ms: u64,
    /// How long a connection waits for a document another live host holds to be handed
    /// back before it gets 503.
    pub handoff_timeout_ms: u64,
    /// Connections each host keeps to PostgreSQL.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            lease_ttl_ms: 10_000,
            handoff_timeout_ms: 3_000,
            pool_size: 8,
        }
    }
}

// By hand: the URL may hold a password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_ref().map(|_| "(set)"))
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("handoff_timeout_ms", &self.handoff_timeout_ms)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl StoreConfig {
    /// How long a lease lives without a heartbeat.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// How long a connection waits for a hand-back.
    pub fn handoff_timeout(&self) -> Duration {
        Duration::from_millis(self.handoff_timeout_ms)
    }
}
