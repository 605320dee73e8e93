//! The metrics of webhooks: events per plugin by outcome (queued, delivered, a failed
//! attempt that will be retried, dropped because the queue was full).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    plugin: String,
    outcome: &'static str,
}

/// The webhook family (registered once with the others).
#[derive(Debug, Clone, Default)]
pub(super) struct WebhookFamilies {
    events: Family<OutcomeLabels, Counter>,
}

impl WebhookFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "webhook_events",
            "Webhook events by outcome: queued, delivered, retried (an attempt failed), dropped (queue full)",
            self.events.clone(),
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
        }
    }
}

/// One plugin's webhook counters.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    /// Events queued for the backend.
    pub queued: Counter,
    /// Events the backend accepted (2xx).
    pub delivered: Counter,
    /// Attempts that failed (no connection, timeout, not 2xx); each is retried.
    pub retried: Counter,
    /// Events dropped, oldest first, because the queue held `max_pending`.
    pub dropped: Counter,
}
