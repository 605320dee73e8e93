//! The labels of the metrics, and how raw values (close codes, trap errors, refusal
//! reasons) map onto them. Every label has a bounded set of values, so no client or
//! consumer can create series at will.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LaneLabels {
    pub(super) lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) lane: String,
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabels {
    pub(super) lane: String,
    pub(super) code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PluginLabels {
    pub(super) plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabels {
    pub(super) plugin: String,
    pub(super) version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub(super) lane: String,
    pub(super) plugin: String,
    pub(super) export: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TrapLabels {
    pub(super) plugin: String,
    pub(super) kind: &'static str,
}

pub(crate) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub(super) fn call_histogram() -> Histogram {
    // 10 µs .. 1 s: a relay call takes microseconds, the default deadline is 100 ms.
    Histogram::new([
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

pub(super) fn save_histogram() -> Histogram {
    Histogram::new([
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ])
}

/// Why a request was refused before it reached a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed or oversized request head, bad document id.
    BadRequest,
    /// No such route.
    NotFound,
    /// No such plugin.
    UnknownPlugin,
    /// The plugin failed to load.
    PluginFailed,
    /// A `/ws/` request without a valid upgrade.
    NotUpgrade,
    /// The consumer's `on-connect` said no.
    Consumer,
    /// Lane or document at its connection limit.
    Capacity,
    /// The instance pool is full.
    PoolExhausted,
    /// The document is in crash-loop back-off.
    CrashLoop,
    /// The document's saved state cannot be read.
    Storage,
    /// The consumer failed while opening or connecting.
    Error,
    /// The server is shutting down.
    ShuttingDown,
    /// Another lane owns the document (`--misrouted reject`).
    Misrouted,
    /// The client's address opened too many documents lately (429).
    OpenRate,
    /// The lane's budget for bytes still arriving is spent (503).
    Busy,
    /// The shared store is unreachable or this host's lease lapsed (503).
    StoreUnavailable,
    /// Another host holds the document and did not hand it back in time (503).
    Handoff,
    /// The document was saved by a newer plugin version than this host runs (503).
    NewerVersion,
    /// The document moved to another host (503).
    Moved,
    /// A browser page from an origin the plugin does not allow (403).
    Origin,
    /// The client's address holds `max_connections_per_address` WebSockets (429).
    AddressConnections,
    /// No access token, or one that did not verify (401).
    Token,
}

/// Why a message a client sent was read but not applied to its document. Never counted
/// as received: these are the messages a client may have to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unapplied {
    /// The connection was closing for its own reasons: the consumer closed it, it read
    /// too slowly, or it broke a limit.
    Closing,
    /// The document had left this host (handed back, its lease lost) or crashed.
    Moved,
    /// The server was stopping and had saved the document's last state.
    Shutdown,
}

impl Unapplied {
    pub(super) fn label(self) -> &'static str {
        match self {
            Unapplied::Closing => "closing",
            Unapplied::Moved => "moved",
            Unapplied::Shutdown => "shutdown",
        }
    }
}

/// The limit a connection broke by sending too fast (closed with 1008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// `max_messages_per_sec`.
    Messages,
    /// `max_bytes_per_sec`.
    Bytes,
}

impl RateLimit {
    pub(super) fn label(self) -> &'static str {
        match self {
            RateLimit::Messages => "messages",
            RateLimit::Bytes => "bytes",
        }
    }
}

impl Rejection {
    pub(super) fn label(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::NotFound => "not_found",
            Rejection::UnknownPlugin => "unknown_plugin",
            Rejection::PluginFailed => "plugin_failed",
            Rejection::NotUpgrade => "not_upgrade",
            Rejection::Consumer => "consumer",
            Rejection::Capacity => "capacity",
            Rejection::PoolExhausted => "pool_exhausted",
            Rejection::CrashLoop => "crash_loop",
            Rejection::Storage => "storage",
            Rejection::Error => "error",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::Misrouted => "misrouted",
            Rejection::OpenRate => "open_rate",
            Rejection::Busy => "busy",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::Handoff => "handoff",
            Rejection::NewerVersion => "newer_version",
            Rejection::Moved => "moved",
            Rejection::Origin => "origin",
            Rejection::AddressConnections => "address_connections",
            Rejection::Token => "token",
        }
    }
}

/// The label of a close code: the codes of RFC 6455 by number, application codes by
/// class (a consumer could otherwise create thousands of series).
pub(super) fn code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

/// What kind of failure ended a document, from a guest call's error.
pub fn trap_kind(error: &wasmtime::Error) -> &'static str {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => "deadline",
            wasmtime::Trap::UnreachableCodeReached => "panic",
            wasmtime::Trap::StackOverflow => "stack_overflow",
            wasmtime::Trap::MemoryOutOfBounds | wasmtime::Trap::TableOutOfBounds => "out_of_bounds",
            _ => "other",
        };
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory") {
        "memory"
    } else if text.contains("host panicked") {
        "host"
    } else {
        "other"
    }
}
