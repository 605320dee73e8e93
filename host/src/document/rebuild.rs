//! Journal mode: a consumer that traps on a message, a connection, a request, a timer or
//! a departure keeps its document and every other socket (ARCHITECTURE.md, "Recovery,
//! reopening, traps").
//!
//! A record is journaled only after its call returned, so the document's last checkpoint
//! (`base`, kept since it was written) plus its tail is its state just before the input
//! that trapped. The rebuild makes a fresh instance from those two, in place: the
//! outboxes (the sockets) stay with the document, and what the trapping call had asked
//! the host to send was still among its effects and goes with the old instance (earlier
//! inputs' output, already queued, stays behind the output gate as before). The input
//! is refused: its caller answers it ([`DocumentError::InputRefused`]: the sender closed
//! with 1011, a connection or a request refused with 500). A timer or a departure has
//! nobody to refuse: it is dropped instead, journaled as such first (`TimerDropped`,
//! `Detach`) so that the rebuild, and every replay after, leaves it out without calling
//! it ([`crate::document::dropped`]).
//!
//! It runs on the lane like an open (instantiate, restore, replay: at most a checkpoint
//! interval of inputs, each under the guest deadline). It is not tried, and the document
//! crashes as in checkpoint mode, during a replay, or beyond [`MAX_REBUILDS`] in
//! [`REBUILD_WINDOW`] (one client repeating a poison message costs a replay each time);
//! nor does it survive a rebuild that traps or diverges: that is a crash too, and the
//! reopen refuses what cannot be replayed.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmroom_wire::journal::Record;

use crate::document::error::{DocumentError, NOT_APPLIED};
use crate::document::live::Document;
use crate::document::trap::Trap;
use crate::document::versions::{ReplayVersions, needed};
use crate::guest::CallStart;
use crate::guest::engine::Slot;
use crate::store::Snapshot;

/// Rebuilds a document gets within [`REBUILD_WINDOW`] before a trap crashes it.
pub const MAX_REBUILDS: usize = 3;

/// See [`MAX_REBUILDS`].
pub const REBUILD_WINDOW: Duration = Duration::from_secs(60);

impl Document {
    /// Records `base` as the checkpoint the document's journal tail goes on from.
    pub fn set_base(&mut self, base: Option<Arc<Snapshot>>) {
        if base
            .as_ref()
            .is_some_and(|b| b.plugin_version == self.plugin.version)
        {
            // Every input after it is this version's: a rebuild needs no other.
            self.versions = Rc::new(ReplayVersions::none());
        }
        self.base = base;
    }

    /// Keeps the plugin versions its tail's inputs were made by, for a rebuild.
    pub fn set_versions(&mut self, versions: Rc<ReplayVersions>) {
        self.versions = versions;
    }

    /// A call from `start` trapped (`trap`): the document is rebuilt without it if it
    /// may be, else it crashes. `dropped` is what the journal records of an input nobody
    /// can be refused (a timer, a departure), which may be rebuilt without only so.
    /// Returns the error the call's caller answers with.
    pub(super) fn trapped(
        &mut self,
        trap: Trap,
        start: CallStart,
        dropped: Option<Record>,
    ) -> DocumentError {
        if !self.may_rebuild(trap.what(), dropped.is_some()) {
            return self.crash(trap);
        }
        let without = match dropped {
            Some(dropped) => self.drop_input(start, dropped),
            None => "that input".to_owned(),
        };
        self.rebuild(trap, &without)
    }

    /// Whether a trap in `what` rebuilds the document rather than crashing it; an input
    /// nobody can be refused (`droppable`) only if it can be journaled as dropped.
    fn may_rebuild(&mut self, what: &str, droppable: bool) -> bool {
        let now = Instant::now();
        self.rebuilds
            .retain(|at| now.saturating_duration_since(*at) < REBUILD_WINDOW);
        let refusable = matches!(
            what,
            "on-message" | "on-messages" | "on-connect" | "on-request"
        );
        self.journaled
            && self.tail.is_some()
            && !self.replaying
            && !self.retired
            && (refusable || droppable)
            && self.rebuilds.len() < MAX_REBUILDS
    }

    /// Rebuilds the document `without` the input whose call trapped (`trap`); if that
    /// fails, it crashes. Returns the error the input's caller answers with.
    fn rebuild(&mut self, trap: Trap, without: &str) -> DocumentError {
        let summary = match trap.report(
            &self.plugin,
            &self.id,
            format_args!("rebuilding the document from its journal without {without}"),
        ) {
            DocumentError::Crashed(summary) => summary,
            other => other.to_string(),
        };
        self.rebuilds.push(Instant::now());
        let old = self.instance.take().expect("a call just trapped in it");
        self.plugin.live.fetch_sub(1, Ordering::Relaxed);
        let slot = old.into_slot();
        self.sync_memory();
        let started = Instant::now();
        match self.rebuilt(slot) {
            Ok(replayed) => {
                self.metrics.rebuilt(true);
                tracing::info!(
                    plugin = %self.plugin.name,
                    doc = %self.id,
                    "rebuilt from its journal ({replayed} input(s) replayed) in {:?}; its {} connection(s) stay",
                    started.elapsed(),
                    self.outboxes.len()
                );
                DocumentError::InputRefused(summary)
            }
            Err(e) => {
                self.metrics.rebuilt(false);
                tracing::error!(
                    plugin = %self.plugin.name,
                    doc = %self.id,
                    "the rebuild failed ({e}); closing its {} connection(s)",
                    self.outboxes.len()
                );
                self.crashed();
                DocumentError::Crashed(summary)
            }
        }
    }

    /// A fresh instance in `slot` from the base and the tail, put in place of the one
    /// that trapped; returns how many inputs were replayed.
    fn rebuilt(&mut self, slot: Slot) -> Result<usize, DocumentError> {
        let base = self.base.clone();
        let tail = self
            .tail
            .clone()
            .expect("only journaled documents are rebuilt");
        // The version that made the first input after the base (it is another only for
        // a document opened by replaying through hot reloads, until its next checkpoint).
        let first = needed(base.as_deref(), tail.borrow().entries())
            .first()
            .and_then(|v| self.versions.get(v).cloned())
            .unwrap_or_else(|| self.plugin.clone());
        let mut fresh = Document::open(
            first,
            &self.id,
            self.limits.clone(),
            self.metrics.clone(),
            slot,
            base.as_deref(),
            self.tail.clone(),
            self.incarnation,
        )?;
        if let Some(base) = &base {
            fresh.restore(base)?;
        }
        let replayed = fresh.replay_until(None, &self.versions)?;
        fresh.replay_done();
        if fresh.plugin.version != self.plugin.version {
            return Err(DocumentError::Unreplayable(format!(
                "the replay ended on version {}, not {}",
                fresh.plugin.version, self.plugin.version
            )));
        }
        let next_id = self.lineage.continuity().next_connection_id;
        self.instance = fresh.instance.take();
        // The instance counts as live on the plugin it was made of.
        self.plugin = fresh.plugin.clone();
        std::mem::swap(&mut self.lineage, &mut fresh.lineage);
        // Ids given to connections whose joining was never journaled (the one that
        // trapped) are not given again: their sockets may still be closing.
        self.lineage.connection_seen(next_id.saturating_sub(1));
        self.sync_memory();
        self.reconcile_connections();
        if self.instance.is_none() {
            // A departure reconciled there crashed it (past the rebuilds allowed).
            return Err(DocumentError::Crashed(
                "a departure trapped during the rebuild".into(),
            ));
        }
        // Its timers are the rebuilt instance's now.
        self.wake.notify_one();
        Ok(replayed)
    }

    /// Makes the consumer's connections and the document's sockets the same again: a
    /// socket the rebuilt consumer never accepted (its joining trapped) is refused, and
    /// a connection it knows of without a socket has gone (1006, journaled).
    fn reconcile_connections(&mut self) {
        let known: HashSet<u64> = self.guest_connections().into_iter().collect();
        let unknown: Vec<u64> = self
            .outboxes
            .keys()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        for id in unknown {
            if let Some(outbox) = self.outboxes.get(&id) {
                outbox.close(1011, NOT_APPLIED);
            }
            self.detach(id);
        }
        let gone: Vec<u64> = known
            .into_iter()
            .filter(|id| !self.outboxes.contains_key(id))
            .collect();
        if !gone.is_empty() {
            self.cut_connections(gone);
        }
    }
}
