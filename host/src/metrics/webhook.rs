//! The metrics of webhooks: events per plugin by outcome (queued; then delivered,
//! dropped because a bound needed room, replaced by a newer `saved` of their document,
//! or rejected by the backend for good; and each failed attempt that will be retried),
//! and the bytes each plugin's queue holds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::labels::PluginLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    plugin: String,
    outcome: &'static str,
}

/// The webhook families (registered once with the others).
#[derive(Debug, Clone, Default)]
pub(super) struct WebhookFamilies {
    events: Family<OutcomeLabels, Counter>,
    queued_bytes: Family<PluginLabels, Gauge>,
}

impl WebhookFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "webhook_events",
            "Webhook events by outcome: queued, then delivered, dropped (a bound of the queue), \
             replaced (a newer saved of the document) or rejected (a 3xx or 4xx answer); \
             retried counts failed attempts",
            self.events.clone(),
        );
        r.register(
            "webhook_queued_bytes",
            "Bytes the webhook events waiting for the backend hold, as max_pending_bytes counts them",
            self.queued_bytes.clone(),
        );
    }

    pub(super) fn handles(&self, plugin: &str) -> WebhookMetrics {
        let counter = |outcome| {
            self.events.get_or_create_owned(&OutcomeLabels {
                plugin: plugin.to_owned(),
                outcome,
            })
        };
        WebhookMetrics {
            queued: counter("queued"),
            delivered: counter("delivered"),
            retried: counter("retried"),
            dropped: counter("dropped"),
            replaced: counter("replaced"),
            rejected: counter("rejected"),
            queued_bytes: self.queued_bytes.get_or_create_owned(&PluginLabels {
                plugin: plugin.to_owned(),
            }),
        }
    }
}

/// One plugin's webhook counters. Every event counted `queued` ends in exactly one of
/// `delivered`, `dropped`, `replaced` and `rejected`, or is still queued.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    /// Events queued for the backend.
    pub queued: Counter,
    /// Events the backend accepted (2xx).
    pub delivered: Counter,
    /// Attempts that failed (no connection, timeout, 408, 429, 5xx); each is retried.
    pub retried: Counter,
    /// Events dropped, oldest first, because the queue held `max_pending` events or
    /// `max_pending_bytes`; or alone larger than `max_pending_bytes`.
    pub dropped: Counter,
    /// `saved` events a newer `saved` of their document replaced before delivery.
    pub replaced: Counter,
    /// Events the backend refused for good (3xx, or 4xx but 408 and 429): not retried.
    pub rejected: Counter,
    /// Bytes the queue holds (the budget's count).
    pub queued_bytes: Gauge,
}
