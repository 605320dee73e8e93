//! The metrics of the shared store: round trips to PostgreSQL and their latency by
//! statement, leases taken, released and lost, writes refused by fencing, and whether
//! this host's lease holds.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::labels::HistogramFamily;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OpLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LostLabels {
    reason: &'static str,
}

fn round_trip_histogram() -> prometheus_client::metrics::histogram::Histogram {
    // 100 µs .. 5 s: a round trip on loopback takes a fraction of a millisecond; the
    // statement timeout is 5 s.
    prometheus_client::metrics::histogram::Histogram::new([
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ])
}

/// The store's families (registered once with the others).
#[derive(Debug, Clone)]
pub(super) struct StoreFamilies {
    round_trips: Family<OpLabels, Counter>,
    seconds: HistogramFamily<OpLabels>,
    taken: Counter,
    released: Counter,
    lost: Family<LostLabels, Counter>,
    fenced: Counter,
    lease_valid: Gauge,
}

impl StoreFamilies {
    pub(super) fn new() -> StoreFamilies {
        StoreFamilies {
            round_trips: Family::default(),
            seconds: Family::new_with_constructor(round_trip_histogram),
            taken: Counter::default(),
            released: Counter::default(),
            lost: Family::default(),
            fenced: Counter::default(),
            lease_valid: Gauge::default(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "store_round_trips",
            "Statements sent to the shared store, by statement and outcome",
            self.round_trips.clone(),
        );
        r.register(
            "store_round_trip_seconds",
            "Time from sending a statement to its answer",
            self.seconds.clone(),
        );
        r.register(
            "leases_taken",
            "Documents this host took in the shared store",
            self.taken.clone(),
        );
        r.register(
            "leases_released",
            "Documents this host let go in the shared store",
            self.released.clone(),
        );
        r.register(
            "leases_lost",
            "Documents dropped because their lease was lost: fenced (another host took it) or lapsed (no heartbeat)",
            self.lost.clone(),
        );
        r.register(
            "fenced_writes",
            "Snapshot writes refused because another host took the document",
            self.fenced.clone(),
        );
        r.register(
            "lease_valid",
            "1 while this host's lease in the shared store holds (always 1 without one)",
            self.lease_valid.clone(),
        );
        self.lease_valid.set(1);
    }

    pub(super) fn handles(&self) -> StoreMetrics {
        StoreMetrics {
            families: self.clone(),
        }
    }
}

/// The store's metric handles.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    families: StoreFamilies,
}

impl StoreMetrics {
    /// One statement of `op` that took `took`.
    pub fn round_trip(&self, op: &'static str, took: Duration, ok: bool) {
        let labels = OpLabels {
            op,
            outcome: if ok { "ok" } else { "error" },
        };
        self.families.round_trips.get_or_create(&labels).inc();
        self.families
            .seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A document's lease taken.
    pub fn lease_taken(&self) {
        self.families.taken.inc();
    }

    /// A document's lease released.
    pub fn lease_released(&self) {
        self.families.released.inc();
    }

    /// `count` documents dropped because their lease was lost (`fenced` or `lapsed`).
    pub fn leases_lost(&self, reason: &'static str, count: u64) {
        self.families
            .lost
            .get_or_create(&LostLabels { reason })
            .inc_by(count);
    }

    /// A write refused by fencing.
    pub fn fenced_write(&self) {
        self.families.fenced.inc();
    }

    /// Whether this host's lease holds.
    pub fn lease_valid(&self, valid: bool) {
        self.families.lease_valid.set(i64::from(valid));
    }
}
