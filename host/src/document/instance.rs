//! A document's consumer instance: created from the plugin's pre-instantiated component
//! in the pooling allocator, `open` called, every guest call run with the epoch deadline
//! armed, from the clock and random stream the document chose for it, and host panics
//! caught.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use crate::config::{Config, Durability};
use crate::document::error::DocumentError;
use crate::document::trap::Trap;
use crate::guest::context::PluginSettings;
use crate::guest::engine::{Slot, deadline_ticks};
use crate::guest::plugin::Plugin;
use crate::guest::random::Seed;
use crate::guest::{Batch, CallStart, GuestState, Room};
use crate::metrics::PluginMetrics;

/// What the config gives each document of a plugin: the limits it applies to its
/// instance, and the plugin's settings.
#[derive(Debug, Clone)]
pub struct DocumentConfig {
    /// Linear memory cap.
    pub max_memory_bytes: usize,
    /// Largest message the guest may send.
    pub max_message_bytes: usize,
    /// Pending timers cap.
    pub max_timers: u32,
    /// Guest call deadline, in epoch ticks.
    pub deadline_ticks: u64,
    /// The plugin's settings (`context.setting`).
    pub settings: Arc<PluginSettings>,
    /// Journal mode (`durability = "journal"`): inputs are journaled, outputs gated.
    pub journaled: bool,
    /// What a session's connection restored without a socket may hold.
    pub sessions: SessionBounds,
}

/// The bounds of a session's connection (`max_queued_bytes`, `max_queued_frames`) and how
/// long its unacknowledged messages are kept (`session_grace_ms`).
#[derive(Debug, Clone, Copy)]
pub struct SessionBounds {
    pub max_bytes: usize,
    pub max_frames: usize,
    pub keep: std::time::Duration,
}

impl DocumentConfig {
    /// What `config` gives the documents of `plugin`, with its `settings`.
    pub fn of(config: &Config, plugin: &str, settings: Arc<PluginSettings>) -> DocumentConfig {
        DocumentConfig {
            max_memory_bytes: config.max_memory_for(plugin),
            max_message_bytes: config.limits.max_message_bytes,
            max_timers: config.limits.max_timers,
            deadline_ticks: deadline_ticks(config.guest_deadline_for(plugin)),
            settings,
            journaled: config.durability_for(plugin) == Durability::Journal,
            sessions: SessionBounds {
                max_bytes: config.limits.max_queued_bytes,
                max_frames: config.limits.max_queued_frames,
                keep: config.session_grace(),
            },
        }
    }
}

/// Why an instance is created, and what its first call (`open`) starts from.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    /// The document's random seed.
    pub seed: &'a Seed,
    /// The clock and random stream of `open`.
    pub start: CallStart,
    /// The document's first instance: a trap in `open` counts as a document ended by a
    /// trap (and becomes the plugin's last error). A migration's instance leaves both to
    /// its caller.
    pub count_traps: bool,
}

/// The instance of a live document.
pub struct Instance {
    /// The store: the guest's state and the host's per-document state.
    pub store: Store<GuestState>,
    room: Room,
    /// Its `on-messages`, if the consumer exports it (WIT 0.1.2).
    batch: Option<Batch>,
    /// Its place in the instance pool, given back with it.
    _slot: Slot,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("state", self.store.data())
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// A fresh instance of `plugin` for document `id`, opened (`open` called).
    pub fn create(
        plugin: &Plugin,
        id: &str,
        limits: &DocumentConfig,
        metrics: &PluginMetrics,
        slot: Slot,
        opening: Opening<'_>,
    ) -> Result<Instance, DocumentError> {
        let tag: Arc<str> = format!("{}/{}", plugin.name, id).into();
        let engine = plugin.pre.instance_pre().engine().clone();
        let mut store = Store::new(
            &engine,
            GuestState::new(
                tag,
                limits.max_memory_bytes,
                limits.max_message_bytes,
                limits.max_timers,
                limits.settings.clone(),
                opening.seed,
            ),
        );
        if limits.journaled {
            store.data_mut().settings.journal();
        }
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(limits.deadline_ticks);
        let (room, batch) = plugin.instantiate(&mut store).map_err(|e| {
            if e.chain()
                .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
            {
                DocumentError::PoolExhausted(format!("{e}"))
            } else {
                DocumentError::Instantiate(format!("{e:#}"))
            }
        })?;
        let mut instance = Instance {
            store,
            room,
            batch,
            _slot: slot,
        };
        let started = Instant::now();
        let opened = instance.guarded(limits.deadline_ticks, opening.start, |room, store| {
            room.wasmroom_consumer_consumer().call_open(store, id)
        });
        metrics.call("open", started.elapsed());
        let opened = opened.map_err(|e| {
            let trap = Trap::new("open", &e, instance.store.data().stderr_tail());
            if opening.count_traps {
                metrics.trapped(&e);
                trap.report(plugin, id, "the document does not open")
            } else {
                trap.logged(plugin, id, "the document stays on its old version")
            }
        })?;
        opened.map_err(DocumentError::Refused)?;
        // Effects of `open` (logs only: there are no connections yet) are dropped.
        instance.store.data_mut().effects.clear();
        Ok(instance)
    }

    /// Drops the instance and keeps its place in the pool, for the instance that
    /// replaces it.
    pub fn into_slot(self) -> Slot {
        let Instance {
            store, room, _slot, ..
        } = self;
        drop((room, store));
        _slot
    }

    /// The consumer's `on-messages`, if it exports it: a handle to pass into a call's
    /// closure, which sees only the `room` world's exports.
    pub fn batch(&self) -> Option<Batch> {
        self.batch.clone()
    }

    /// Runs one guest call from `start` with the deadline armed. A panic in a host
    /// function (a wasmroom bug) must not take the lane down with it: wasmtime resumes it
    /// here, and it comes back as an error like a trap.
    pub fn guarded<R>(
        &mut self,
        deadline_ticks: u64,
        start: CallStart,
        f: impl FnOnce(&Room, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        self.store.set_epoch_deadline(deadline_ticks);
        self.store.data_mut().begin_call(start);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&self.room, &mut self.store)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(wasmtime::Error::msg(format!("host panicked: {what}")))
        })
    }
}
