//! What every lane of the process uses: the configuration, the plugins, the store, the
//! other lanes, the metrics and the readiness flags. Built once by the server; read-only
//! or atomic, so the lanes share it without waiting on each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::guest::engine::Slots;
use crate::guest::registry::Registry;
use crate::lane::address_limit::AddressLimit;
use crate::lane::table::{Health, Lanes};
use crate::metrics::Metrics;
use crate::store::Storage;

/// The process-wide services a lane uses.
#[derive(Debug)]
pub struct Services {
    /// The configuration.
    pub config: Arc<Config>,
    /// The compiled plugins.
    pub registry: Arc<Registry>,
    /// Where documents are saved.
    pub storage: Arc<dyn Storage>,
    /// Every lane, and which one owns which document.
    pub lanes: Arc<Lanes>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Readiness: shutdown begun, a lane down.
    pub health: Arc<Health>,
    /// The instance pool's slots: documents up to `max_documents`, a reserve for
    /// migrations.
    pub slots: Arc<Slots>,
    /// WebSockets per client address, across the lanes.
    pub addresses: Arc<AddressLimit>,
    next_connection: AtomicU64,
}

impl Services {
    /// Services for the lanes.
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        storage: Arc<dyn Storage>,
        lanes: Arc<Lanes>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        slots: Arc<Slots>,
    ) -> Services {
        Services {
            addresses: AddressLimit::new(config.limits.max_connections_per_address),
            config,
            registry,
            storage,
            lanes,
            metrics,
            health,
            slots,
            next_connection: AtomicU64::new(1),
        }
    }

    /// A connection id unique in the process.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
