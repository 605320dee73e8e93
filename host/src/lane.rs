//! A lane: one port, one OS thread, one single-threaded tokio runtime.
//!
//! The lane owns its listener, its documents and their connections. Nothing on the
//! message path takes a lock or hops to another thread: a connection task calls its
//! document directly, and the document queues frames to the other connections' writers,
//! all on this thread. What the lanes share is read-only or atomic: the engine, the plugin
//! registry, the configuration and the connection id counter ([`Shared`]).
//!
//! A connection for a document another lane owns is handed over before its upgrade: the
//! socket itself moves to the owner lane's thread ([`LaneCommand::Adopt`]), so every socket
//! of a document is served where the document lives (see [`crate::routing`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::admin::{AdminReply, AdminRequest};
use crate::config::Config;
use crate::crash_loop::CrashLoopGuard;
use crate::document::{Document, DocumentCell, DocumentError, DocumentLimits};
use crate::http::RequestHead;
use crate::metrics::{LaneMetrics, Metrics};
use crate::plugin::Plugin;
use crate::registry::Registry;
use crate::routing::Lanes;
use crate::runtime::deadline_ticks;
use crate::storage::Storage;

/// How long a connection waits for a crashed document's last save before it is told to
/// come back later (1013 / 503).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every lane of the process shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The compiled plugins.
    pub registry: Registry,
    /// Where documents are saved.
    pub storage: Arc<dyn Storage>,
    /// Every lane, and which one owns which document.
    pub lanes: Lanes,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins (readiness turns false).
    pub stopping: AtomicBool,
    /// Set when a lane stopped on its own (it failed): the process is not ready.
    pub lane_down: AtomicBool,
    next_connection: AtomicU64,
}

impl Shared {
    /// Shared state for the lanes.
    pub fn new(
        config: Config,
        registry: Registry,
        storage: Arc<dyn Storage>,
        lanes: Lanes,
        metrics: Arc<Metrics>,
    ) -> Shared {
        Shared {
            config,
            registry,
            storage,
            lanes,
            metrics,
            stopping: AtomicBool::new(false),
            lane_down: AtomicBool::new(false),
            next_connection: AtomicU64::new(1),
        }
    }

    /// Whether the process is ready: not shutting down, every lane up.
    pub fn ready(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed) && !self.lane_down.load(Ordering::Relaxed)
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
    /// A connection that another lane accepted for a document this lane owns.
    Adopt(Handover),
    /// A request of the admin API; the answer goes back on the channel.
    Admin(AdminRequest, oneshot::Sender<AdminReply>),
}

/// A connection on its way to the lane that owns its document: the socket (taken off
/// the sending lane's reactor) and the request head that lane already read.
#[derive(Debug)]
pub struct Handover {
    /// The socket.
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The request, read but not answered.
    pub head: RequestHead,
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
    crashes: CrashLoopGuard,
    failed_saves: Cell<u64>,
    failed_migrations: Cell<u64>,
    /// This lane's metric handles.
    pub metrics: LaneMetrics,
}

impl Lane {
    fn new(index: usize, shared: Arc<Shared>) -> Lane {
        Lane {
            index,
            documents: RefCell::new(HashMap::new()),
            connections: Cell::new(0),
            drained: Notify::new(),
            shutting_down: Cell::new(false),
            crashes: CrashLoopGuard::new(&shared.config.limits),
            failed_saves: Cell::new(0),
            failed_migrations: Cell::new(0),
            metrics: shared.metrics.lane(index),
            shared,
        }
    }

    /// Connections this lane accepted and handed to the owner lane of their document
    /// (counted when sent; during shutdown a hand-over may then still be refused).
    pub fn handed_over(&self) -> u64 {
        self.metrics.handed_over.get()
    }

    /// Connections other lanes handed to this one.
    pub fn adopted(&self) -> u64 {
        self.metrics.adopted.get()
    }

    /// Sends a connection to lane `owner`. On failure (that lane is stopping) the
    /// hand-over comes back.
    pub fn hand_over(&self, owner: usize, handover: Handover) -> Result<(), Box<Handover>> {
        let lane = self.shared.lanes.get(owner);
        // Counted before the send, so that no reader ever sees more adopted than handed
        // over (the owner may adopt before this thread runs on). A send fails only while
        // the server stops; that attempt stays counted.
        self.metrics.handed_over.inc();
        match lane.commands.send(LaneCommand::Adopt(handover)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(LaneCommand::Adopt(h))) => Err(Box::new(h)),
            Err(_) => unreachable!("the command sent was an adoption"),
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
    pub fn limits_for(&self, plugin: &str) -> DocumentLimits {
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
        self.shutting_down.get() || self.shared.stopping.load(Ordering::Relaxed)
    }

    /// The live document under `key`, if any.
    pub fn live(&self, key: &DocumentKey) -> Option<DocumentCell> {
        self.documents.borrow().get(key).cloned()
    }

    /// Every live document (a copy of the table: awaiting while holding it is fine).
    pub fn live_documents(&self) -> Vec<(DocumentKey, DocumentCell)> {
        self.documents
            .borrow()
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect()
    }

    /// Counts a document that could not move to a new plugin version.
    pub fn count_failed_migration(&self) {
        self.failed_migrations.set(self.failed_migrations.get() + 1);
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
                return Err(DocumentError::Settling);
            }
            self.forget(&key, &doc);
        }
        if let Some(retry_in) = self.crashes.backoff(&key, Instant::now()) {
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
        let metrics = self.shared.metrics.plugin(&plugin.name, self.index);
        let doc = match Document::open(
            plugin.clone(),
            document,
            self.limits_for(&plugin.name),
            metrics,
        )
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
        self.metrics.documents.set(self.document_count() as i64);
        tokio::task::spawn_local(crate::housekeeping::drive(
            self.clone(),
            key,
            Rc::downgrade(&cell),
            wake,
        ));
        Ok(cell)
    }

    /// From now on readers stop handing messages to documents, so a save is the last state.
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
    }

    /// Waits until the lane has no connection task left.
    pub async fn drained(&self) {
        while self.connections.get() > 0 {
            let notified = self.drained.notified();
            if self.connections.get() == 0 {
                break;
            }
            notified.await;
        }
    }

    /// [`Lane::document`], waiting (briefly, without blocking the lane) while a crashed
    /// instance's last save is still being written, instead of refusing the client.
    pub async fn document_when_settled(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
    ) -> Result<DocumentCell, DocumentError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            match self.document(plugin, document) {
                Err(DocumentError::Settling) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(DocumentError::Settling) => {
                    return Err(DocumentError::CrashLoop(Duration::from_secs(1)));
                }
                other => return other,
            }
        }
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
        self.metrics.documents.set(self.document_count() as i64);
        if removed && cell.borrow().is_crashed() {
            self.record_crash(key);
        }
    }

    fn record_crash(&self, key: &DocumentKey) {
        if let Some(backoff) = self.crashes.record(key, Instant::now()) {
            tracing::warn!(
                lane = self.index,
                plugin = %key.0,
                doc = %key.1,
                "{} traps within {:?}: refusing connections for {backoff:?}",
                self.crashes.traps(),
                self.crashes.window()
            );
        }
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
                    if let Some((stream, guard)) = admit(&lane, stream) {
                        let _ = stream.set_nodelay(true);
                        tokio::task::spawn_local(crate::connection::serve(lane.clone(), stream, peer, guard));
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
                    tokio::task::spawn_local(crate::reload::migrate_all(lane.clone(), plugin));
                }
                LaneCommand::Adopt(handover) => adopt(&lane, handover),
                LaneCommand::Admin(request, reply) => crate::admin::answer(&lane, request, reply),
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    crate::shutdown::stop(&lane, commands).await;
    Ok(())
}

/// Takes over a connection another lane accepted for a document this lane owns.
fn adopt(lane: &Rc<Lane>, handover: Handover) {
    let Handover { stream, peer, head } = handover;
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(lane = lane.index, %peer, "cannot take over a handed-over connection: {e}");
            return;
        }
    };
    lane.metrics.adopted.inc();
    if let Some((stream, guard)) = admit(lane, stream) {
        tokio::task::spawn_local(crate::connection::serve_adopted(
            lane.clone(),
            stream,
            peer,
            head,
            guard,
        ));
    }
}

/// Counts a new connection in, or answers 503 when the lane is at its connection limit
/// (the client should retry later) and returns `None`.
fn admit(
    lane: &Rc<Lane>,
    stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, ConnectionGuard)> {
    if lane.connections.get() >= lane.shared.config.limits.max_connections_per_lane {
        lane.metrics.rejected(crate::metrics::Rejection::Capacity);
        tokio::task::spawn_local(crate::connection::refuse(
            stream,
            503,
            "lane at capacity: too many connections",
        ));
        return None;
    }
    Some((stream, lane.track_connection()))
}
