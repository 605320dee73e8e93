//! The metrics of the input journal, per lane: commits by outcome, records committed,
//! how long a commit takes (which is what a journaled message's output waits), inputs
//! replayed when documents reopen, documents whose journal could not be replayed; per
//! plugin, rebuilds after a trap and the timers and departures dropped by one.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::labels::{HistogramFamily, LaneLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    lane: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PluginOutcomeLabels {
    plugin: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PluginInputLabels {
    plugin: String,
    input: &'static str,
}

fn commit_histogram() -> Histogram {
    // 50 µs .. 1 s: a memory sink answers at once, a disk's fsync takes 0.1-10 ms.
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        1.0,
    ])
}

/// The journal families (registered once with the others).
#[derive(Debug, Clone)]
pub(super) struct JournalFamilies {
    commits: Family<OutcomeLabels, Counter>,
    records: Family<LaneLabels, Counter>,
    seconds: HistogramFamily<LaneLabels>,
    replayed: Family<LaneLabels, Counter>,
    unreplayable: Family<LaneLabels, Counter>,
    rebuilds: Family<PluginOutcomeLabels, Counter>,
    dropped: Family<PluginInputLabels, Counter>,
}

impl Default for JournalFamilies {
    fn default() -> Self {
        JournalFamilies {
            commits: Family::default(),
            records: Family::default(),
            seconds: Family::new_with_constructor(commit_histogram),
            replayed: Family::default(),
            unreplayable: Family::default(),
            rebuilds: Family::default(),
            dropped: Family::default(),
        }
    }
}

impl JournalFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "journal_commits",
            "Batches of journal records committed, by outcome (ok, failed)",
            self.commits.clone(),
        );
        r.register(
            "journal_records",
            "Journal records committed",
            self.records.clone(),
        );
        r.register(
            "journal_commit_seconds",
            "How long a journal commit took: what a journaled input's output waited",
            self.seconds.clone(),
        );
        r.register(
            "journal_replayed_inputs",
            "Journaled inputs replayed as documents reopened (after a crash, a trap, a restart)",
            self.replayed.clone(),
        );
        r.register(
            "journal_unreplayable",
            "Documents that refused to open because their journal could not be replayed",
            self.unreplayable.clone(),
        );
        r.register(
            "journal_rebuilds",
            "Documents rebuilt in place from their journal after a trap refused one input, per plugin and outcome (kept: the document and its other sockets went on; failed: it crashed after all)",
            self.rebuilds.clone(),
        );
        r.register(
            "journal_dropped_inputs",
            "Timers and departures whose call trapped, journaled as dropped (never called again) before the rebuild, per plugin and input (timer, departure)",
            self.dropped.clone(),
        );
    }

    /// A plugin's rebuild counters: (kept, failed).
    pub(super) fn rebuilds(&self, plugin: &str) -> [Counter; 2] {
        ["kept", "failed"].map(|outcome| {
            self.rebuilds.get_or_create_owned(&PluginOutcomeLabels {
                plugin: plugin.to_owned(),
                outcome,
            })
        })
    }

    /// A plugin's counters of dropped inputs: (timer, departure).
    pub(super) fn dropped(&self, plugin: &str) -> [Counter; 2] {
        ["timer", "departure"].map(|input| {
            self.dropped.get_or_create_owned(&PluginInputLabels {
                plugin: plugin.to_owned(),
                input,
            })
        })
    }

    pub(super) fn handles(&self, lane: &str) -> JournalMetrics {
        let labels = LaneLabels {
            lane: lane.to_owned(),
        };
        let outcome = |outcome| {
            self.commits.get_or_create_owned(&OutcomeLabels {
                lane: lane.to_owned(),
                outcome,
            })
        };
        JournalMetrics {
            ok: outcome("ok"),
            failed: outcome("failed"),
            records: self.records.get_or_create_owned(&labels),
            seconds: self.seconds.get_or_create_owned(&labels),
            replayed: self.replayed.get_or_create_owned(&labels),
            unreplayable: self.unreplayable.get_or_create_owned(&labels),
        }
    }
}

/// One lane's journal handles.
#[derive(Debug, Clone)]
pub struct JournalMetrics {
    ok: Counter,
    failed: Counter,
    records: Counter,
    seconds: Histogram,
    replayed: Counter,
    unreplayable: Counter,
}

impl JournalMetrics {
    /// Counts a commit of `records` records that took `took`.
    pub fn commit(&self, ok: bool, took: std::time::Duration, records: usize) {
        if ok {
            self.ok.inc();
            self.records.inc_by(records as u64);
        } else {
            self.failed.inc();
        }
        self.seconds.observe(took.as_secs_f64());
    }

    /// Counts `inputs` replayed as a document reopened.
    pub fn replayed(&self, inputs: usize) {
        self.replayed.inc_by(inputs as u64);
    }

    /// Counts a document whose journal could not be replayed.
    pub fn unreplayable(&self) {
        self.unreplayable.inc();
    }
}
