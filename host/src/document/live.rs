//! One live document: its consumer instance, its connections and its timers.
//!
//! A document belongs to exactly one lane and is only touched from that lane's thread, so
//! it lives in an `Rc<RefCell<_>>`. Every guest call is synchronous and bounded by the
//! epoch deadline; no borrow of a document is ever held across an `.await`. After each
//! call the document applies the guest's [effects](crate::guest::Effect) in order.
//!
//! A trap (deadline, memory cap, panic, `unreachable`) ends this document only: its
//! instance is dropped at once, its clients are closed with 1011 "consumer crashed"
//! (never the trap's text), the [trap](crate::document::trap) is logged and becomes the
//! plugin's last error, and the lane forgets the document, so the next connection opens
//! a fresh instance. In journal mode most traps end even less: the document is rebuilt
//! without the input ([`crate::document::rebuild`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::Notify;
use wasmroom_wire::journal::Record;
use wasmtime::Store;

use crate::document::effects::apply;
use crate::document::error::{CRASHED, DocumentError, NOT_APPLIED};
use crate::document::instance::{DocumentConfig, Instance};
use crate::document::journal::Tail;
use crate::document::lineage::Lineage;
use crate::document::outbox::Outbox;

use crate::document::trap::Trap;
use crate::document::versions::ReplayVersions;

use crate::guest::plugin::Plugin;
use crate::guest::random::Purpose;
use crate::guest::{CallStart, GuestState, HttpRequest, HttpResponse, Message, Room};
use crate::metrics::PluginMetrics;
use crate::store::{Lease, Snapshot};

/// A document's key: (plugin, document id).
pub type DocumentKey = (String, String);

/// A document shared between the tasks of its lane.
pub type DocumentCell = Rc<RefCell<Document>>;

/// A live document.
pub struct Document {
    pub(super) plugin: Arc<Plugin>,
    pub(super) id: String,
    pub(super) instance: Option<Instance>,
    /// Its clock, seed, input count and connection ids.
    pub(super) lineage: Lineage,
    pub(super) outboxes: HashMap<u64, Rc<Outbox>>,
    pub(super) deadline_ticks: u64,
    /// When the last connection left (or the document opened without one).
    pub(super) idle_since: Option<Instant>,
    /// A WebSocket has joined since the document opened (else only HTTP requests used
    /// it, and it leaves memory sooner).
    pub(super) had_sockets: bool,
    /// Ended without a trap: it moved to another host, or this host's lease lapsed.
    pub(super) retired: bool,
    /// Leaving this host (hand-back, shutdown): its sockets were asked to close, no
    /// connection joins, and what they send until their close frames still applies.
    pub(super) leaving: bool,
    /// Session connections whose socket ended while the document leaves: they travel
    /// with it ([`crate::document::carried_sessions`]).
    pub(super) carried: HashSet<u64>,
    /// Notified when the last connection has gone.
    pub(super) emptied: Rc<Notify>,
    /// Wakes the document's driver task: timers changed, it went idle, or it crashed.
    pub wake: Rc<Notify>,
    /// Guest calls that may have changed the state, ever.
    pub(super) changes: u64,
    /// `changes` as of the last successful save.
    pub(super) saved: u64,
    /// Save bookkeeping, kept by the lane.
    pub persistence: Persistence,
    pub(super) metrics: PluginMetrics,
    /// Linear memory as last reported to the metrics.
    pub(super) memory_bytes: u64,
    /// Messages from clients, ever.
    pub(super) messages: u64,
    /// When a guest call last ran.
    pub(super) last_activity: Instant,
    /// The consumer's output was corrected once already (logged once per document).
    pub(super) output_corrected: bool,
    /// Journal mode: every input is journaled and its output waits for durability.
    pub(super) journaled: bool,
    /// The journal batch of the document's last record (0: none, or checkpoint mode).
    pub(super) last_batch: u64,
    /// Journal mode: its entries since its last checkpoint (kept by the lane).
    pub(super) tail: Option<Rc<RefCell<Tail>>>,
    /// Which opening of the document this is (its journal entries carry it).
    pub(super) incarnation: u64,
    /// Its inputs are being replayed from the journal: nothing is journaled again.
    pub(super) replaying: bool,
    /// What the config gives it (a rebuild creates its instance from these).
    pub(super) limits: DocumentConfig,
    /// Journal mode: its last checkpoint (the snapshot it opened from or last wrote),
    /// which its tail goes on from: a trap rebuilds it from these two.
    pub(super) base: Option<Arc<Snapshot>>,
    /// The plugin versions its tail's inputs were made by, if other than its own (it
    /// was opened by replaying a journal through hot reloads): a rebuild replays on them.
    pub(super) versions: Rc<ReplayVersions>,
    /// When it was rebuilt after a trap lately (bounded: see `document::rebuild`).
    pub(super) rebuilds: Vec<Instant>,
}

/// Where the document stands with saving.
#[derive(Debug)]
pub struct Persistence {
    /// A save is in flight.
    pub saving: bool,
    /// Consecutive failed saves.
    pub failures: u32,
    /// When the next checkpoint (or retry) is due, if the document changed.
    pub next_save: Instant,
    /// Hash of the last saved state and timers: a guest call that changed nothing (a
    /// read over HTTP, say) then costs a snapshot call but no write.
    pub saved_hash: Option<[u8; 32]>,
    /// The connection-id counter as of the last write (or the open).
    pub saved_ids: u64,
    /// The last write carried the leaving document's sessions.
    pub sessions_written: bool,
    /// The document's lease in the store: every save carries it.
    pub lease: Lease,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("plugin", &self.plugin.name)
            .field("id", &self.id)
            .field("connections", &self.outboxes.len())
            .field("crashed", &self.instance.is_none())
            .finish_non_exhaustive()
    }
}

impl Document {
    /// The metric handles of the document's plugin.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// Reports the instance's linear memory to the metrics if it changed.
    pub(super) fn sync_memory(&mut self) {
        let now = self
            .instance
            .as_ref()
            .map_or(0, |i| i.store.data().limits.memory_bytes);
        if now != self.memory_bytes {
            self.metrics.memory_changed(self.memory_bytes, now);
            self.memory_bytes = now;
        }
    }

    /// The plugin version serving this document.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The document id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the consumer crashed.
    pub fn is_crashed(&self) -> bool {
        self.instance.is_none() && !self.retired
    }

    /// Whether the document is in journal mode.
    pub fn is_journaled(&self) -> bool {
        self.journaled
    }

    /// The journal batch of its last record: what it caused so far leaves once that
    /// batch is durable (0: at once).
    pub fn last_batch(&self) -> u64 {
        self.last_batch
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        self.outboxes.len()
    }

    /// When a guest call last ran.
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Whether a WebSocket has joined since the document opened.
    pub fn had_sockets(&self) -> bool {
        self.had_sockets
    }

    /// Since when the document has had no connections, if it has none.
    pub fn idle_since(&self) -> Option<Instant> {
        self.idle_since
    }

    /// Runs one guest call, an input of the document (`record` says what it was, for
    /// the journal), with the deadline armed, then applies its effects. A trap crashes
    /// the document.
    pub(super) fn call<R>(
        &mut self,
        what: &'static str,
        record: impl FnOnce(&R) -> Record,
        f: impl FnOnce(&Room, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, DocumentError> {
        self.call_since(what, Instant::now(), record, f)
    }

    /// [`Self::call`], timed from `started`: the caller's reading of the clock just
    /// before (also the call's clock `D`). A reader handling several messages of one
    /// read starts each call at the end of the one before ([`Self::last_activity`]), one
    /// clock reading per call instead of two.
    pub(super) fn call_since<R>(
        &mut self,
        what: &'static str,
        started: Instant,
        record: impl FnOnce(&R) -> Record,
        f: impl FnOnce(&Room, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, DocumentError> {
        let start = self.next_input(started);
        self.run(what, started, start, Some(record), None, f)
    }

    /// A guest call that is no input of the document (`purpose`: a snapshot, the export
    /// for a webhook, a restore), which the host makes when it chooses.
    pub(super) fn call_aside<R>(
        &mut self,
        what: &'static str,
        purpose: Purpose,
        f: impl FnOnce(&Room, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, DocumentError> {
        let started = Instant::now();
        let start = self.lineage.aside(started, purpose);
        self.run(what, started, start, None::<fn(&R) -> Record>, None, f)
    }

    /// Runs one guest call from `start`. `record` journals it once it returns (an input;
    /// none for a call aside or a replayed input); `dropped` is what the journal records
    /// instead if it traps and the document is rebuilt without it (an input nobody can
    /// be refused: [`crate::document::dropped`]).
    pub(super) fn run<R>(
        &mut self,
        what: &'static str,
        started: Instant,
        start: CallStart,
        record: Option<impl FnOnce(&R) -> Record>,
        dropped: Option<Record>,
        f: impl FnOnce(&Room, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, DocumentError> {
        let Some(instance) = self.instance.as_mut() else {
            if self.retired {
                return Err(DocumentError::Moved);
            }
            return Err(DocumentError::Crashed(
                "the consumer crashed earlier".into(),
            ));
        };
        let result = instance.guarded(self.deadline_ticks, start, f);
        self.last_activity = Instant::now();
        self.metrics
            .call(what, self.last_activity.saturating_duration_since(started));
        match result {
            Ok(value) => {
                if what != "snapshot" {
                    if self.changes == self.saved {
                        // Clean -> dirty: the driver schedules the next checkpoint.
                        self.wake.notify_one();
                    }
                    self.changes += 1;
                }
                if let Some(record) = record {
                    // An input that returned: its record goes into the lane's open batch,
                    // and what it caused leaves once that batch is durable. (What a
                    // `snapshot` call causes waits for the document's last record.)
                    self.journal(start, || record(&value));
                }
                let Some(instance) = self.instance.as_mut() else {
                    unreachable!("the instance answered just now");
                };
                let state = instance.store.data_mut();
                for effect in state.effects.drain(..) {
                    apply(&self.outboxes, effect, self.last_batch);
                }
                if std::mem::take(&mut state.timers_changed) {
                    self.wake.notify_one();
                }
                if state.limits.memory_bytes != self.memory_bytes {
                    self.sync_memory();
                }
                Ok(value)
            }
            Err(e) => {
                self.metrics.trapped(&e);
                let trap = Trap::new(what, &e, instance.store.data().stderr_tail());
                Err(self.trapped(trap, start, dropped))
            }
        }
    }

    /// Reports the trap, drops the instance and closes every connection with 1011.
    pub(super) fn crash(&mut self, trap: Trap) -> DocumentError {
        let connections = self.outboxes.len();
        let error = trap.report(
            &self.plugin,
            &self.id,
            format_args!("closing its {connections} connection(s)"),
        );
        self.crashed();
        error
    }

    /// Drops the instance and closes every connection with 1011.
    pub(super) fn crashed(&mut self) {
        if self.instance.take().is_some() {
            self.plugin.live.fetch_sub(1, Ordering::Relaxed);
        }
        self.sync_memory();
        for outbox in self.outboxes.values() {
            outbox.close(1011, CRASHED);
        }
        self.wake.notify_one();
    }

    /// A message from connection `id`, handed over at `now` (a recent reading of the
    /// clock; see [`Self::call_since`]).
    pub fn message(&mut self, id: u64, msg: &Message, now: Instant) -> Result<(), DocumentError> {
        self.messages += 1;
        let record = |_: &()| match msg {
            Message::Text(text) => Record::Message {
                connection: id,
                text: true,
                data: text.as_bytes().to_vec(),
            },
            Message::Binary(data) => Record::Message {
                connection: id,
                text: false,
                data: data.clone(),
            },
        };
        let applied = self.call_since("on-message", now, record, |room, store| {
            room.wasmroom_consumer_consumer()
                .call_on_message(store, id, msg)
        });
        if let Err(DocumentError::InputRefused(_)) = &applied
            && let Some(sender) = self.outboxes.get(&id)
        {
            // Only the sender hears of it: the document went on without its message.
            sender.close(1011, NOT_APPLIED);
        }
        applied
    }

    /// An HTTP request to the document.
    pub fn request(&mut self, req: &HttpRequest) -> Result<HttpResponse, DocumentError> {
        self.answer(req, None)
    }

    /// Asks the consumer `req`: a client's request (an input), or the host's own for
    /// `purpose`.
    pub(super) fn answer(
        &mut self,
        req: &HttpRequest,
        purpose: Option<Purpose>,
    ) -> Result<HttpResponse, DocumentError> {
        let on_request = |room: &Room, store: &mut Store<GuestState>| {
            room.wasmroom_consumer_consumer()
                .call_on_request(store, req)
        };
        let record = |_: &HttpResponse| Record::Request {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
            // A token's claims reach the consumer as a header, recorded above.
            claims: None,
        };
        let mut response = match purpose {
            None => self.call("on-request", record, on_request),
            Some(purpose) => self.call_aside("on-request", purpose, on_request),
        }?;
        // 1xx (101 above all) would change what the connection is; 0 and 600+ are not
        // statuses at all.
        if !(200..=599).contains(&response.status) {
            self.output_corrected(
                format_args!("answered an HTTP request with status {}", response.status),
                500,
            );
            response.status = 500;
        }
        Ok(response)
    }

    /// Logs (once per document) that the consumer's output was replaced by `instead`.
    pub(super) fn output_corrected(&mut self, what: std::fmt::Arguments<'_>, instead: u16) {
        if !std::mem::replace(&mut self.output_corrected, true) {
            tracing::warn!(
                plugin = %self.plugin.name,
                version = %self.plugin.version,
                doc = %self.id,
                "consumer {what}; sent {instead} instead (logged once per document)"
            );
        }
    }

    /// When the next timer is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.instance
            .as_ref()
            .and_then(|i| i.store.data().timers.next_deadline())
    }

    /// Calls `on-timer` for every timer due at `now`. Timers the guest sets meanwhile are
    /// due later than `now`, so a guest cannot keep the lane here.
    pub fn fire_due_timers(&mut self, now: Instant) {
        loop {
            let Some(instance) = self.instance.as_mut() else {
                return;
            };
            let Some(timer) = instance.store.data_mut().timers.pop_due(now) else {
                return;
            };
            // A timer that traps is dropped in journal mode: nobody can be refused it.
            if self
                .call_droppable(
                    "on-timer",
                    |_: &()| Record::Timer { id: timer },
                    Record::TimerDropped { id: timer },
                    |room, store| {
                        room.wasmroom_consumer_consumer()
                            .call_on_timer(store, timer)
                    },
                )
                .is_err()
            {
                return;
            }
        }
    }

    /// Closes every connection (shutdown). The guest is told through `on-disconnect` as
    /// each connection ends.
    pub fn close_all(&mut self, code: u16, reason: &str) {
        for outbox in self.outboxes.values() {
            outbox.close(code, reason);
        }
    }
}

impl Drop for Document {
    fn drop(&mut self) {
        if self.instance.is_some() {
            self.plugin.live.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics.memory_changed(self.memory_bytes, 0);
    }
}
