//! Configuration: embedded defaults, an optional TOML file, then command-line overrides.
//!
//! Every field has a default that is safe for a single machine, so `wasmroom serve` works
//! with no file at all. A config file uses the same names as the fields below:
//!
//! ```toml
//! bind = "127.0.0.1"
//! ports = "8000-8003"
//! plugins = "plugins"
//! data = "data"
//! idle_grace_secs = 30
//! checkpoint_secs = 5
//! misrouted = "hand-over"   # or "reject" (421)
//! proxy_headers = false     # true behind nginx: client address from X-Real-IP
//! upstream_host = "10.0.0.5"  # this host's name in nginx's upstream
//! admin_port = 9000          # metrics, documents, actions; 127.0.0.1 unless admin_bind
//!
//! [limits]
//! max_message_bytes = 1048576
//! guest_deadline_ms = 100
//! max_memory_bytes = 67108864
//! max_timers = 1000
//! max_documents = 10000
//!
//! # Several hosts: documents in a shared PostgreSQL (default: files under `data`).
//! [store]
//! url = "postgres://wasmroom@db.internal:5432/wasmroom"
//! lease_ttl_ms = 10000
//!
//! # Per plugin: bigger guests (a language runtime) need more memory.
//! [plugin.yjs]
//! max_memory_bytes = 134217728
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::routing::{Misrouted, server_name};

mod access;
mod limits;
mod plugin;
mod store;
mod validate;
mod webhook;

pub use access::{AuthConfig, MIN_SECRET_BYTES, ResolvedAuth, TokenAlgorithm, expand_env};
pub use limits::{FRAME_OVERHEAD, Limits, MAX_GUEST_DEADLINE_MS};
pub use plugin::{Durability, PluginConfig, SendRate};
pub use store::StoreConfig;
pub use webhook::{MIN_WEBHOOK_SECRET_BYTES, ResolvedWebhook, WebhookConfig, WebhookEvent};

/// Why a configuration is unusable. The message names the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read: check the path and its permissions.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A port list such as `8000-8003` or `8000,8002` is malformed.
    #[error(
        "invalid port list {0:?}: use a port, a range like 8000-8003, or a comma-separated list"
    )]
    Ports(String),
    /// An `allowed_origins` entry is not an origin: fix the entry the message names.
    #[error("invalid plugin.{plugin}.allowed_origins: {source}")]
    Origin {
        /// The plugin (`*` for the top-level list).
        plugin: String,
        /// Why.
        source: wasmroom_wire::origin::OriginError,
    },
    /// `[plugin.NAME.auth]` cannot be used: the message says what to set.
    #[error("invalid plugin.{plugin}.auth: {reason}")]
    Auth {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// `[plugin.NAME.webhook]` cannot be used: the message says what to set.
    #[error("invalid plugin.{plugin}.webhook: {reason}")]
    Webhook {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// A `${NAME}` in a value names no environment variable: set it or fix the value.
    #[error("invalid {setting}: {reason}")]
    Env {
        /// The setting that holds the `${NAME}`.
        setting: String,
        /// Why.
        reason: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address every lane listens on.
    pub bind: IpAddr,
    /// One lane per port. Port 0 picks a free port (used by tests).
    #[serde(deserialize_with = "de_ports")]
    pub ports: Vec<u16>,
    /// The directory of `{plugin}.wasm` files.
    pub plugins: PathBuf,
    /// How long a document without connections stays in memory.
    pub idle_grace_secs: u64,
    /// How long a document that only HTTP requests opened (no WebSocket ever joined it)
    /// stays in memory after its last request.
    pub http_idle_grace_ms: u64,
    /// How long a session whose socket broke waits for its client to resume it
    /// (docs/sessions.md); 0: it ends at once.
    pub session_grace_ms: u64,
    /// How long shutdown may take: saving every live document, then waiting for clients
    /// to acknowledge their close frames.
    pub shutdown_timeout_secs: u64,
    /// Where document snapshots are kept.
    pub data: PathBuf,
    /// How often a document that changed is saved.
    pub checkpoint_secs: u64,
    /// Limits that protect the lanes from guests and clients.
    pub limits: Limits,
    /// Per-plugin overrides, by plugin name.
    pub plugin: BTreeMap<String, PluginConfig>,
    /// Web pages that may open documents besides the server's own host (every plugin
    /// without its own `allowed_origins`): exact origins, `https://*.domain` patterns,
    /// or `"*"`. Clients that send no `Origin` (not browsers) are not affected.
    pub allowed_origins: Option<Vec<String>>,
    /// What a lane does with a connection for a document another lane owns.
    pub misrouted: Misrouted,
    /// Take the client's address from `X-Real-IP` / `X-Forwarded-For` (only behind a
    /// proxy that sets them: a client can send them too).
    pub proxy_headers: bool,
    /// The host part of this process's lanes in nginx's upstream (`server HOST:PORT`);
    /// owner lanes are computed from these names. Default: the bind address, or
    /// `127.0.0.1` when binding every interface.
    pub upstream_host: Option<String>,
    /// A folder served for every `GET` no other route takes (a web app's built files).
    #[serde(rename = "static")]
    pub static_dir: Option<PathBuf>,
    /// The port of the admin API (metrics, documents, actions); none by default.
    pub admin_port: Option<u16>,
    /// The address the admin API listens on.
    pub admin_bind: IpAddr,
    /// The bearer token the admin API requires (also `WASMROOM_ADMIN_TOKEN`). Needed when
    /// `admin_bind` is not a loopback address.
    pub admin_token: Option<String>,
    /// Where documents live: files under `data` (the default), or a PostgreSQL shared
    /// by several hosts.
    pub store: StoreConfig,
    /// The file this config was read from (relative paths in it start at its folder;
    /// a reload reads it again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            ports: vec![8000],
            plugins: PathBuf::from("plugins"),
            idle_grace_secs: 30,
            http_idle_grace_ms: 2_000,
            session_grace_ms: 30_000,
            shutdown_timeout_secs: 10,
            data: PathBuf::from("data"),
            checkpoint_secs: 5,
            limits: Limits::default(),
            plugin: BTreeMap::new(),
            allowed_origins: None,
            misrouted: Misrouted::default(),
            proxy_headers: false,
            upstream_host: None,
            static_dir: None,
            admin_port: None,
            admin_bind: IpAddr::from([127, 0, 0, 1]),
            admin_token: None,
            store: StoreConfig::default(),
            source: None,
        }
    }
}

impl Config {
    /// Reads a TOML config file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.source = Some(path.to_owned());
        config.validate()?;
        Ok(config)
    }

    /// The host part of this process's lanes in nginx's upstream.
    pub fn upstream_host(&self) -> String {
        match &self.upstream_host {
            Some(host) => host.clone(),
            None if self.bind.is_unspecified() => "127.0.0.1".to_owned(),
            None if self.bind.is_ipv6() => format!("[{}]", self.bind),
            None => self.bind.to_string(),
        }
    }

    /// The name nginx's upstream gives the lane on `port` (`HOST:PORT`).
    pub fn lane_name(&self, port: u16) -> String {
        server_name(&self.upstream_host(), port)
    }

    /// How long an idle document stays in memory.
    pub fn idle_grace(&self) -> Duration {
        Duration::from_secs(self.idle_grace_secs)
    }

    /// How long a document only HTTP requests opened stays in memory.
    pub fn http_idle_grace(&self) -> Duration {
        Duration::from_millis(self.http_idle_grace_ms)
    }

    /// How long a parked session waits for its client.
    pub fn session_grace(&self) -> Duration {
        Duration::from_millis(self.session_grace_ms)
    }

    /// How long shutdown may take.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// How often a changed document is saved.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_secs.max(1))
    }
}

/// Parses `8000`, `8000-8003`, or `8000,8002,9000-9001`.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, ConfigError> {
    let bad = || ConfigError::Ports(spec.to_owned());
    let mut ports = Vec::new();
    for part in spec.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a.trim().parse().map_err(|_| bad())?;
                let b: u16 = b.trim().parse().map_err(|_| bad())?;
                if a == 0 || b < a {
                    return Err(bad());
                }
                ports.extend(a..=b);
            }
            None => ports.push(part.parse().map_err(|_| bad())?),
        }
    }
    if ports.is_empty() {
        return Err(bad());
    }
    Ok(ports)
}

fn de_ports<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ports {
        Spec(String),
        One(u16),
        List(Vec<u16>),
    }
    match Ports::deserialize(de)? {
        Ports::Spec(s) => parse_ports(&s).map_err(serde::de::Error::custom),
        Ports::One(p) => Ok(vec![p]),
        Ports::List(l) => Ok(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(parse_ports("8000").unwrap(), vec![8000]);
        assert_eq!(
            parse_ports("8000-8003").unwrap(),
            vec![8000, 8001, 8002, 8003]
        );
        assert_eq!(
            parse_ports("8000, 9000-9001").unwrap(),
            vec![8000, 9000, 9001]
        );
        assert!(parse_ports("8003-8000").is_err());
        assert!(parse_ports("http").is_err());
        assert!(parse_ports("").is_err());
    }

    #[test]
    fn toml_keeps_defaults_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("ports = \"9000-9001\"\n[limits]\nmax_timers = 5").unwrap();
        assert_eq!(c.ports, vec![9000, 9001]);
        assert_eq!(c.limits.max_timers, 5);
        assert_eq!(c.limits.max_message_bytes, 1 << 20);
        assert!(toml::from_str::<Config>("prots = 1").is_err());
    }

    #[test]
    fn plugins_can_have_their_own_limits() {
        let c: Config = toml::from_str(
            "[limits]\nmax_memory_bytes = 1048576\n[plugin.big]\nmax_memory_bytes = 4194304\nguest_deadline_ms = 250",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.max_memory_for("big"), 4 << 20);
        assert_eq!(c.max_memory_for("small"), 1 << 20);
        assert_eq!(c.largest_memory(), 4 << 20);
        assert_eq!(c.guest_deadline_for("big"), Duration::from_millis(250));
        assert_eq!(c.guest_deadline_for("small"), Duration::from_millis(100));
    }

    #[test]
    fn durations_are_bounded_with_clear_errors() {
        let huge = Config {
            checkpoint_secs: u64::MAX,
            ..Config::default()
        };
        let err = huge.validate().unwrap_err().to_string();
        assert!(
            err.contains("checkpoint_secs") && err.contains("a day"),
            "{err}"
        );
        for toml in [
            "idle_grace_secs = 99999999999",
            "[limits]\ncrash_backoff_secs = 18446744073709551615",
            "[limits]\ncrash_loop_window_secs = 0",
            "[limits]\nmessage_timeout_ms = 0",
            "[limits]\nguest_deadline_ms = 600000",
            "[plugin.big]\nguest_deadline_ms = 600000",
        ] {
            let c: Config = toml::from_str(toml).unwrap();
            assert!(c.validate().is_err(), "{toml} passed");
        }
        Config::default().validate().unwrap();
    }

    #[test]
    fn duplicate_ports_are_refused() {
        let c = Config {
            ports: vec![8000, 8000],
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let zeros = Config {
            ports: vec![0, 0],
            ..Config::default()
        };
        assert!(zeros.validate().is_ok());
    }
}
