//! The metric handles of one plugin's documents: guest call durations, traps, memory
//! (the sum and the largest document), snapshot writes, rebuilds after a trap, the
//! timers and departures a trap dropped.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::labels::TrapLabels;
use super::{EXPORTS, Sizes, trap_kind};

/// The metric handles of one plugin's documents (cloned when a document opens).
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    pub(super) plugin: String,
    pub(super) calls: [Histogram; 9],
    pub(super) traps: Family<TrapLabels, Counter>,
    pub(super) memory: Gauge,
    pub(super) memory_largest: Gauge,
    pub(super) sizes: Sizes,
    pub(super) saves: Counter,
    pub(super) save_failures: Counter,
    pub(super) save_seconds: Histogram,
    pub(super) rebuilds: [Counter; 2],
    pub(super) dropped: [Counter; 2],
}

/// An input nobody can be refused, which a trap dropped (journal mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A timer fired and its `on-timer` trapped.
    Timer,
    /// A connection left and its `on-disconnect` trapped.
    Departure,
}

impl PluginMetrics {
    /// Counts a document rebuilt in place after a trap: `kept`, or it crashed after all.
    pub fn rebuilt(&self, kept: bool) {
        self.rebuilds[usize::from(!kept)].inc();
    }

    /// Counts an input a trap dropped.
    pub fn dropped(&self, input: Dropped) {
        self.dropped[input as usize].inc();
    }

    /// Records a guest call of `export` that took `took`.
    pub fn call(&self, export: &str, took: Duration) {
        if let Some(i) = EXPORTS.iter().position(|e| *e == export) {
            self.calls[i].observe(took.as_secs_f64());
        }
    }

    /// Counts a trap.
    pub fn trapped(&self, error: &wasmtime::Error) {
        self.traps
            .get_or_create(&TrapLabels {
                plugin: self.plugin.clone(),
                kind: trap_kind(error),
            })
            .inc();
    }

    /// A document's linear memory went from `old` to `new` bytes (0 = no document).
    pub fn memory_changed(&self, old: u64, new: u64) {
        if old == new {
            return;
        }
        self.memory.inc_by(new as i64 - old as i64);
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        if old > 0
            && let Some(n) = sizes.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                sizes.remove(&old);
            }
        }
        if new > 0 {
            *sizes.entry(new).or_default() += 1;
        }
        let largest = sizes.last_key_value().map_or(0, |(&bytes, _)| bytes);
        self.memory_largest.set(largest as i64);
    }

    /// Records a snapshot write.
    pub fn saved(&self, ok: bool, took: Duration) {
        if ok {
            self.saves.inc();
            self.save_seconds.observe(took.as_secs_f64());
        } else {
            self.save_failures.inc();
        }
    }
}
