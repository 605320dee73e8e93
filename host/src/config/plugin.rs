//! The `[plugin.NAME]` sections: what one plugin may set differently from the defaults,
//! and the per-plugin values the lanes ask for (each falls back to `[limits]` or the
//! top-level setting).

use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmroom_wire::origin::OriginPolicy;

use crate::config::access::AuthConfig;
use crate::config::webhook::WebhookConfig;
use crate::config::{Config, ConfigError};

/// What one plugin may set differently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Linear memory cap of each of this plugin's documents.
    pub max_memory_bytes: Option<usize>,
    /// Deadline of each guest call of this plugin.
    pub guest_deadline_ms: Option<u64>,
    /// Web pages that may open this plugin's documents besides the server's own host:
    /// exact origins, `https://*.domain` patterns, or `"*"` for every page.
    pub allowed_origins: Option<Vec<String>>,
    /// Messages (and pings) one connection may send per second.
    pub max_messages_per_sec: Option<u32>,
    /// Message bytes one connection may send per second.
    pub max_bytes_per_sec: Option<u64>,
    /// Access tokens every WebSocket and `/docs` request must present; none by default.
    pub auth: Option<AuthConfig>,
    /// Strings the consumer reads with `context.setting(name)`; `${VAR}` reads the
    /// environment.
    pub settings: BTreeMap<String, String>,
    /// Where the application's backend hears about the plugin's documents.
    pub webhook: Option<WebhookConfig>,
    /// How much of a document survives a crash (see [`Durability`]).
    pub durability: Durability,
}

/// How much of a document survives a crash of its host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Its last checkpoint (`checkpoint_secs`): what changed since is lost on `kill -9`.
    #[default]
    Checkpoint,
    /// Every input is journaled, and what it causes leaves the host only once its
    /// record is durable (`fdatasync`ed in `{data}/journal/`, or committed to the shared
    /// store's `wasmroom.journal`): see ARCHITECTURE.md, "the input journal".
    Journal,
}

/// How fast one connection may send: tokens per second, and the burst a quiet
/// connection may spend at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendRate {
    /// Messages per second, and the burst.
    pub messages: (f64, f64),
    /// Bytes per second, and the burst.
    pub bytes: (f64, f64),
}

/// Seconds of rate a quiet connection may send at once.
const BURST_SECS: f64 = 2.0;

impl Config {
    /// The memory cap of `plugin`'s documents.
    pub fn max_memory_for(&self, plugin: &str) -> usize {
        self.plugin
            .get(plugin)
            .and_then(|p| p.max_memory_bytes)
            .unwrap_or(self.limits.max_memory_bytes)
    }

    /// How much of `plugin`'s documents survives a crash.
    pub fn durability_for(&self, plugin: &str) -> Durability {
        self.plugin
            .get(plugin)
            .map_or(Durability::Checkpoint, |p| p.durability)
    }

    /// Whether any plugin journals its documents.
    pub fn any_journal(&self) -> bool {
        self.plugin
            .values()
            .any(|p| p.durability == Durability::Journal)
    }

    /// The guest call deadline of `plugin`.
    pub fn guest_deadline_for(&self, plugin: &str) -> Duration {
        Duration::from_millis(
            self.plugin
                .get(plugin)
                .and_then(|p| p.guest_deadline_ms)
                .unwrap_or(self.limits.guest_deadline_ms),
        )
    }

    /// The largest memory cap of any plugin: the size of a slot of the instance pool.
    pub fn largest_memory(&self) -> usize {
        self.plugin
            .values()
            .filter_map(|p| p.max_memory_bytes)
            .chain([self.limits.max_memory_bytes])
            .max()
            .unwrap_or(self.limits.max_memory_bytes)
    }

    /// Which pages may open `plugin`'s documents. Parsed per call (only requests that
    /// carry an `Origin` ask); [`Config::validate`] has checked that every list parses.
    pub fn origin_policy_for(&self, plugin: &str) -> OriginPolicy {
        let list = self
            .plugin
            .get(plugin)
            .and_then(|p| p.allowed_origins.as_deref())
            .or(self.allowed_origins.as_deref());
        OriginPolicy::parse(list).unwrap_or_default()
    }

    /// How fast one connection of `plugin` may send. The byte burst holds at least one
    /// message of the largest size.
    pub fn send_rate_for(&self, plugin: &str) -> SendRate {
        let p = self.plugin.get(plugin);
        let messages = f64::from(
            p.and_then(|p| p.max_messages_per_sec)
                .unwrap_or(self.limits.max_messages_per_sec),
        );
        let bytes = p
            .and_then(|p| p.max_bytes_per_sec)
            .unwrap_or(self.limits.max_bytes_per_sec) as f64;
        SendRate {
            messages: (messages, messages * BURST_SECS),
            bytes: (
                bytes,
                (bytes * BURST_SECS).max(self.limits.max_message_bytes as f64),
            ),
        }
    }

    /// Checks the per-plugin sections and the origin lists.
    pub(super) fn validate_plugins(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason| Err(ConfigError::Invalid { name, reason });
        let origins = |plugin: &str, list: Option<&Vec<String>>| {
            OriginPolicy::parse(list.map(Vec::as_slice)).map_err(|source| ConfigError::Origin {
                plugin: plugin.to_owned(),
                source,
            })
        };
        origins("*", self.allowed_origins.as_ref())?;
        for (name, p) in &self.plugin {
            if p.max_memory_bytes.is_some_and(|m| m < (1 << 16)) {
                return invalid(
                    "plugin.*.max_memory_bytes",
                    "must be at least one page (64 KiB)",
                );
            }
            if p.guest_deadline_ms
                .is_some_and(|ms| ms == 0 || ms > super::MAX_GUEST_DEADLINE_MS)
            {
                return invalid(
                    "plugin.*.guest_deadline_ms",
                    "must be between 1 and 60000 ms",
                );
            }
            if p.max_messages_per_sec == Some(0) || p.max_bytes_per_sec == Some(0) {
                return invalid(
                    "plugin.*.max_messages_per_sec",
                    "message and byte rates must be above 0",
                );
            }
            origins(name, p.allowed_origins.as_ref())?;
            self.settings_for(name)?;
            self.auth_for(name)?;
            self.webhook_for(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(toml).unwrap();
        config.validate().map(|()| config)
    }

    #[test]
    fn plugins_fall_back_to_the_defaults() {
        let c = config(
            "allowed_origins = [\"https://app.example.com\"]\n[limits]\nmax_messages_per_sec = 10\n[plugin.open]\nallowed_origins = [\"*\"]\nmax_bytes_per_sec = 1000",
        )
        .unwrap();
        assert_eq!(c.origin_policy_for("open"), OriginPolicy::Any);
        assert!(
            c.origin_policy_for("other")
                .allows(Some("https://app.example.com"), None)
        );
        assert!(
            !c.origin_policy_for("other")
                .allows(Some("https://evil.net"), None)
        );
        let rate = c.send_rate_for("open");
        assert_eq!(rate.messages, (10.0, 20.0));
        // The byte burst holds one message of the largest size.
        assert_eq!(rate.bytes, (1000.0, (1 << 20) as f64));
    }

    #[test]
    fn bad_origins_name_the_plugin_and_entry() {
        let e = config("[plugin.chat]\nallowed_origins = [\"example.com\"]").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("plugin.chat") && text.contains("example.com"),
            "{text}"
        );
        assert!(config("[plugin.chat]\nmax_messages_per_sec = 0").is_err());
    }
}
