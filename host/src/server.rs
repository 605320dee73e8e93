//! Starting and stopping the whole server: bind every port, load the plugins, start one
//! lane thread per port and the epoch ticker; on shutdown, stop them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::config::{Config, ConfigError, Durability};
use crate::guest::engine::{self, EngineError, EpochTicker};
use crate::guest::plugin;
use crate::guest::registry::Registry;
use crate::guest::versions::{SharedVersions, VersionStore};
use crate::lane::services::RecoveredEntries;
use crate::lane::{self, Health, LaneAddress, Lanes, Services};
use crate::metrics::Metrics;
use crate::ops::admin::{AdminContext, AdminServer};
use crate::reload::Reloader;
use crate::store::journal::{JournalSink, MemoryJournal};
use crate::store::journal_file::{FileJournal, Recovered};
use crate::store::postgres::{PostgresStore, StoreError};
use crate::store::{FileStorage, Storage};

/// Why the server could not start. Nothing is left running when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine could not be created (usually: the instance pool does not fit in the
    /// address space; lower `limits.max_documents` or `limits.max_memory_bytes`).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The journal's directory cannot be used (another wasmroom uses it, or it cannot be
    /// read or written): see the message.
    #[error("cannot use the journal: {0}")]
    Journal(#[source] crate::store::StorageError),
    /// The host imports could not be linked (a bug in wasmroom).
    #[error("cannot link the host imports: {0}")]
    Link(String),
    /// The plugins directory cannot be read: create it or pass `--plugins DIR`.
    #[error("cannot read the plugins directory {path}: {source}")]
    Plugins {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A port could not be bound (in use, or privileged).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The shared store (`--store`) cannot be used: see the message.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Server::run_until_signal`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// SIGINT or SIGTERM: a normal stop.
    Signal,
    /// A lane failed (a panic in wasmroom's own code): stop the process with an error so
    /// that a supervisor restarts it. The text says what failed.
    Failed(String),
}

/// The process's stop and reload signals (SIGINT, SIGTERM, SIGHUP), caught from the moment
/// [`Signals::catch`] returns: call it before [`Server::start`], so that a SIGTERM that
/// arrives while the server starts (its ports already accept connections) stops it
/// cleanly instead of killing the process.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching the signals. Must be called inside the Tokio runtime that will run
    /// [`Server::run_until_signal`] (`Runtime::enter`).
    pub fn catch() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves the lanes running
/// until the process exits.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    lanes: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    reloader: Reloader,
    /// What the lanes share; SIGHUP re-reads its access tokens and settings.
    services: Arc<Services>,
    /// Set to stop the plugin watcher.
    watching: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    admin: Option<AdminServer>,
    health: Arc<Health>,
    /// The shared store and the thread that forwards its events, if there is one.
    store: Option<(Arc<PostgresStore>, crate::cluster::Forwarder)>,
    _ticker: EpochTicker,
}

impl Server {
    /// Binds every port of `config`, loads the plugins and starts the lanes. Returns once
    /// every lane is listening.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        // Bind first: a port in use is the most likely failure and the cheapest to report.
        let listeners = config
            .ports
            .iter()
            .map(|&port| bind(SocketAddr::new(config.bind, port)))
            .collect::<Result<Vec<_>, _>>()?;
        let admin_listener = config
            .admin_port
            .map(|port| bind(SocketAddr::new(config.admin_bind, port)))
            .transpose()?;
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("a bound socket has an address"))
            .collect();

        let metrics = Arc::new(Metrics::new());
        // The shared store first: it may bring newer plugin versions for the registry.
        let shared = crate::cluster::start(&config, &metrics)?;
        let versions_shared = shared
            .as_ref()
            .map(|s| s.store.clone() as Arc<dyn SharedVersions>);
        let (engines, registry) = load_plugins(&config, &metrics, versions_shared)?;
        let ticker = EpochTicker::start(engines).map_err(StartError::Thread)?;
        let storage: Arc<dyn Storage> = match &shared {
            Some(shared) => shared.store.clone(),
            None => Arc::new(FileStorage::new(config.data.clone())),
        };
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..listeners.len())
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let lane_table = Arc::new(Lanes::new(
            addrs
                .iter()
                .zip(senders)
                .map(|(&addr, commands)| {
                    LaneAddress::new(addr, config.lane_name(addr.port()), commands)
                })
                .collect(),
        ));
        let health = Arc::new(Health::new(storage.leases().cloned()));
        let (journal, recovered) = journal_sink(&config, storage.as_ref())?;
        let config = Arc::new(config);
        let services = Arc::new(
            Services::new(
                config.clone(),
                registry.clone(),
                storage,
                lane_table.clone(),
                metrics.clone(),
                health.clone(),
                engine::Slots::new(&config),
            )?
            .with_journal(journal, recovered),
        );

        let (stop, stopped) = watch::channel(false);
        let reloader = Reloader::new(registry.clone(), lane_table.clone());
        let lane_table_for_store = lane_table.clone();
        let watching = Arc::new(AtomicBool::new(false));
        let watcher = match reloader.clone().watch(watching.clone()) {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {}: {e}; reload with SIGHUP",
                    registry.dir().display()
                );
                None
            }
        };
        // A file that changed between the first load and the watcher's start. Before the
        // lanes announce themselves, so that a started server is done reading its plugins.
        reloader.reload_all();
        let mut lanes = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let commands = receivers.remove(0);
            let thread = spawn_lane(index, listener, services.clone(), stopped.clone(), commands);
            match thread {
                Ok(t) => lanes.push(t),
                Err(e) => {
                    watching.store(true, Ordering::Relaxed);
                    let _ = stop.send(true);
                    for lane in lanes {
                        let _ = lane.join();
                    }
                    return Err(StartError::Thread(e));
                }
            }
        }
        let admin = match admin_listener {
            Some(listener) => Some(
                AdminServer::start(
                    listener,
                    AdminContext {
                        token: config.admin_token.clone(),
                        handshake_timeout: config.limits.handshake_timeout(),
                        registry,
                        metrics,
                        lanes: lane_table,
                        health: health.clone(),
                        reloader: reloader.clone(),
                    },
                )
                .map_err(StartError::Thread)?,
            ),
            None => None,
        };
        let store = match shared {
            Some(shared) => Some(
                shared
                    .forward(
                        lane_table_for_store,
                        reloader.clone(),
                        config.plugins.clone(),
                    )
                    .map_err(StartError::Thread)?,
            ),
            None => None,
        };
        Ok(Server {
            addrs,
            lanes,
            stop,
            reloader,
            services,
            watching,
            watcher,
            admin,
            health,
            store,
            _ticker: ticker,
        })
    }

    /// Re-reads the plugins directory (what SIGHUP does): changed plugins are reloaded
    /// under their live documents.
    pub fn reload_all(&self) {
        self.reloader.reload_all();
    }

    /// Serves until SIGINT or SIGTERM, or until a lane fails; SIGHUP reloads the
    /// plugins. Either way, call [`Server::shutdown`] next.
    pub async fn run_until_signal(&self, signals: Signals) -> Stopped {
        #[cfg(unix)]
        {
            let Signals {
                mut interrupt,
                mut terminate,
                mut hangup,
            } = signals;
            loop {
                tokio::select! {
                    _ = interrupt.recv() => return Stopped::Signal,
                    _ = terminate.recv() => return Stopped::Signal,
                    why = self.health.failure() => return Stopped::Failed(why),
                    _ = hangup.recv() => {
                        tracing::info!("SIGHUP: reloading plugins");
                        self.reload_access();
                        let reloader = self.reloader.clone();
                        // Compiling is slow: off this thread, as on the watcher's, and
                        // not awaited, so SIGINT/SIGTERM still stop the server meanwhile.
                        tokio::task::spawn_blocking(move || reloader.reload_all());
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let Signals {} = signals;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Stopped::Signal,
                why = self.health.failure() => Stopped::Failed(why),
            }
        }
    }

    /// Reads the config file again for its access tokens and settings (what SIGHUP does
    /// besides reloading the plugins). An unusable file changes nothing and is logged.
    pub fn reload_access(&self) {
        let Some(path) = self.services.config.source.clone() else {
            return;
        };
        match Config::from_file(&path).and_then(|fresh| self.services.reload_access(&fresh)) {
            Ok(()) => tracing::info!(
                "{}: access tokens and plugin settings read again (other changes need a restart)",
                path.display()
            ),
            Err(e) => tracing::error!("config not reloaded, the previous one stays: {e}"),
        }
    }

    /// The address of each lane, in port order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, saves every changed document, closes every connection with 1012
    /// and waits for the lanes (each bounded by the shutdown timeout).
    pub fn shutdown(self) {
        // Readiness turns false first, so load balancers stop sending while lanes save.
        self.health.begin_stopping();
        self.watching.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        for lane in self.lanes {
            let _ = lane.join();
        }
        if let Some(watcher) = self.watcher {
            let _ = watcher.join();
        }
        if let Some(admin) = self.admin {
            admin.stop();
        }
        // Every lane saved and stopped: let every document go at once, so the other
        // hosts take them without waiting for the lease to expire.
        if let Some((store, forwarder)) = self.store {
            forwarder.stop();
            store.shutdown();
        }
    }

    /// Where the admin API listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }
}

/// The engines and every plugin of the plugins directory, compiled (or loaded from the
/// artifact cache under the data directory).
fn load_plugins(
    config: &Config,
    metrics: &Arc<Metrics>,
    shared: Option<Arc<dyn SharedVersions>>,
) -> Result<(engine::Engines, Arc<Registry>), StartError> {
    let engines = engine::Engines::new(config)?;
    let runtimes =
        plugin::Runtimes::new(engines.clone()).map_err(|e| StartError::Link(format!("{e:#}")))?;
    let cache = Some(config.data.join(".compiled"));
    let journaled = config
        .plugin
        .iter()
        .filter(|(name, _)| config.durability_for(name) == Durability::Journal)
        .map(|(name, _)| name.clone())
        .collect();
    let mut versions = VersionStore::new(&config.data.join("versions"), journaled);
    if let Some(shared) = shared {
        versions = versions.shared_with(shared);
    }
    let registry = Registry::load_dir(
        runtimes,
        &config.plugins,
        cache,
        Some(versions),
        metrics.clone(),
    )
    .map_err(|source| StartError::Plugins {
        path: config.plugins.clone(),
        source,
    })?;
    Ok((engines, Arc::new(registry)))
}

/// Starts lane `index` on a thread of its own: a current-thread runtime serving
/// `listener` until `stopped` turns true.
fn spawn_lane(
    index: usize,
    listener: std::net::TcpListener,
    services: Arc<Services>,
    stopped: watch::Receiver<bool>,
    commands: tokio::sync::mpsc::UnboundedReceiver<lane::LaneCommand>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lane-{index}"))
        .spawn(move || {
            let _watch = LaneWatch {
                health: services.health.clone(),
                index,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let local = tokio::task::LocalSet::new();
            if let Err(e) = local.block_on(
                &runtime,
                lane::run(index, listener, services, stopped, commands),
            ) {
                tracing::error!("lane {index} failed: {e}");
            }
        })
}

/// Marks the process unready if a lane thread ends (an error or a panic) before shutdown.
struct LaneWatch {
    health: Arc<Health>,
    index: usize,
}

impl Drop for LaneWatch {
    fn drop(&mut self) {
        if !self.health.is_stopping() {
            let how = if std::thread::panicking() {
                "panicked"
            } else {
                "stopped unexpectedly"
            };
            self.health
                .fail(format!("lane {} {how}; its documents are lost", self.index));
        }
    }
}

/// Where journal-mode documents make their records durable, and what the journal holds
/// of each document from before this start: the tests' memory journal
/// (`WASMROOM_TEST_JOURNAL`, debug builds), the shared store's (PostgreSQL: nothing to
/// recover at startup, any host replays a document's rows when it opens it), or the
/// file journal under `{data}/journal/`.
fn journal_sink(
    config: &Config,
    storage: &dyn Storage,
) -> Result<(Option<Arc<dyn JournalSink>>, RecoveredEntries), StartError> {
    if !config.any_journal() {
        return Ok((None, RecoveredEntries::new()));
    }
    if let Some(sink) = MemoryJournal::from_env() {
        return Ok((Some(Arc::new(sink)), RecoveredEntries::new()));
    }
    if let Some(sink) = storage.journal() {
        return Ok((Some(sink), RecoveredEntries::new()));
    }
    let (journal, recovered) =
        FileJournal::open(&config.data.join("journal")).map_err(StartError::Journal)?;
    Ok((Some(Arc::new(journal)), recovered_entries(recovered)))
}

/// What the file journal found, by document: its entries, or why they cannot be
/// replayed (a gap, damage), which refuses the document until an operator looks.
fn recovered_entries(recovered: Recovered) -> RecoveredEntries {
    if recovered.torn_bytes > 0 {
        tracing::warn!(
            "the journal ended in a torn write ({} bytes ignored): the process died while writing; nothing it held was acknowledged",
            recovered.torn_bytes
        );
    }
    for damaged in &recovered.damaged {
        tracing::error!(
            "journal segment {} is damaged after {} bytes ({}): its documents refuse to open",
            damaged.path.display(),
            damaged.valid_len,
            damaged.reason
        );
    }
    recovered
        .documents
        .into_iter()
        .map(|(key, doc)| {
            let entries = if doc.damaged {
                Err("its journal has a damaged segment".to_owned())
            } else {
                // A gap is harmless if the snapshot covers it (a segment in the middle was
                // trimmed while an older one stays for another document): only the
                // entries after the last gap can follow a snapshot, and the replay
                // refuses them if the snapshot does not reach the gap.
                let after = doc.gaps.last().map_or(0, |(_, after)| *after);
                let mut entries = doc.entries;
                entries.retain(|e| e.seq >= after);
                Ok(entries)
            };
            (key, entries)
        })
        .collect()
}

/// A listening socket with `SO_REUSEADDR` (restarts do not wait for TIME_WAIT) and a
/// backlog large enough for reconnect storms.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    Ok(socket.into())
}
