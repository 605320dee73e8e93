//! Metrics in the Prometheus/OpenMetrics text format (`GET /metrics`), with
//! `prometheus-client`.
//!
//! The message path touches only handles made once per lane or per document: each is an
//! atomic counter (a relaxed add) or a histogram of its own lane behind a lock no other
//! thread takes but a scrape; no label map is looked up per message. Labels are bounded
//! (see `metrics/labels.rs`): lane index, plugin name and version, guest export, reason and
//! close-code classes; never a document id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

mod journal;
mod labels;
mod plugin;
mod store;
mod webhook;

pub use journal::JournalMetrics;
use labels::{
    CallLabels, CodeLabels, HistogramFamily, LaneLabels, PluginLabels, ReasonLabels, TrapLabels,
    VersionLabels, call_histogram, code_label, save_histogram,
};
pub use labels::{RateLimit, Rejection, Unapplied, trap_kind};
pub use plugin::{Dropped, PluginMetrics};
pub use store::StoreMetrics;
pub use webhook::WebhookMetrics;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Guest exports, in the order of [`PluginMetrics`]' histograms.
const EXPORTS: [&str; 9] = [
    "open",
    "on-connect",
    "on-message",
    "on-messages",
    "on-disconnect",
    "on-timer",
    "on-request",
    "snapshot",
    "restore",
];

/// The memory sizes of one plugin's documents, as a multiset (bytes -> documents).
type Sizes = Arc<Mutex<BTreeMap<u64, usize>>>;

/// Every metric of the process.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    websockets: Family<LaneLabels, Gauge>,
    documents: Family<LaneLabels, Gauge>,
    messages_in: Family<LaneLabels, Counter>,
    messages_out: Family<LaneLabels, Counter>,
    bytes_in: Family<LaneLabels, Counter>,
    bytes_out: Family<LaneLabels, Counter>,
    handed_over: Family<LaneLabels, Counter>,
    adopted: Family<LaneLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    rate_limited: Family<ReasonLabels, Counter>,
    unapplied: Family<ReasonLabels, Counter>,
    closes: Family<CodeLabels, Counter>,
    instances: Family<VersionLabels, Gauge>,
    calls: HistogramFamily<CallLabels>,
    traps: Family<TrapLabels, Counter>,
    memory: Family<PluginLabels, Gauge>,
    memory_largest: Family<PluginLabels, Gauge>,
    saves: Family<PluginLabels, Counter>,
    save_failures: Family<PluginLabels, Counter>,
    save_seconds: HistogramFamily<PluginLabels>,
    reloads: Family<PluginLabels, Counter>,
    reload_failures: Family<PluginLabels, Counter>,
    store: store::StoreFamilies,
    webhooks: webhook::WebhookFamilies,
    journal: journal::JournalFamilies,
    /// Per plugin: document memory sizes (a multiset), for the largest document.
    sizes: Mutex<HashMap<String, Sizes>>,
    /// One render at a time: it rebuilds the instance gauges.
    rendering: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix("wasmroom");
        let m = Metrics {
            registry: Default::default(),
            websockets: Family::default(),
            documents: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            handed_over: Family::default(),
            adopted: Family::default(),
            rejected: Family::default(),
            rate_limited: Family::default(),
            unapplied: Family::default(),
            closes: Family::default(),
            instances: Family::default(),
            calls: Family::new_with_constructor(call_histogram),
            traps: Family::default(),
            memory: Family::default(),
            memory_largest: Family::default(),
            saves: Family::default(),
            save_failures: Family::default(),
            save_seconds: Family::new_with_constructor(save_histogram),
            reloads: Family::default(),
            reload_failures: Family::default(),
            store: store::StoreFamilies::new(),
            webhooks: webhook::WebhookFamilies::default(),
            journal: journal::JournalFamilies::default(),
            sizes: Mutex::new(HashMap::new()),
            rendering: Mutex::new(()),
        };
        let r = &mut registry;
        r.register(
            "websockets",
            "Open WebSocket connections, per lane",
            m.websockets.clone(),
        );
        r.register("documents", "Live documents, per lane", m.documents.clone());
        r.register(
            "messages_received",
            "WebSocket messages from clients",
            m.messages_in.clone(),
        );
        r.register(
            "messages_sent",
            "WebSocket messages to clients",
            m.messages_out.clone(),
        );
        r.register(
            "received_bytes",
            "Payload bytes of messages from clients",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Payload bytes of messages to clients",
            m.bytes_out.clone(),
        );
        r.register(
            "handed_over",
            "Connections handed to the lane owning their document",
            m.handed_over.clone(),
        );
        r.register(
            "adopted",
            "Connections other lanes handed to this one",
            m.adopted.clone(),
        );
        r.register(
            "rejected",
            "Requests refused before reaching a document, by reason",
            m.rejected.clone(),
        );
        r.register(
            "rate_limited",
            "WebSocket connections closed (1008) for sending too fast, by the limit they broke",
            m.rate_limited.clone(),
        );
        r.register(
            "messages_unapplied",
            "WebSocket messages from clients that were read but not applied (never counted as received), by reason: the connection was closing, the document had left this host, the server was stopping",
            m.unapplied.clone(),
        );
        r.register(
            "closes",
            "WebSocket connections ended, by close code",
            m.closes.clone(),
        );
        r.register(
            "instances",
            "Live consumer instances, per plugin version",
            m.instances.clone(),
        );
        r.register(
            "guest_call_seconds",
            "Duration of guest calls, per lane, plugin and export",
            m.calls.clone(),
        );
        r.register(
            "traps",
            "Guest calls that trapped, per plugin and kind: each ended its document, or refused its input (journal mode)",
            m.traps.clone(),
        );
        r.register(
            "memory_bytes",
            "Linear memory of all live documents, per plugin",
            m.memory.clone(),
        );
        r.register(
            "memory_largest_document_bytes",
            "Linear memory of the largest live document, per plugin",
            m.memory_largest.clone(),
        );
        r.register("snapshot_saves", "Snapshots written", m.saves.clone());
        r.register(
            "snapshot_save_failures",
            "Snapshot writes that failed",
            m.save_failures.clone(),
        );
        r.register(
            "snapshot_save_seconds",
            "Time to write a snapshot",
            m.save_seconds.clone(),
        );
        r.register(
            "reloads",
            "New plugin versions loaded (hot reload)",
            m.reloads.clone(),
        );
        r.register(
            "reload_failures",
            "Plugin files that failed to load",
            m.reload_failures.clone(),
        );
        m.store.register(r);
        m.webhooks.register(r);
        m.journal.register(r);
        Metrics { registry, ..m }
    }

    /// The shared store's handles.
    pub fn store(&self) -> StoreMetrics {
        self.store.handles()
    }

    /// `plugin`'s webhook counters.
    pub fn webhook(&self, plugin: &str) -> WebhookMetrics {
        self.webhooks.handles(plugin)
    }

    /// The handles of lane `index`.
    pub fn lane(&self, index: usize) -> LaneMetrics {
        let lane = LaneLabels {
            lane: index.to_string(),
        };
        LaneMetrics {
            lane: lane.lane.clone(),
            websockets: self.websockets.get_or_create_owned(&lane),
            documents: self.documents.get_or_create_owned(&lane),
            messages_in: self.messages_in.get_or_create_owned(&lane),
            messages_out: self.messages_out.get_or_create_owned(&lane),
            bytes_in: self.bytes_in.get_or_create_owned(&lane),
            bytes_out: self.bytes_out.get_or_create_owned(&lane),
            handed_over: self.handed_over.get_or_create_owned(&lane),
            adopted: self.adopted.get_or_create_owned(&lane),
            rejected: self.rejected.clone(),
            rate_limited: self.rate_limited.clone(),
            unapplied: self.unapplied.clone(),
            closes: self.closes.clone(),
            journal: self.journal.handles(&lane.lane),
        }
    }

    /// The handles for documents of `plugin` on lane `lane`. Call histograms are per lane
    /// too: each sits behind a lock, which then only its own lane takes.
    pub fn plugin(&self, plugin: &str, lane: usize) -> PluginMetrics {
        let label = PluginLabels {
            plugin: plugin.to_owned(),
        };
        let sizes = self
            .sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plugin.to_owned())
            .or_default()
            .clone();
        PluginMetrics {
            plugin: plugin.to_owned(),
            calls: EXPORTS.map(|export| {
                self.calls.get_or_create_owned(&CallLabels {
                    lane: lane.to_string(),
                    plugin: plugin.to_owned(),
                    export,
                })
            }),
            traps: self.traps.clone(),
            rebuilds: self.journal.rebuilds(plugin),
            dropped: self.journal.dropped(plugin),
            memory: self.memory.get_or_create_owned(&label),
            memory_largest: self.memory_largest.get_or_create_owned(&label),
            sizes,
            saves: self.saves.get_or_create_owned(&label),
            save_failures: self.save_failures.get_or_create_owned(&label),
            save_seconds: self.save_seconds.get_or_create_owned(&label),
        }
    }

    /// Counts a plugin load: a new version, or a failure.
    pub fn reloaded(&self, plugin: &str, ok: bool) {
        let label = PluginLabels {
            plugin: plugin.to_owned(),
        };
        if ok {
            self.reloads.get_or_create(&label).inc();
        } else {
            self.reload_failures.get_or_create(&label).inc();
        }
    }

    /// The exposition text, with `instances` as the live instances per plugin version
    /// (plugin, version, live documents), as the plugin registry counts them now.
    pub fn render(&self, instances: &[(String, String, usize)]) -> String {
        let _one_at_a_time = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        // Versions come and go: rebuild the gauge so gone versions disappear.
        self.instances.clear();
        for (plugin, version, live) in instances {
            self.instances
                .get_or_create(&VersionLabels {
                    plugin: plugin.clone(),
                    version: version.clone(),
                })
                .set(*live as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One lane's metric handles (cloned once when the lane starts).
#[derive(Debug, Clone)]
pub struct LaneMetrics {
    lane: String,
    /// Open WebSockets.
    pub websockets: Gauge,
    /// Live documents.
    pub documents: Gauge,
    /// Messages from clients.
    pub messages_in: Counter,
    /// Messages to clients.
    pub messages_out: Counter,
    /// Payload bytes from clients.
    pub bytes_in: Counter,
    /// Payload bytes to clients.
    pub bytes_out: Counter,
    /// Connections handed to another lane.
    pub handed_over: Counter,
    /// Connections taken from another lane.
    pub adopted: Counter,
    rejected: Family<ReasonLabels, Counter>,
    rate_limited: Family<ReasonLabels, Counter>,
    unapplied: Family<ReasonLabels, Counter>,
    closes: Family<CodeLabels, Counter>,
    /// The input journal: commits, replays.
    pub journal: JournalMetrics,
}

impl LaneMetrics {
    /// Counts a message read but not applied.
    pub fn unapplied(&self, why: Unapplied) {
        self.unapplied
            .get_or_create(&ReasonLabels {
                lane: self.lane.clone(),
                reason: why.label(),
            })
            .inc();
    }

    /// Counts a connection closed for sending too fast.
    pub fn rate_limited(&self, limit: RateLimit) {
        self.rate_limited
            .get_or_create(&ReasonLabels {
                lane: self.lane.clone(),
                reason: limit.label(),
            })
            .inc();
    }

    /// Counts a refused request.
    pub fn rejected(&self, why: Rejection) {
        self.rejected
            .get_or_create(&ReasonLabels {
                lane: self.lane.clone(),
                reason: why.label(),
            })
            .inc();
    }

    /// Counts a WebSocket that ended with `code`.
    pub fn closed(&self, code: u16) {
        self.closes
            .get_or_create(&CodeLabels {
                lane: self.lane.clone(),
                code: code_label(code),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_document_follows_growth_and_drops() {
        let metrics = Metrics::new();
        let p = metrics.plugin("chat", 0);
        p.memory_changed(0, 100);
        p.memory_changed(0, 300);
        p.memory_changed(100, 200);
        assert_eq!(p.memory.get(), 500);
        assert_eq!(p.memory_largest.get(), 300);
        p.memory_changed(300, 0);
        assert_eq!((p.memory.get(), p.memory_largest.get()), (200, 200));
        p.memory_changed(200, 0);
        assert_eq!((p.memory.get(), p.memory_largest.get()), (0, 0));
    }

    #[test]
    fn close_codes_are_bounded() {
        assert_eq!(code_label(1000), "1000");
        assert_eq!(code_label(4321), "4xxx");
        assert_eq!(code_label(2000), "other");
    }
}
