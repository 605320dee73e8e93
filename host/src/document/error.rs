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
    /// The document crashed and its last save is still being written; it reopens once
    /// the write lands (the lane waits for that before it answers).
    #[error("the document is being saved after a crash; retry")]
    Settling,
}
