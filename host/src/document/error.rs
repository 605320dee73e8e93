//! Why a document could not be opened or served, and what the client gets for each.

/// Why a document could not be opened or served.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Every slot of the instance pool is in use: raise `limits.max_documents` or add
    /// lanes/machines. Clients get 503.
    #[error("server at capacity: {0}")]
    PoolExhausted(String),
    /// The instance could not be created (other than pool exhaustion). Clients get 500.
    #[error("cannot instantiate the consumer: {0}")]
    Instantiate(String),
    /// The consumer's `open` or `restore` refused the document. Clients get 500.
    #[error("the consumer refused to open the document: {0}")]
    Refused(String),
    /// The consumer trapped; the document is gone. Clients get 500 (HTTP) or 1011.
    #[error("the consumer crashed: {0}")]
    Crashed(String),
    /// The document's saved state cannot be read (corrupt file, incompatible format, I/O
    /// error). It refuses to open rather than start empty over the old data; the message
    /// names the file. WebSocket clients get close 1011, HTTP clients 500.
    #[error("the saved state of this document cannot be read: {0}")]
    Storage(String),
    /// The document trapped repeatedly and refuses connections for a while. WebSocket
    /// clients get close 1013, HTTP clients 503; retry after the given time.
    #[error("document is crash-looping; retry in {}s", .0.as_secs().max(1))]
    CrashLoop(std::time::Duration),
    /// The client's address opened too many documents lately: HTTP 429; retry after the
    /// given time.
    #[error("too many new documents from this address; retry in {}s", .0.as_secs().max(1))]
    OpenRateLimited(std::time::Duration),
    /// The document moved to another host (or this host's lease lapsed): reconnect, and
    /// the load balancer sends you to its new host. HTTP clients get 503.
    #[error("the document moved to another host; retry")]
    Moved,
    /// The shared store cannot be reached, or this host's lease in it lapsed: it serves
    /// no document until the store answers again. Clients get 503.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Another live host holds the document and did not hand it back in time: 503.
    #[error("the document is held by host {0}, which did not let it go in time; retry")]
    HeldElsewhere(String),
    /// The document was saved by a newer plugin version than this host runs: 503.
    #[error("{0}")]
    NewerVersion(String),
    /// The document crashed and its last save is still being written; it reopens once
    /// the write lands (the lane waits for that before it answers).
    #[error("the document is being saved after a crash; retry")]
    Settling,
}
