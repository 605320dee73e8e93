//! Webhooks (`[plugin.NAME.webhook]`): what happened to documents, POSTed as JSON to the
//! application's backend with an `X-Wasmroom-Signature: sha256=<HMAC>` header. A lane
//! only appends an event to its plugin's queue (a short lock, never I/O); one thread of
//! its own delivers every queue in order, retrying with back-off while the backend is
//! down or slow. A queue holds at most `max_pending` events: beyond, the oldest is
//! dropped and counted, so a backend that is down costs bounded memory and never slows
//! a document.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::config::{Config, ConfigError, ResolvedWebhook, WebhookEvent};
use crate::metrics::{Metrics, WebhookMetrics};

/// First wait after a failed delivery; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a `saved` event carries: the consumer's own export of the document (its
/// `GET` answer when that is 200), else the snapshot bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// The body of the consumer's `GET` answer, with its content type.
    Consumer {
        /// `content-type` of the answer, if it had one.
        content_type: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// The snapshot's state bytes.
    Snapshot(Vec<u8>),
}

/// One event for the backend.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: WebhookEvent,
    /// The document.
    pub document: String,
    /// The connection (`connected`, `disconnected`).
    pub connection: Option<u64>,
    /// The close code (`disconnected`).
    pub code: Option<u16>,
    /// The export (`saved`).
    pub export: Option<Export>,
}

/// One plugin's queue.
#[derive(Debug)]
struct Queue {
    plugin: String,
    /// This process's start (ms since the epoch, hex): with the sequence number, an
    /// event id no other run of the host repeats.
    run: String,
    hook: ResolvedWebhook,
    pending: Mutex<VecDeque<(u64, Event, u64)>>,
    wake: Notify,
    counts: WebhookMetrics,
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
                    Arc::new(Queue {
                        plugin: plugin.clone(),
                        run: run.clone(),
                        hook,
                        pending: Mutex::new(VecDeque::new()),
                        wake: Notify::new(),
                        counts: metrics.webhook(plugin),
                    }),
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
    /// the backend: a full queue drops its oldest event.
    pub fn emit(&self, plugin: &str, event: Event) {
        let Some(queue) = self.queues.get(plugin) else {
            return;
        };
        if !queue.hook.events.contains(&event.kind) {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= queue.hook.max_pending {
                pending.pop_front();
                queue.counts.dropped.inc();
            }
            pending.push_back((id, event, now_ms()));
        }
        queue.counts.queued.inc();
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

/// Delivers one plugin's events in order, each until the backend accepts it.
async fn deliver(queue: Arc<Queue>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(queue.hook.timeout_ms))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(plugin = %queue.plugin, "webhook disabled: cannot build its client: {e}");
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let waiting = queue.wake.notified();
        let next = queue
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .cloned();
        let Some((id, event, at)) = next else {
            waiting.await;
            continue;
        };
        let body = body(&queue.plugin, &format!("{}-{id}", queue.run), &event, at).to_string();
        let signature = sign(&queue.hook.secret, body.as_bytes());
        let sent = client
            .post(&queue.hook.url)
            .header("content-type", "application/json")
            .header("x-wasmroom-signature", format!("sha256={signature}"))
            .header("x-wasmroom-event", event.kind.name())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => {
                let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
                // The queue may have dropped it meanwhile (full): only pop this one.
                if pending.front().is_some_and(|(front, _, _)| *front == id) {
                    pending.pop_front();
                }
                queue.counts.delivered.inc();
                backoff = FIRST_BACKOFF;
            }
            failed => {
                queue.counts.retried.inc();
                let why = match failed {
                    Ok(answer) => format!("status {}", answer.status()),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(plugin = %queue.plugin, "webhook delivery failed, retrying in {backoff:?}: {why}");
                tokio::time::sleep(backoff).await;
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
    fn a_full_queue_drops_its_oldest_event() {
        let config: Config = toml::from_str(
            "[plugin.p.webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\nmax_pending = 2\nevents = [\"opened\"]",
        )
        .unwrap();
        // Built without its thread: nothing is delivered, so the queue only fills.
        let hook = config.webhook_for("p").unwrap().unwrap();
        let queue = Arc::new(Queue {
            plugin: "p".into(),
            run: "r".into(),
            hook,
            pending: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            counts: Metrics::new().webhook("p"),
        });
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
        for doc in ["a", "b", "c"] {
            hooks.emit("p", opened(doc));
        }
        hooks.emit(
            "p",
            Event {
                kind: WebhookEvent::Closed,
                ..opened("ignored")
            },
        );
        let pending = queue.pending.lock().unwrap();
        let docs: Vec<&str> = pending
            .iter()
            .map(|(_, e, _)| e.document.as_str())
            .collect();
        assert_eq!(docs, ["b", "c"]);
        assert_eq!(queue.counts.dropped.get(), 1);
        assert_eq!(queue.counts.queued.get(), 3);
        assert!(hooks.wants("p", WebhookEvent::Opened) && !hooks.wants("p", WebhookEvent::Closed));
    }
}
