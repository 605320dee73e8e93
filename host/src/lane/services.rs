//! What every lane of the process uses: the configuration, the plugins, the store, the
//! other lanes, the metrics and the readiness flags. Built once by the server; read-only
//! or atomic, so the lanes share it without waiting on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmroom_wire::journal::Entry;

use crate::config::{Config, ConfigError};
use crate::document::DocumentKey;
use crate::guest::context::SettingsTable;
use crate::guest::engine::Slots;
use crate::guest::registry::Registry;
use crate::lane::address_limit::AddressLimit;
use crate::lane::table::{Health, Lanes};
use crate::metrics::Metrics;
use crate::net::access_token::AccessTokens;
use crate::net::webhook::Webhooks;
use crate::store::Storage;
use crate::store::journal::JournalSink;

/// What the journal held at startup, by document: its entries (some its snapshot may
/// already cover), or why they cannot be replayed.
pub type RecoveredEntries = HashMap<DocumentKey, Result<Vec<Entry>, String>>;

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
    /// Each plugin's access token verifier (`[plugin.NAME.auth]`).
    pub tokens: AccessTokens,
    /// Each plugin's settings (`[plugin.NAME.settings]`).
    pub settings: SettingsTable,
    /// Each plugin's webhook queue (`[plugin.NAME.webhook]`).
    pub webhooks: Webhooks,
    /// Where journal-mode documents make their records durable (none if no plugin
    /// journals).
    pub journal: Option<Arc<dyn JournalSink>>,
    /// What the journal held at startup of each document, until it opens.
    recovered: Mutex<RecoveredEntries>,
}

impl Services {
    /// Services for the lanes. Fails when a plugin's access tokens or settings cannot
    /// be used (a key file that does not parse, an unset environment variable).
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        storage: Arc<dyn Storage>,
        lanes: Arc<Lanes>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        slots: Arc<Slots>,
    ) -> Result<Services, ConfigError> {
        Ok(Services {
            tokens: AccessTokens::load(&config)?,
            settings: SettingsTable::load(&config)?,
            webhooks: Webhooks::start(&config, &metrics)?,
            addresses: AddressLimit::new(config.limits.max_connections_per_address),
            config,
            registry,
            storage,
            lanes,
            metrics,
            health,
            slots,
            journal: None,
            recovered: Mutex::new(HashMap::new()),
        })
    }

    /// These services with `journal` as the sink of journal-mode documents, and what it
    /// held of each document at startup.
    pub fn with_journal(
        mut self,
        journal: Option<Arc<dyn JournalSink>>,
        recovered: RecoveredEntries,
    ) -> Services {
        self.journal = journal;
        self.recovered = Mutex::new(recovered);
        self
    }

    /// What the journal held of `key` at startup, the first time it opens; why it cannot
    /// be replayed, every time (the document stays refused).
    pub fn recovered_entries(&self, key: &DocumentKey) -> Option<Result<Vec<Entry>, String>> {
        let mut recovered = self.recovered.lock().unwrap_or_else(|e| e.into_inner());
        match recovered.get(key)? {
            Ok(_) => recovered.remove(key),
            Err(why) => Some(Err(why.clone())),
        }
    }

    /// Whether the journal held inputs of `key` at startup that no open has taken yet.
    pub fn has_recovered(&self, key: &DocumentKey) -> bool {
        self.recovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// The documents the journal held at startup that have not opened since.
    pub fn recovered_documents(&self) -> Vec<DocumentKey> {
        self.recovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Reads the access tokens and settings of every plugin from `fresh` (the config
    /// file read again on SIGHUP). All other changes need a restart. On error nothing
    /// changes.
    pub fn reload_access(&self, fresh: &Config) -> Result<(), ConfigError> {
        // Both are checked before either changes.
        AccessTokens::load(fresh)?;
        SettingsTable::load(fresh)?;
        self.tokens.replace(fresh)?;
        self.settings.replace(fresh)
    }
}
