//! The state of one lane, shared by the tasks of its thread: its documents, its
//! connection count, its byte budget for what is still arriving, the per-address limit on
//! opening documents, its shutdown flag and its counters. Only its own thread touches it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::config::WebhookEvent;
use crate::document::{DocumentCell, DocumentConfig, DocumentKey};
use crate::guest::Message;
use crate::lane::commands::{Handover, LaneCommand};
use crate::lane::crash_loop::CrashLoopGuard;
use crate::lane::delivery_log::DeliveryLog;
use crate::lane::open_limit::OpenLimiter;
use crate::lane::services::Services;
use crate::lane::sessions::Sessions;
use crate::lane::table::LaneAddress;
use crate::metrics::LaneMetrics;
use crate::net::budget::{ByteBudget, Charge};
use crate::net::webhook::Event;

/// The size of a lane's read buffer: large enough that a busy socket is read in few
/// calls, once per lane.
const LANE_BUFFER: usize = 64 * 1024;

/// The state of one lane, shared by the tasks of its thread.
#[derive(Debug)]
pub struct Lane {
    /// The lane's index (0 for the first port).
    pub index: usize,
    /// What the lanes share.
    pub services: Arc<Services>,
    pub(super) documents: RefCell<HashMap<DocumentKey, DocumentCell>>,
    /// Documents being opened (their lease taken, their snapshot read): connections for
    /// them wait for that opening instead of starting another.
    pub(super) opening: RefCell<HashMap<DocumentKey, Rc<Notify>>>,
    /// Connection tasks running on this lane (the shared count in [`LaneAddress`] also
    /// holds hand-overs on their way here).
    tasks: Cell<usize>,
    drained: Notify,
    phase: Cell<Phase>,
    /// Documents another host asked for whose hand-back runs now: an asker repeats its
    /// request while it waits, and each document is answered once.
    pub(super) handing_back: RefCell<HashSet<DocumentKey>>,
    pub(super) crashes: CrashLoopGuard,
    pub(super) opens: OpenLimiter,
    incoming: Rc<ByteBudget>,
    /// Where every socket of the lane reads into: a connection keeps only the tail of a
    /// frame that has not arrived whole.
    read_buffer: RefCell<Box<[u8]>>,
    /// Where a read's messages wait for their guest call (`lane::batch`): one for the
    /// lane, so that no connection keeps one.
    batch_buffer: RefCell<Vec<Message>>,
    failed_saves: Cell<u64>,
    failed_migrations: Cell<u64>,
    /// This lane's metric handles.
    pub metrics: LaneMetrics,
    /// Every applied message, for the fault-injection tests (see [`DeliveryLog`]).
    pub deliveries: Option<DeliveryLog>,
    /// The sessions of this lane's connections (docs/sessions.md).
    pub sessions: Sessions,
}

impl Lane {
    pub(crate) fn new(index: usize, services: Arc<Services>) -> Lane {
        Lane {
            index,
            documents: RefCell::new(HashMap::new()),
            opening: RefCell::new(HashMap::new()),
            tasks: Cell::new(0),
            drained: Notify::new(),
            phase: Cell::new(Phase::Serving),
            handing_back: RefCell::new(HashSet::new()),
            crashes: CrashLoopGuard::new(&services.config.limits),
            opens: OpenLimiter::new(&services.config.limits),
            incoming: ByteBudget::new(services.config.limits.max_incoming_bytes_per_lane),
            read_buffer: RefCell::new(vec![0; LANE_BUFFER].into_boxed_slice()),
            batch_buffer: RefCell::new(Vec::new()),
            failed_saves: Cell::new(0),
            failed_migrations: Cell::new(0),
            metrics: services.metrics.lane(index),
            deliveries: DeliveryLog::from_env(&services.config.upstream_host()),
            sessions: Sessions::default(),
            services,
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

    /// This lane as the others see it.
    pub fn address(&self) -> &LaneAddress {
        self.services.lanes.get(self.index)
    }

    /// Sends a connection to lane `owner`, where it counts towards the connection cap
    /// from now on. On failure the hand-over comes back: that lane is full
    /// ([`HandOverError::Full`]) or stopping.
    pub fn hand_over(&self, owner: usize, handover: Handover) -> Result<(), HandOverError> {
        let lane = self.services.lanes.get(owner);
        if !lane.try_admit(self.services.config.limits.max_connections_per_lane) {
            return Err(HandOverError::Full(Box::new(handover)));
        }
        // Counted before the send, so that no reader ever sees more adopted than handed
        // over (the owner may adopt before this thread runs on). A send fails only while
        // the server stops; that attempt stays counted.
        self.metrics.handed_over.inc();
        match lane.commands.send(LaneCommand::Adopt(handover)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(LaneCommand::Adopt(h))) => {
                lane.release();
                Err(HandOverError::Stopping(Box::new(h)))
            }
            Err(_) => unreachable!("the command sent was an adoption"),
        }
    }

    /// The lane's read buffer (one task uses it at a time: never held across an await).
    pub fn read_buffer(&self) -> std::cell::RefMut<'_, Box<[u8]>> {
        self.read_buffer.borrow_mut()
    }

    /// The lane's batch buffer (one task uses it at a time: never held across an await).
    pub fn batch_buffer(&self) -> std::cell::RefMut<'_, Vec<Message>> {
        self.batch_buffer.borrow_mut()
    }

    /// A charge against this lane's budget for bytes still arriving.
    pub fn charge(&self) -> Charge {
        Charge::new(&self.incoming)
    }

    /// The budget of bytes still arriving, for holders that keep no handle on it.
    pub fn incoming(&self) -> &ByteBudget {
        &self.incoming
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

    /// The limits and settings for the documents of `plugin`.
    pub fn limits_for(&self, plugin: &str) -> DocumentConfig {
        DocumentConfig::of(
            &self.services.config,
            plugin,
            self.services.settings.for_plugin(plugin),
        )
    }

    /// The number of connection tasks (WebSocket or HTTP) of this lane.
    pub fn connection_count(&self) -> usize {
        self.tasks.get()
    }

    /// Queues a webhook event of `plugin`'s `document`, if its webhook wants `kind`
    /// (never waits for the backend).
    pub fn webhook(
        &self,
        plugin: &str,
        kind: WebhookEvent,
        document: &str,
        connection: Option<u64>,
        code: Option<u16>,
    ) {
        if self.services.webhooks.wants(plugin, kind) {
            self.services.webhooks.emit(
                plugin,
                Event {
                    kind,
                    document: document.to_owned(),
                    connection,
                    code,
                    export: None,
                },
            );
        }
    }

    /// [`Lane::webhook`] for an event an input of journal batch `batch` caused: it is
    /// queued once that batch is durable (at once for 0).
    pub fn webhook_after(
        &self,
        batch: u64,
        plugin: &str,
        kind: WebhookEvent,
        document: &str,
        connection: Option<u64>,
        code: Option<u16>,
    ) {
        if !self.services.webhooks.wants(plugin, kind) {
            return;
        }
        let services = self.services.clone();
        let (plugin, document) = (plugin.to_owned(), document.to_owned());
        crate::document::journal::after(batch, move || {
            services.webhooks.emit(
                &plugin,
                Event {
                    kind,
                    document,
                    connection,
                    code,
                    export: None,
                },
            );
        });
    }

    /// Whether the lane is shutting down (new connections get 503). Until the lane
    /// freezes ([`Lane::is_frozen`]) what connected clients send still applies.
    pub fn is_shutting_down(&self) -> bool {
        self.phase.get() != Phase::Serving || self.services.health.is_stopping()
    }

    /// Whether nothing may change the lane's documents any more: their last state is
    /// being saved for the shutdown.
    pub fn is_frozen(&self) -> bool {
        self.phase.get() == Phase::Frozen
    }

    /// Whether the document under `key` is being opened now.
    pub fn is_opening(&self, key: &DocumentKey) -> bool {
        self.opening.borrow().contains_key(key)
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

    /// Shutdown has begun: no connection joins; connected clients are draining.
    pub fn begin_draining(&self) {
        self.phase.set(Phase::Draining);
    }

    /// From now on readers stop handing messages to documents (and timers stop), so a
    /// save is the last state.
    pub fn freeze(&self) {
        self.phase.set(Phase::Frozen);
    }

    /// Waits until the lane has no connection task left.
    pub async fn drained(&self) {
        while self.tasks.get() > 0 {
            let notified = self.drained.notified();
            if self.tasks.get() == 0 {
                break;
            }
            notified.await;
        }
    }

    /// Counts a new connection in, unless the lane is at its connection cap.
    pub fn admit(self: &Rc<Self>) -> Option<ConnectionGuard> {
        let cap = self.services.config.limits.max_connections_per_lane;
        self.address().try_admit(cap).then(|| self.track_admitted())
    }

    /// Tracks a connection already counted in the lane's cap (a hand-over, counted by
    /// the lane that sent it); the guard counts it out when dropped.
    pub fn track_admitted(self: &Rc<Self>) -> ConnectionGuard {
        self.tasks.set(self.tasks.get() + 1);
        ConnectionGuard { lane: self.clone() }
    }
}

/// Where a lane is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Shutting down: no one joins, sockets were asked to close, what they send applies.
    Draining,
    /// Shutting down: nothing applies; the documents' last states are being saved.
    Frozen,
}

/// Why a hand-over came back.
#[derive(Debug)]
pub enum HandOverError {
    /// The owner lane is at its connection cap: answer 503.
    Full(Box<Handover>),
    /// The owner lane is stopping (so is the server): answer 503.
    Stopping(Box<Handover>),
}

/// Keeps a lane's connection counts while a connection task runs.
#[derive(Debug)]
pub struct ConnectionGuard {
    lane: Rc<Lane>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.lane.address().release();
        let n = self.lane.tasks.get() - 1;
        self.lane.tasks.set(n);
        if n == 0 {
            self.lane.drained.notify_waiters();
        }
    }
}
