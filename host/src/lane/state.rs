//! The state of one lane, shared by the tasks of its thread: its documents, its
//! connection count, its shutdown flag and its counters. Only its own thread touches it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::document::{DocumentCell, DocumentKey, DocumentLimits};
use crate::guest::engine::deadline_ticks;
use crate::lane::commands::{Handover, LaneCommand};
use crate::lane::crash_loop::CrashLoopGuard;
use crate::lane::services::Services;
use crate::metrics::LaneMetrics;

/// The state of one lane, shared by the tasks of its thread.
#[derive(Debug)]
pub struct Lane {
    /// The lane's index (0 for the first port).
    pub index: usize,
    /// What the lanes share.
    pub services: Arc<Services>,
    pub(super) documents: RefCell<HashMap<DocumentKey, DocumentCell>>,
    pub(super) connections: Cell<usize>,
    drained: Notify,
    shutting_down: Cell<bool>,
    pub(super) crashes: CrashLoopGuard,
    failed_saves: Cell<u64>,
    failed_migrations: Cell<u64>,
    /// This lane's metric handles.
    pub metrics: LaneMetrics,
}

impl Lane {
    pub(crate) fn new(index: usize, services: Arc<Services>) -> Lane {
        Lane {
            index,
            documents: RefCell::new(HashMap::new()),
            connections: Cell::new(0),
            drained: Notify::new(),
            shutting_down: Cell::new(false),
            crashes: CrashLoopGuard::new(&services.config.limits),
            failed_saves: Cell::new(0),
            failed_migrations: Cell::new(0),
            metrics: services.metrics.lane(index),
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

    /// Sends a connection to lane `owner`. On failure (that lane is stopping) the
    /// hand-over comes back.
    pub fn hand_over(&self, owner: usize, handover: Handover) -> Result<(), Box<Handover>> {
        let lane = self.services.lanes.get(owner);
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
        let config = &self.services.config;
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
        self.shutting_down.get() || self.services.health.is_stopping()
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

    /// Counts a connection task in; the guard counts it out when dropped.
    pub fn track_connection(self: &Rc<Self>) -> ConnectionGuard {
        self.connections.set(self.connections.get() + 1);
        ConnectionGuard { lane: self.clone() }
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
