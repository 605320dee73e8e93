//! Moving a document's state out of and into instances: snapshots for storage,
//! `restore` into a fresh instance, and migration to a new plugin version (hot reload).
//!
//! Pending timers travel with the state as wall-clock due times, so a restart or a
//! reload keeps them; the document's seed and connection-id counter travel with it too
//! ([`crate::document::lineage`]), and its clock as of the snapshot (`saved_at_ms`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::document::effects::apply;
use crate::document::error::DocumentError;
use crate::document::instance::{DocumentConfig, Instance, Opening};
use crate::document::live::Document;
use crate::document::trap::Trap;
use crate::guest::clock::unix_ms;
use crate::guest::engine::Slot;
use crate::guest::plugin::Plugin;
use crate::guest::random::Purpose;
use crate::guest::{CallStart, Effect, HttpRequest};
use crate::net::webhook::Export;
use crate::store::Snapshot;
use wasmroom_wire::journal::Record;

impl Document {
    /// Hands a saved state to the fresh instance (`restore`) and re-arms its timers. A
    /// timer whose time has passed fires at once.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), DocumentError> {
        let state = &snapshot.state;
        let restored = self.call_aside("restore", Purpose::Restore, |room, store| {
            room.wasmroom_consumer_consumer().call_restore(store, state)
        })?;
        restored.map_err(|e| DocumentError::Refused(format!("restore failed: {e}")))?;
        if self.tail.is_some()
            && let Some(recorded) = &snapshot.settings
        {
            // The journal after it was made with these.
            self.pin_settings(recorded);
        }
        if let Some(instance) = self.instance.as_mut() {
            let now = Instant::now();
            let now_ms = unix_ms();
            if self.tail.is_some() {
                // Journal mode: the connections open at the snapshot are known to the
                // replay that follows (their messages, their claims), which then reports
                // them gone.
                let state = instance.store.data_mut();
                for (id, claims) in &snapshot.connections {
                    state.connections.insert(*id);
                    if let Some(claims) = claims {
                        state.claims.insert(*id, claims.as_str().into());
                    }
                }
            }
            let timers = &mut instance.store.data_mut().timers;
            for &(id, due_ms) in &snapshot.timers {
                timers.set(
                    id,
                    now + Duration::from_millis(due_ms.saturating_sub(now_ms)),
                );
            }
        }
        self.saved = self.changes;
        self.wake.notify_one();
        tracing::debug!(
            plugin = %self.plugin.name,
            doc = %self.id,
            "restored {} bytes of state and {} timer(s) saved by version {}",
            snapshot.state.len(),
            snapshot.timers.len(),
            snapshot.plugin_version
        );
        Ok(())
    }

    /// Records the state right after opening (and restoring) as the saved one, so that a
    /// document that is only read is never written: a later save finds the same state
    /// and writes nothing. Costs one `snapshot` call per open.
    pub fn mark_opened(&mut self) -> Result<(), DocumentError> {
        let (snapshot, generation) = self.snapshot()?;
        self.persistence.saved_hash = Some(snapshot.content_hash());
        self.mark_saved(generation);
        Ok(())
    }

    /// Whether the state may have changed since the last successful save, or the
    /// document must not leave memory before its connection-id counter is written
    /// ([`Document::ids_unsaved`]).
    pub fn is_dirty(&self) -> bool {
        (self.changes != self.saved || self.ids_unsaved() || self.sessions_unsaved())
            && self.instance.is_some()
    }

    /// Takes a snapshot: the guest's state, the pending timers, the document's seed and
    /// connection-id counter, and its clock. Returns it with the change count it
    /// reflects, for [`Document::mark_saved`].
    pub fn snapshot(&mut self) -> Result<(Snapshot, u64), DocumentError> {
        let start = self.lineage.aside(Instant::now(), Purpose::Snapshot);
        self.snapshot_at(start)
    }

    /// [`Document::snapshot`] with the call starting at `start`.
    fn snapshot_at(&mut self, start: CallStart) -> Result<(Snapshot, u64), DocumentError> {
        let generation = self.changes;
        let state = self.run(
            "snapshot",
            Instant::now(),
            start,
            None::<fn(&Vec<u8>) -> Record>,
            None,
            |room, store| room.wasmroom_consumer_consumer().call_snapshot(store),
        )?;
        let now = Instant::now();
        let now_ms = unix_ms();
        let timers = self
            .instance
            .as_ref()
            .map(|i| {
                i.store
                    .data()
                    .timers
                    .iter()
                    .map(|(id, at)| {
                        let left = at.saturating_duration_since(now).as_millis() as u64;
                        (id, now_ms + left)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((
            Snapshot {
                plugin_version: self.plugin.version.clone(),
                saved_at_ms: self.lineage.clock_ms(),
                timers,
                state,
                continuity: Some(self.lineage.continuity()),
                connections: self.open_connections(),
                sessions: self.sessions_to_carry(),
                settings: self.journaled.then(|| self.settings_now()),
            },
            generation,
        ))
    }

    /// Moves the document to another version of its plugin (hot reload): snapshot on the
    /// old instance, a fresh instance of `plugin`, `open` and `restore` there, then the
    /// connections and pending timers move over and the new instance takes its place.
    /// The sockets notice nothing. If anything fails on the new side, the document stays
    /// on the old version, unharmed, and the error is returned. (If the *old* version
    /// traps while taking its snapshot, that is a trap like any other: the document
    /// crashes.) In journal mode the move is journaled ([`Record::Version`]): a replay
    /// runs the inputs before it on the old version, makes the same move, and the inputs
    /// after on the new one.
    pub fn migrate(
        &mut self,
        plugin: Arc<Plugin>,
        limits: &DocumentConfig,
        slot: Slot,
    ) -> Result<(), DocumentError> {
        if self.instance.is_none() || Arc::ptr_eq(&self.plugin, &plugin) {
            return Ok(());
        }
        let (mut snapshot, clock_ms, said) = self.move_to(plugin, limits, slot, None)?;
        if self.tail.is_some() {
            let start = self.lineage.entry(clock_ms);
            let version = self.plugin.version.clone();
            self.journal(start, || Record::Version { version });
            // A rebuild after a trap starts from the state the new version restored
            // (the move just journaled is then no move), never from the old version's
            // entries; the next checkpoint writes it.
            snapshot.plugin_version = self.plugin.version.clone();
            self.set_base(Some(Arc::new(snapshot)));
            self.changes += 1;
        }
        self.apply_all(said);
        Ok(())
    }

    /// [`Document::migrate`]'s move, with its calls at the clock `replayed_ms` if it is
    /// a journaled move replayed (else now). Returns the old version's snapshot it moved,
    /// the clock its calls had, and what the new version said while restoring (for
    /// [`Document::apply_all`]).
    pub(super) fn move_to(
        &mut self,
        plugin: Arc<Plugin>,
        limits: &DocumentConfig,
        slot: Slot,
        replayed_ms: Option<u64>,
    ) -> Result<(Snapshot, u64, Vec<Effect>), DocumentError> {
        // One clock for the three calls, so that a replay gives them the same.
        let snapshot_start = match replayed_ms {
            Some(ms) => self.lineage.aside_replayed(ms, Purpose::Snapshot),
            None => self.lineage.aside(Instant::now(), Purpose::Snapshot),
        };
        let clock_ms = snapshot_start.clock_ms;
        let (snapshot, _) = self.snapshot_at(snapshot_start)?;
        let start = self.lineage.aside_replayed(clock_ms, Purpose::ReloadOpen);
        let opening = Opening {
            seed: self.lineage.seed(),
            start,
            // A trap here leaves the document on its old version: not counted as one
            // that ended.
            count_traps: false,
        };
        let mut fresh = Instance::create(&plugin, &self.id, limits, &self.metrics, slot, opening)?;
        let restoring = self
            .lineage
            .aside_replayed(clock_ms, Purpose::ReloadRestore);
        // The new version sees the document's connections while it restores (it may
        // rebuild presence from `connections()` or greet them).
        {
            let old = self.instance.as_ref().expect("checked above").store.data();
            let to = fresh.store.data_mut();
            to.connections = old.connections.clone();
            to.closing = old.closing.clone();
            to.claims = old.claims.clone();
        }
        let restored = fresh
            .guarded(limits.deadline_ticks, restoring, |room, store| {
                room.wasmroom_consumer_consumer()
                    .call_restore(store, &snapshot.state)
            })
            .map_err(|e| {
                let stderr = fresh.store.data().stderr_tail();
                Trap::new("restore", &e, stderr).logged(
                    &plugin,
                    &self.id,
                    "the document stays on its old version",
                )
            })?;
        restored.map_err(|e| DocumentError::Refused(format!("restore failed: {e}")))?;
        let old = self.instance.as_mut().expect("checked above");
        let (from, to) = (old.store.data_mut(), fresh.store.data_mut());
        // Pending timers carry over; timers the new version set in `open`/`restore` stay
        // (the new version's own setting wins for the same id).
        for (id, at) in from.timers.iter().collect::<Vec<_>>() {
            if !to.timers.contains(id) {
                to.timers.set(id, at);
            }
        }
        // What the new version said while restoring goes out like any call's effects,
        // once the move is journaled.
        let said: Vec<Effect> = to.effects.drain(..).collect();
        self.instance = Some(fresh);
        plugin.live.fetch_add(1, Ordering::Relaxed);
        self.plugin.live.fetch_sub(1, Ordering::Relaxed);
        self.plugin = plugin;
        self.deadline_ticks = limits.deadline_ticks;
        self.limits = limits.clone();
        self.sync_memory();
        self.wake.notify_one();
        Ok((snapshot, clock_ms, said))
    }

    /// Carries out what the new version said while restoring, tagged with the journal
    /// batch of the move.
    pub(super) fn apply_all(&mut self, said: Vec<Effect>) {
        for effect in said {
            apply(&self.outboxes, effect, self.last_batch);
        }
    }

    /// The consumer's own export of the document for a `saved` webhook: its answer to
    /// `GET /docs/{plugin}/{document}` when that is 200, else `state` (the snapshot's
    /// bytes). The call is no input of the document, but counts as a change, so the next
    /// checkpoint takes one more snapshot, finds it equal to the saved one and writes
    /// nothing.
    pub fn export(&mut self, state: &[u8]) -> Export {
        let get = HttpRequest {
            method: "GET".into(),
            path: format!("/docs/{}/{}", self.plugin.name, self.id),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        match self.answer(&get, Some(Purpose::Export)) {
            Ok(r) if r.status == 200 => Export::Consumer {
                content_type: r
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.clone()),
                body: r.body,
            },
            _ => Export::Snapshot(state.to_vec()),
        }
    }

    /// The connections the consumer knows of now, with their claims.
    fn open_connections(&self) -> Vec<(u64, Option<String>)> {
        let Some(instance) = self.instance.as_ref() else {
            return Vec::new();
        };
        let state = instance.store.data();
        state
            .connections
            .iter()
            .map(|id| (*id, state.claims.get(id).map(|c| c.to_string())))
            .collect()
    }

    /// Records that the state as of `generation` is saved.
    pub fn mark_saved(&mut self, generation: u64) {
        self.saved = self.saved.max(generation);
    }
}
