//! `[plugin.NAME.webhook]`: where the host tells the application's backend what happened
//! to the plugin's documents (opened, saved, closed, a client connected or left).

use serde::Deserialize;

use crate::config::access::expand_env;
use crate::config::{Config, ConfigError};

/// Something that happened to a document, as a webhook reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    /// The document was saved (its checkpoint, or before it left memory); the event
    /// carries the consumer's export of it.
    Saved,
    /// The document came into memory on this host.
    Opened,
    /// The document left memory on this host.
    Closed,
    /// A WebSocket joined the document.
    Connected,
    /// A WebSocket left the document.
    Disconnected,
}

impl WebhookEvent {
    /// The event's name in the JSON body.
    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::Saved => "saved",
            WebhookEvent::Opened => "opened",
            WebhookEvent::Closed => "closed",
            WebhookEvent::Connected => "connected",
            WebhookEvent::Disconnected => "disconnected",
        }
    }
}

/// Shortest webhook secret accepted.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

/// One plugin's `[plugin.NAME.webhook]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// Which events are sent; all of them by default.
    #[serde(default = "every_event")]
    pub events: Vec<WebhookEvent>,
    /// The key of the `X-Wasmroom-Signature` HMAC (`${VAR}` reads the environment).
    pub secret: String,
    /// Events waiting for the backend at most; beyond, the oldest is dropped (and
    /// counted).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Bytes the waiting events may hold at most (their exports, mostly); beyond, the
    /// oldest are dropped (and counted). An event larger than this alone is dropped.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// How long one POST may take before it counts as failed and is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn every_event() -> Vec<WebhookEvent> {
    vec![
        WebhookEvent::Saved,
        WebhookEvent::Opened,
        WebhookEvent::Closed,
        WebhookEvent::Connected,
        WebhookEvent::Disconnected,
    ]
}

fn default_max_pending() -> usize {
    10_000
}

/// 64 MiB: the newest state of 64 documents of 1 MiB (a queue keeps one `saved` per
/// document), or of thousands of small ones, waits out an outage of the backend, and a
/// dead backend costs no more than one document's default `max_memory_bytes`.
fn default_max_pending_bytes() -> usize {
    64 << 20
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// One plugin's webhook with its secret read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWebhook {
    /// Where events go.
    pub url: String,
    /// The events sent.
    pub events: Vec<WebhookEvent>,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// The queue's bound in events.
    pub max_pending: usize,
    /// The queue's bound in bytes.
    pub max_pending_bytes: usize,
    /// One POST's time limit.
    pub timeout_ms: u64,
}

impl Config {
    /// `plugin`'s webhook with its secret read, or `None` when it has none.
    pub fn webhook_for(&self, plugin: &str) -> Result<Option<ResolvedWebhook>, ConfigError> {
        let Some(hook) = self.plugin.get(plugin).and_then(|p| p.webhook.as_ref()) else {
            return Ok(None);
        };
        let fail = |reason: String| ConfigError::Webhook {
            plugin: plugin.to_owned(),
            reason,
        };
        let url = expand_env(&hook.url, &format!("plugin.{plugin}.webhook.url"))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(fail(format!(
                "url {url:?} must start with http:// or https://"
            )));
        }
        let secret = expand_env(&hook.secret, &format!("plugin.{plugin}.webhook.secret"))?;
        if secret.len() < MIN_WEBHOOK_SECRET_BYTES {
            return Err(fail(format!(
                "the secret must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes"
            )));
        }
        if hook.max_pending == 0 || hook.max_pending_bytes == 0 || hook.timeout_ms == 0 {
            return Err(fail(
                "max_pending, max_pending_bytes and timeout_ms must be above 0".into(),
            ));
        }
        Ok(Some(ResolvedWebhook {
            url,
            events: hook.events.clone(),
            secret: secret.into_bytes(),
            max_pending: hook.max_pending,
            max_pending_bytes: hook.max_pending_bytes,
            timeout_ms: hook.timeout_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_need_a_url_and_a_secret() {
        let ok: Config = toml::from_str(
            "[plugin.doc.webhook]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"0123456789abcdef\"\nevents = [\"saved\"]",
        )
        .unwrap();
        let hook = ok.webhook_for("doc").unwrap().unwrap();
        assert_eq!(hook.events, vec![WebhookEvent::Saved]);
        assert_eq!(
            (hook.max_pending, hook.max_pending_bytes, hook.timeout_ms),
            (10_000, 64 << 20, 5_000)
        );
        assert!(ok.webhook_for("other").unwrap().is_none());
        let ftp: Config = toml::from_str(
            "[plugin.doc.webhook]\nurl = \"ftp://x\"\nsecret = \"0123456789abcdef\"",
        )
        .unwrap();
        assert!(
            ftp.webhook_for("doc")
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
        let short: Config =
            toml::from_str("[plugin.doc.webhook]\nurl = \"http://x\"\nsecret = \"s\"").unwrap();
        assert!(
            short
                .webhook_for("doc")
                .unwrap_err()
                .to_string()
                .contains("16 bytes")
        );
        assert!(
            toml::from_str::<Config>("[plugin.doc.webhook]\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"\nevents = [\"exploded\"]")
                .is_err()
        );
        let no_bytes: Config = toml::from_str(
            "[plugin.doc.webhook]\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"\nmax_pending_bytes = 0",
        )
        .unwrap();
        assert!(
            no_bytes
                .webhook_for("doc")
                .unwrap_err()
                .to_string()
                .contains("max_pending_bytes")
        );
    }
}
