//! A document coming to life: its instance created and `open` called, from what it
//! carries (its snapshot's seed, connection ids, inputs and clock), or, for a document
//! without a snapshot whose journal begins with its `open`, from what that entry recorded.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::Notify;
use wasmroom_wire::journal::Record;

use crate::document::error::DocumentError;
use crate::document::instance::{DocumentConfig, Instance, Opening};
use crate::document::journal::Tail;
use crate::document::lineage::Lineage;
use crate::document::live::{Document, Persistence};
use crate::document::versions::ReplayVersions;
use crate::guest::engine::Slot;
use crate::guest::plugin::Plugin;
use crate::guest::random::Purpose;
use crate::metrics::PluginMetrics;
use crate::store::{Continuity, Lease, Snapshot};

impl Document {
    /// Instantiates `plugin` for document `id` in pool `slot` and calls its `open`. A
    /// document with a snapshot (`saved`, restored next) goes on with its seed,
    /// connection ids, inputs and clock. In journal mode, `tail` holds its entries since
    /// that snapshot: a document without one whose journal starts with its `open`
    /// replays that `open` (the same seed and clock), and a new one journals its `open`.
    /// `incarnation` tells this opening's entries from an earlier one's: the lease's
    /// epoch with a shared store, any number that grows (the time) with files.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        plugin: Arc<Plugin>,
        id: &str,
        limits: DocumentConfig,
        metrics: PluginMetrics,
        slot: Slot,
        saved: Option<&Snapshot>,
        tail: Option<Rc<RefCell<Tail>>>,
        incarnation: u64,
    ) -> Result<Document, DocumentError> {
        let recorded_open = match (saved, &tail) {
            (None, Some(tail)) => recorded_open(&tail.borrow())?,
            _ => None,
        };
        let recorded_settings = recorded_settings(tail.as_ref(), saved);
        let mut lineage = Lineage::of(saved, recorded_open.map(|(c, _)| c))?;
        let saved_ids = lineage.continuity().next_connection_id;
        let now = Instant::now();
        let start = match (saved, recorded_open) {
            // `open` of a document that has a snapshot is no input: `restore` follows.
            (Some(_), _) => lineage.aside(now, Purpose::Reopen),
            (None, Some((_, clock_ms))) => lineage.replayed(1, clock_ms),
            (None, None) => lineage.input(now),
        };
        let opening = Opening {
            seed: lineage.seed(),
            start,
            count_traps: true,
        };
        let instance = Instance::create(&plugin, id, &limits, &metrics, slot, opening)?;
        plugin.live.fetch_add(1, Ordering::Relaxed);
        let memory_bytes = instance.store.data().limits.memory_bytes;
        metrics.memory_changed(0, memory_bytes);
        let mut doc = Document {
            plugin,
            id: id.to_owned(),
            instance: Some(instance),
            lineage,
            outboxes: HashMap::new(),
            deadline_ticks: limits.deadline_ticks,
            base: None,
            versions: Rc::new(ReplayVersions::none()),
            rebuilds: Vec::new(),
            idle_since: Some(Instant::now()),
            had_sockets: false,
            output_corrected: false,
            journaled: limits.journaled,
            last_batch: 0,
            tail,
            incarnation,
            replaying: false,
            retired: false,
            leaving: false,
            carried: HashSet::new(),
            emptied: Rc::new(Notify::new()),
            wake: Rc::new(Notify::new()),
            changes: 0,
            saved: 0,
            persistence: Persistence {
                saving: false,
                failures: 0,
                next_save: Instant::now(),
                saved_hash: None,
                saved_ids,
                sessions_written: false,
                lease: Lease::default(),
            },
            metrics,
            memory_bytes,
            messages: 0,
            last_activity: Instant::now(),
            limits,
        };
        if saved.is_none() && recorded_open.is_none() {
            let continuity = Continuity {
                inputs: 0,
                ..doc.lineage.continuity()
            };
            let version = doc.plugin.version.clone();
            let settings = doc.settings_now();
            doc.journal(start, || Record::Open {
                seed: continuity.seed,
                next_connection_id: continuity.next_connection_id,
                settings,
                version: Some(version),
            });
        }
        if let Some(recorded) = recorded_settings {
            // Its journal's `open` named them (a build that did not wrote none).
            doc.pin_settings(&recorded);
        }
        Ok(doc)
    }
}

/// The settings a document without a snapshot was opened with, if its journal's `open`
/// recorded them (it names its version: written by a build that records both).
fn recorded_settings(
    tail: Option<&Rc<RefCell<Tail>>>,
    saved: Option<&Snapshot>,
) -> Option<Vec<(String, String)>> {
    if saved.is_some() {
        return None;
    }
    let tail = tail?.borrow();
    match &tail.entries().next()?.record {
        Record::Open {
            settings,
            version: Some(_),
            ..
        } => Some(settings.clone()),
        _ => None,
    }
}

/// The continuity and clock a document without a snapshot started from, if its journal
/// begins with its `open`; an error if the journal begins anywhere else (what came
/// before is in no snapshot).
fn recorded_open(tail: &Tail) -> Result<Option<(Continuity, u64)>, DocumentError> {
    let Some(first) = tail.entries().next() else {
        return Ok(None);
    };
    match &first.record {
        Record::Open {
            seed,
            next_connection_id,
            ..
        } if first.seq == 1 => Ok(Some((
            Continuity {
                seed: *seed,
                next_connection_id: *next_connection_id,
                inputs: 0,
            },
            first.clock_ms,
        ))),
        _ => Err(DocumentError::Unreplayable(format!(
            "its journal starts at input {} and no snapshot holds the inputs before",
            first.seq
        ))),
    }
}
