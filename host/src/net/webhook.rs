//! Webhooks (`[plugin.NAME.webhook]`): what happened to documents, POSTed as JSON to the
//! application's backend with an `X-Wasmroom-Signature: sha256=<HMAC>` header. A lane
//! only appends an event to its plugin's queue ([`crate::net::webhook_queue`]: a short
//! lock, never I/O), bounded in events and in bytes and holding one `saved` per document;
//! one thread of its own delivers every queue in order, retrying with back-off while the
//! backend is down, slow or busy (no connection, timeout, 408, 429, 5xx). An answer that
//! would not change (a 3xx, or a 4xx but 408 and 429) drops the event, counted, and the
//! next one goes: one event the backend refuses never holds up the others. Redirects are
//! not followed: one would turn the POST into a GET elsewhere, counted delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::config::{Config, ConfigError, ResolvedWebhook, WebhookEvent};
use crate::metrics::{Metrics, WebhookMetrics};
use crate::net::webhook_answer::{Outcome, judge};
use crate::net::webhook_queue::{Delivery, Pending};
pub use crate::net::webhook_queue::{Event, Export};

/// First wait after a failed delivery; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A refusal with the same reason as the last one is logged at most this often.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One plugin's queue.
#[derive(Debug)]
struct Queue {
    plugin: String,
    /// This process's start (ms since the epoch, hex): with the sequence number, an
    /// event id no other run of the host repeats.
    run: String,
    hook: ResolvedWebhook,
    pending: Mutex<Pending>,
    wake: Notify,
    counts: WebhookMetrics,
}

impl Queue {
    fn new(plugin: &str, run: &str, hook: ResolvedWebhook, metrics: &Metrics) -> Queue {
        Queue {
            plugin: plugin.to_owned(),
            run: run.to_owned(),
            pending: Mutex::new(Pending::new(hook.max_pending, hook.max_pending_bytes)),
            hook,
            wake: Notify::new(),
            counts: metrics.webhook(plugin),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes event `id` out once its delivery ended; false if a bound dropped it
    /// meanwhile (counted then).
    fn finish(&self, id: u64) -> bool {
        let mut pending = self.pending();
        let finished = pending.finish(id);
        self.counts.queued_bytes.set(gauge(pending.bytes()));
        finished
    }
}

fn gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Every plugin's webhook queue and the thread that delivers them.
#[derive(Debug, Default)]
pub struct Webhooks {
    queues: HashMap<String, Arc<Queue>>,
    next_id: AtomicU64,
}

impl Webhooks {
    /// The webhooks `config` names, with their delivery thread started (none when no
    /// plugin has a webhook).
    pub fn start(config: &Config, metrics: &Metrics) -> Result<Webhooks, ConfigError> {
        let mut queues = HashMap::new();
        let run = format!("{:x}", now_ms());
        for plugin in config.plugin.keys() {
            if let Some(hook) = config.webhook_for(plugin)? {
                queues.insert(
                    plugin.clone(),
                    Arc::new(Queue::new(plugin, &run, hook, metrics)),
                );
            }
        }
        if !queues.is_empty() {
            let all: Vec<Arc<Queue>> = queues.values().cloned().collect();
            std::thread::Builder::new()
                .name("webhooks".into())
                .spawn(move || deliver_all(all))
                .map_err(|e| ConfigError::Webhook {
                    plugin: "*".into(),
                    reason: format!("cannot start the delivery thread: {e}"),
                })?;
        }
        Ok(Webhooks {
            queues,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether `plugin` sends `kind` events (so the caller can skip preparing one).
    pub fn wants(&self, plugin: &str, kind: WebhookEvent) -> bool {
        self.queues
            .get(plugin)
            .is_some_and(|q| q.hook.events.contains(&kind))
    }

    /// Queues `event` of `plugin`'s document, if its webhook wants it. Never blocks on
    /// the backend: a full queue drops its oldest events, a newer `saved` replaces its
    /// document's waiting one.
    pub fn emit(&self, plugin: &str, event: Event) {
        let Some(queue) = self.queues.get(plugin) else {
            return;
        };
        if !queue.hook.events.contains(&event.kind) {
            return;
        }
        let at = now_ms();
        let pushed = {
            let mut pending = queue.pending();
            // Taken under the lock, so ids ascend in each queue.
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let pushed = pending.push(id, event, at);
            queue.counts.queued_bytes.set(gauge(pending.bytes()));
            pushed
        };
        queue.counts.queued.inc();
        queue.counts.dropped.inc_by(pushed.dropped);
        queue.counts.replaced.inc_by(pushed.replaced);
        queue.wake.notify_one();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The delivery thread: one task per plugin on a runtime of its own.
fn deliver_all(queues: Vec<Arc<Queue>>) {
    // rustls needs one process-wide provider; ring builds everywhere Rust does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("webhooks disabled: cannot start their runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for queue in queues {
            tasks.push(tokio::spawn(deliver(queue)));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// Delivers one plugin's events in order, each until the backend accepts or refuses it
/// for good, or a bound of the queue drops it.
async fn deliver(queue: Arc<Queue>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(queue.hook.timeout_ms))
        // A followed 302 or 303 would turn the POST into a GET elsewhere, and its 200
        // would count as delivered.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(plugin = %queue.plugin, "webhook disabled: cannot build its client: {e}");
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    let mut last_refusal: Option<(String, Instant)> = None;
    loop {
        let waiting = queue.wake.notified();
        let next = queue.pending().next_delivery();
        let Some(Delivery { id, event, at_ms }) = next else {
            waiting.await;
            continue;
        };
        let kind = event.kind.name();
        let body = body(&queue.plugin, &format!("{}-{id}", queue.run), &event, at_ms).to_string();
        // The queue keeps the event; while it is sent only its JSON is held here.
        drop(event);
        let signature = sign(&queue.hook.secret, body.as_bytes());
        let sent = client
            .post(&queue.hook.url)
            .header("content-type", "application/json")
            .header("x-wasmroom-signature", format!("sha256={signature}"))
            .header("x-wasmroom-event", kind)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(answer) => judge(answer.status(), answer.headers()),
            Err(e) => Outcome::Retry {
                why: e.to_string(),
                after: None,
            },
        };
        match outcome {
            Outcome::Delivered => {
                if queue.finish(id) {
                    queue.counts.delivered.inc();
                }
                backoff = FIRST_BACKOFF;
            }
            Outcome::Rejected(why) => {
                if queue.finish(id) {
                    queue.counts.rejected.inc();
                }
                backoff = FIRST_BACKOFF;
                // Once a minute per reason: a backend refusing every event must not
                // flood the log.
                let repeated = last_refusal.as_ref().is_some_and(|(last, at)| {
                    *last == why && at.elapsed() < REJECTION_LOG_INTERVAL
                });
                if repeated {
                    tracing::debug!(plugin = %queue.plugin, "webhook {kind} event dropped, the backend refused it: {why}");
                } else {
                    tracing::warn!(plugin = %queue.plugin, "webhook {kind} event dropped, the backend refused it: {why}");
                    last_refusal = Some((why, Instant::now()));
                }
            }
            Outcome::Retry { why, after } => {
                queue.counts.retried.inc();
                let wait = after.map_or(backoff, |after| after.max(backoff));
                tracing::warn!(plugin = %queue.plugin, "webhook delivery failed, retrying in {wait:?}: {why}");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The JSON body of one event.
fn body(plugin: &str, id: &str, event: &Event, at_ms: u64) -> Value {
    let mut body = json!({
        "id": id,
        "event": event.kind.name(),
        "plugin": plugin,
        "document": event.document,
        "time_ms": at_ms,
    });
    if let Some(connection) = event.connection {
        body["connection"] = json!(connection);
    }
    if let Some(code) = event.code {
        body["code"] = json!(code);
    }
    match &event.export {
        Some(Export::Consumer {
            content_type,
            body: bytes,
        }) => {
            body["export"] = match std::str::from_utf8(bytes) {
                Ok(text) => {
                    json!({"source": "on-request", "content_type": content_type, "encoding": "utf-8", "body": text})
                }
                Err(_) => {
                    json!({"source": "on-request", "content_type": content_type, "encoding": "base64", "body": base64(bytes)})
                }
            };
        }
        Some(Export::Snapshot(bytes)) => {
            body["export"] =
                json!({"source": "snapshot", "encoding": "base64", "body": base64(bytes)});
        }
        None => {}
    }
    body
}

/// The hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn exports_are_text_when_they_can_be() {
        let event = |export| Event {
            kind: WebhookEvent::Saved,
            document: "d".into(),
            connection: None,
            code: None,
            export: Some(export),
        };
        let text = body(
            "p",
            "r-1",
            &event(Export::Consumer {
                content_type: Some("application/json".into()),
                body: b"{\"v\":1}".to_vec(),
            }),
            5,
        );
        assert_eq!(text["export"]["encoding"], "utf-8");
        assert_eq!(text["export"]["body"], "{\"v\":1}");
        assert_eq!(
            (text["event"].as_str(), text["time_ms"].as_u64()),
            (Some("saved"), Some(5))
        );
        let raw = body("p", "r-2", &event(Export::Snapshot(vec![0xff, 0])), 5);
        assert_eq!(raw["export"]["body"], "/wA=");
        assert_eq!(raw["export"]["source"], "snapshot");
    }

    #[test]
    fn emitting_counts_what_the_queue_did() {
        let config: Config = toml::from_str(
            "[plugin.p.webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\nmax_pending = 2\nevents = [\"opened\", \"saved\"]",
        )
        .unwrap();
        // Built without its thread: nothing is delivered, so the queue only fills.
        let hook = config.webhook_for("p").unwrap().unwrap();
        let queue = Arc::new(Queue::new("p", "r", hook, &Metrics::new()));
        let hooks = Webhooks {
            queues: HashMap::from([("p".to_owned(), queue.clone())]),
            next_id: AtomicU64::new(1),
        };
        let opened = |doc: &str| Event {
            kind: WebhookEvent::Opened,
            document: doc.into(),
            connection: None,
            code: None,
            export: None,
        };
        let saved = |doc: &str| Event {
            kind: WebhookEvent::Saved,
            export: Some(Export::Snapshot(vec![1; 1000])),
            ..opened(doc)
        };
        hooks.emit("p", opened("a"));
        hooks.emit("p", saved("a"));
        hooks.emit("p", saved("a"));
        hooks.emit("p", opened("b"));
        hooks.emit(
            "p",
            Event {
                kind: WebhookEvent::Closed,
                ..opened("ignored")
            },
        );
        let counts = &queue.counts;
        assert_eq!(
            (
                counts.queued.get(),
                counts.replaced.get(),
                counts.dropped.get()
            ),
            (4, 1, 1)
        );
        assert_eq!(queue.pending().len(), 2);
        assert_eq!(
            counts.queued_bytes.get(),
            (saved("a").queued_bytes() + opened("b").queued_bytes()) as i64
        );
        let next = queue.pending().next_delivery().unwrap();
        assert_eq!(next.event.document, "a");
        assert!(queue.finish(next.id));
        assert_eq!(counts.queued_bytes.get(), opened("b").queued_bytes() as i64);
        assert!(hooks.wants("p", WebhookEvent::Opened) && !hooks.wants("p", WebhookEvent::Closed));
    }
}
