//! A lane: one port, one OS thread, one single-threaded tokio runtime.
//!
//! The lane owns its listener, its documents and their connections. Nothing on the
//! message path takes a lock or hops to another thread: a connection task calls its
//! document directly, and the document queues frames to the other connections' writers,
//! all on this thread. What the lanes share is read-only or atomic: the engine, the plugin
//! registry, the configuration and the connection id counter ([`Shared`]).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::Config;
use crate::document::{Document, DocumentCell, DocumentError, DocumentLimits};
use crate::plugin::Plugin;
use crate::registry::Registry;
use crate::runtime::deadline_ticks;
use crate::storage::Storage;

/// What every lane of the process shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The compiled plugins.
    pub registry: Registry,
    /// Where documents are saved.
    pub storage: Arc<dyn Storage>,
    next_connection: AtomicU64,
}

impl Shared {
    /// Shared state for the lanes.
    pub fn new(config: Config, registry: Registry, storage: Arc<dyn Storage>) -> Shared {
        Shared {
            config,
            registry,
            storage,
            next_connection: AtomicU64::new(1),
        }
    }

    /// A connection id unique in the process.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// What the rest of the process asks of a lane.
#[derive(Debug)]
pub enum LaneCommand {
    /// A new version of a plugin is loaded: move this lane's documents of it over.
    Migrate(Arc<Plugin>),
}

/// (plugin, document id)
pub type DocumentKey = (String, String);

/// The state of one lane, shared by the tasks of its thread.
#[derive(Debug)]
pub struct Lane {
    /// The lane's index (0 for the first port).
    pub index: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    documents: RefCell<HashMap<DocumentKey, DocumentCell>>,
    connections: Cell<usize>,
    drained: Notify,
    shutting_down: Cell<bool>,
    crashes: RefCell<HashMap<DocumentKey, CrashHistory>>,
    failed_saves: Cell<u64>,
    failed_migrations: Cell<u64>,
}

/// Recent traps of one document, for the crash-loop guard.
#[derive(Debug, Default)]
struct CrashHistory {
    recent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Lane {
    fn new(index: usize, shared: Arc<Shared>) -> Lane {
        Lane {
            index,
            shared,
            documents: RefCell::new(HashMap::new()),
            connections: Cell::new(0),
            drained: Notify::new(),
            shutting_down: Cell::new(false),
            crashes: RefCell::new(HashMap::new()),
            failed_saves: Cell::new(0),
            failed_migrations: Cell::new(0),
        }
    }

    /// Documents that could not move to a new plugin version since the lane started.
    pub fn failed_migrations(&self) -> u64 {
        self.failed_migrations.get()
    }

    /// Counts a failed save.
    pub fn count_failed_save(&self) {
        self.failed_saves.set(self.failed_saves.get() + 1);
    }

    /// Saves that failed on this lane since it started.
    pub fn failed_saves(&self) -> u64 {
        self.failed_saves.get()
    }

    /// The limits for the documents of `plugin`.
    fn limits_for(&self, plugin: &str) -> DocumentLimits {
        let config = &self.shared.config;
        DocumentLimits {
            max_memory_bytes: config.max_memory_for(plugin),
            max_message_bytes: config.limits.max_message_bytes,
            max_timers: config.limits.max_timers,
            deadline_ticks: deadline_ticks(config.guest_deadline_for(plugin)),
        }
    }

    /// The number of connection tasks (WebSocket or HTTP) of this lane.
    pub fn connection_count(&self) -> usize {
        self.connections.get()
    }

    /// Whether the lane is shutting down (new connections get 503).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// The number of live documents on this lane.
    pub fn document_count(&self) -> usize {
        self.documents.borrow().len()
    }

    /// Live documents that changed since their last save.
    pub fn unsaved_count(&self) -> usize {
        self.documents
            .borrow()
            .values()
            .filter(|d| d.try_borrow().is_ok_and(|d| d.is_dirty()))
            .count()
    }

    /// The live document `document` of `plugin`, opening it if needed.
    pub fn document(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
    ) -> Result<DocumentCell, DocumentError> {
        let key = (plugin.name.clone(), document.to_owned());
        let existing = self.documents.borrow().get(&key).cloned();
        if let Some(doc) = existing {
            if !doc.borrow().is_crashed() {
                return Ok(doc);
            }
            if doc.borrow().persistence.saving {
                // Its last checkpoint is still being written: reopening now would read the
                // file before that write lands, and the write would then overwrite what
                // the new instance saves.
                return Err(DocumentError::CrashLoop(Duration::from_secs(1)));
            }
            self.forget(&key, &doc);
        }
        if let Some(retry_in) = self.backoff(&key) {
            return Err(DocumentError::CrashLoop(retry_in));
        }
        // A small file read: from the page cache in the common case. Reading it before
        // opening keeps "one document, one instance" simple (no await between the lookup
        // and the insertion below).
        let saved = self
            .shared
            .storage
            .load(&plugin.name, document)
            .map_err(|e| {
                tracing::error!(lane = self.index, plugin = %plugin.name, doc = %document, "refusing to open: {e}");
                DocumentError::Storage(e.to_string())
            })?;
        let started = Instant::now();
        let doc = match Document::open(plugin.clone(), document, self.limits_for(&plugin.name))
            .and_then(|mut doc| {
                if let Some(snapshot) = &saved {
                    doc.restore(snapshot)?;
                }
                Ok(doc)
            }) {
            Ok(doc) => doc,
            Err(e) => {
                if matches!(e, DocumentError::PoolExhausted(_)) {
                    tracing::warn!(
                        lane = self.index,
                        "instance pool exhausted: cannot open {}/{document}; raise limits.max_documents (now {}) ({e})",
                        plugin.name,
                        self.shared.config.limits.max_documents
                    );
                }
                return Err(e);
            }
        };
        tracing::debug!(lane = self.index, plugin = %plugin.name, doc = %document, "opened in {:?}", started.elapsed());
        let wake = doc.wake.clone();
        let cell: DocumentCell = Rc::new(RefCell::new(doc));
        self.documents
            .borrow_mut()
            .insert(key.clone(), cell.clone());
        tokio::task::spawn_local(crate::housekeeping::drive(
            self.clone(),
            key,
            Rc::downgrade(&cell),
            wake,
        ));
        Ok(cell)
    }

    /// Counts a connection task in; the guard counts it out when dropped.
    pub fn track_connection(self: &Rc<Self>) -> ConnectionGuard {
        self.connections.set(self.connections.get() + 1);
        ConnectionGuard { lane: self.clone() }
    }

    /// Removes `cell` from the table (if it is still the document under `key`); a crashed
    /// document counts towards the crash-loop guard once.
    pub fn forget(&self, key: &DocumentKey, cell: &DocumentCell) {
        let removed = {
            let mut docs = self.documents.borrow_mut();
            let current = docs.get(key).is_some_and(|d| Rc::ptr_eq(d, cell));
            if current {
                docs.remove(key);
            }
            current
        };
        if removed && cell.borrow().is_crashed() {
            self.record_crash(key);
        }
    }

    fn record_crash(&self, key: &DocumentKey) {
        let l = &self.shared.config.limits;
        let window = Duration::from_secs(l.crash_loop_window_secs);
        let now = Instant::now();
        let mut crashes = self.crashes.borrow_mut();
        // Keep the map small: forget documents that are neither blocked nor recently failed.
        crashes.retain(|_, h| {
            h.blocked_until.is_some_and(|t| t > now)
                || h.recent.back().is_some_and(|&t| t + window > now)
        });
        let history = crashes.entry(key.clone()).or_default();
        history.recent.push_back(now);
        while history.recent.front().is_some_and(|&t| t + window <= now) {
            history.recent.pop_front();
        }
        if history.recent.len() >= l.crash_loop_traps as usize {
            let backoff = Duration::from_secs(l.crash_backoff_secs);
            history.blocked_until = Some(now + backoff);
            history.recent.clear();
            tracing::warn!(
                lane = self.index,
                plugin = %key.0,
                doc = %key.1,
                "{} traps within {window:?}: refusing connections for {backoff:?}",
                l.crash_loop_traps
            );
        }
    }

    /// How long `key` still refuses connections after crash-looping.
    fn backoff(&self, key: &DocumentKey) -> Option<Duration> {
        let until = self.crashes.borrow().get(key)?.blocked_until?;
        until.checked_duration_since(Instant::now())
    }
}

/// Keeps a lane's connection count while a connection task runs.
#[derive(Debug)]
pub struct ConnectionGuard {
    lane: Rc<Lane>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let n = self.lane.connections.get() - 1;
        self.lane.connections.set(n);
        if n == 0 {
            self.lane.drained.notify_waiters();
        }
    }
}

/// Runs a lane on the current thread until `shutdown` turns true; then saves every
/// changed document, closes every connection with 1012 (service restart: clients should
/// reconnect) and waits for the clients to acknowledge, all bounded by the shutdown
/// timeout.
pub async fn run(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut commands: mpsc::UnboundedReceiver<LaneCommand>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    tracing::info!("lane {index} listening on {addr}");
    let lane = Rc::new(Lane::new(index, shared));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if lane.connections.get() >= lane.shared.config.limits.max_connections_per_lane {
                        tokio::task::spawn_local(crate::connection::refuse(
                            stream,
                            503,
                            "lane at capacity: too many connections",
                        ));
                    } else {
                        spawn_connection(&lane, stream, peer);
                    }
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(lane = index, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(command) = commands.recv() => match command {
                LaneCommand::Migrate(plugin) => {
                    tokio::task::spawn_local(migrate_all(lane.clone(), plugin));
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    // From here on, readers stop handing messages to documents, so the saved state is
    // the last state.
    lane.shutting_down.set(true);
    let docs: Vec<(DocumentKey, DocumentCell)> = lane
        .documents
        .borrow()
        .iter()
        .map(|(k, d)| (k.clone(), d.clone()))
        .collect();
    let timeout = lane.shared.config.shutdown_timeout();
    let started = Instant::now();
    let saves = futures_util::future::join_all(docs.iter().map(|(key, doc)| async {
        // A checkpoint may be in flight: let it finish, then save what changed since.
        while doc.borrow().persistence.saving {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        crate::housekeeping::save(&lane, key, doc).await
    }));
    if tokio::time::timeout(timeout, saves).await.is_err() {
        tracing::error!(lane = index, "saving took longer than {timeout:?}");
    }
    let unsaved: Vec<String> = docs
        .iter()
        .filter(|(_, d)| d.borrow().is_dirty())
        .map(|((p, d), _)| format!("{p}/{d}"))
        .collect();
    if unsaved.is_empty() {
        tracing::info!(
            lane = index,
            "shutting down: {} document(s), all saved ({:?}); closing {} connection(s)",
            docs.len(),
            started.elapsed(),
            lane.connections.get()
        );
    } else {
        tracing::error!(
            lane = index,
            "shutting down with {} unsaved document(s): {}",
            unsaved.len(),
            unsaved.join(", ")
        );
    }
    for (_, doc) in &docs {
        doc.borrow_mut().close_all(1012, "server restarting");
    }
    let timeout = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let drained = async {
        while lane.connections.get() > 0 {
            let notified = lane.drained.notified();
            if lane.connections.get() == 0 {
                break;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(timeout, drained).await.is_err() {
        tracing::warn!(
            lane = index,
            "{} connection(s) still open after {timeout:?}; dropping them",
            lane.connections.get()
        );
    }
    // The closes ran the consumers' `on-disconnect` (presence, say): save that too.
    let left = lane
        .shared
        .config
        .shutdown_timeout()
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let again = futures_util::future::join_all(
        docs.iter()
            .map(|(key, doc)| crate::housekeeping::save(&lane, key, doc)),
    );
    let _ = tokio::time::timeout(left, again).await;
    Ok(())
}

/// Moves every document of `plugin`'s name on this lane to `plugin`, one document at a
/// time and yielding in between, so the lane keeps serving while it migrates.
async fn migrate_all(lane: Rc<Lane>, plugin: Arc<Plugin>) {
    let started = Instant::now();
    let docs: Vec<(DocumentKey, DocumentCell)> = lane
        .documents
        .borrow()
        .iter()
        .filter(|((name, _), _)| *name == plugin.name)
        .map(|(k, d)| (k.clone(), d.clone()))
        .collect();
    if docs.is_empty() {
        return;
    }
    let limits = lane.limits_for(&plugin.name);
    let (mut moved, mut failed) = (0usize, 0usize);
    for ((name, id), doc) in docs {
        // A newer version may have arrived meanwhile (its own migration runs too): never
        // move a document back to an older one.
        let current = matches!(
            lane.shared.registry.get(&name),
            crate::registry::Lookup::Ready(p) if Arc::ptr_eq(&p, &plugin)
        );
        if !current {
            break;
        }
        let result = doc.borrow_mut().migrate(plugin.clone(), limits);
        match result {
            Ok(()) => moved += 1,
            Err(e) => {
                failed += 1;
                lane.failed_migrations.set(lane.failed_migrations.get() + 1);
                let error = format!("{name}/{id} stays on its old version: {e}");
                tracing::error!(lane = lane.index, "{error}");
                lane.shared.registry.record_error(&name, error);
            }
        }
        tokio::task::yield_now().await;
    }
    tracing::info!(
        lane = lane.index,
        plugin = %plugin.name,
        version = %plugin.version,
        "reloaded: {moved} document(s) migrated, {failed} failed, in {:?}",
        started.elapsed()
    );
}

fn spawn_connection(lane: &Rc<Lane>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let guard = lane.track_connection();
    tokio::task::spawn_local(crate::connection::serve(lane.clone(), stream, peer, guard));
}
