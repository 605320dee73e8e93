//! Why a document could not be opened or served, and what the client gets for each.
//!
//! The error's own text is for the log: it may hold a wasm backtrace, what the consumer
//! wrote to stderr, the consumer's reason for refusing a document, a file path, another
//! host's name or the store's error. Clients are strangers, so they never see it:
//! [`DocumentError::client_answer`] is the one place that decides what they get, a status
//! and a fixed text.

use std::time::Duration;

/// The reason a document's clients get when its consumer trapped (close 1011, or the
/// body of a 500).
pub const CRASHED: &str = "consumer crashed";

/// The reason a client gets when the consumer trapped on its input in journal mode: the
/// document was rebuilt without it and goes on (close 1011, or the body of a 500).
pub const NOT_APPLIED: &str = "the consumer failed on this input; it was not applied";

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
    /// The consumer's `open` or `restore` refused the document, with its own reason.
    /// Clients get 500 without that reason: it is the consumer's text for its operator
    /// (it may name its internals or the document's content), so it goes to the log.
    #[error("the consumer refused to open the document: {0}")]
    Refused(String),
    /// The consumer trapped; the document is gone. The text is the trap's short summary
    /// (its message and what the guest wrote to stderr during the call; the backtrace
    /// was logged where it trapped). Clients get 500 (HTTP) or 1011, "consumer crashed".
    #[error("the consumer crashed: {0}")]
    Crashed(String),
    /// Journal mode: the consumer trapped on this input (a message, a connection, a
    /// request), and the document was rebuilt from its journal without it: the document
    /// and its other clients go on. The input is refused: a message's sender is closed
    /// with 1011, a connection or a request gets 500, each with [`NOT_APPLIED`]. The
    /// text is the trap's short summary, for the log.
    #[error("the consumer failed on this input, which was not applied: {0}")]
    InputRefused(String),
    /// The document's saved state cannot be read (corrupt file, incompatible format, I/O
    /// error). It refuses to open rather than start empty over the old data; the message
    /// names the file (in the log only). WebSocket clients get close 1011, HTTP clients
    /// 500.
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
    /// Journal mode: the document's snapshot and journal do not rebuild it (a gap, a
    /// replayed input that trapped or decided otherwise than when it was made, damage).
    /// It refuses to open rather than serve a state its clients never saw; the message
    /// says what failed (in the log only). WebSocket clients get close 1011, HTTP 500.
    #[error("the document's journal cannot be replayed: {0}")]
    Unreplayable(String),
}

/// What a client is told about a [`DocumentError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    /// The HTTP status (a refused WebSocket handshake gets it too).
    pub status: u16,
    /// For a WebSocket handshake: complete the upgrade, then close with this code (the
    /// protocol's way to say "broken", 1011, or "later", 1013).
    pub close_after_upgrade: Option<u16>,
    /// The body, or the close reason: fixed text, never the error's own.
    pub text: String,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl DocumentError {
    /// What the client gets for this error: the only place that decides it.
    pub fn client_answer(&self) -> ClientAnswer {
        let seconds = |d: &Duration| d.as_secs().max(1);
        let (status, close_after_upgrade, text) = match self {
            DocumentError::PoolExhausted(_) => {
                (503, None, "server at capacity; retry later".into())
            }
            DocumentError::Instantiate(_) => (500, None, "cannot start the consumer".into()),
            DocumentError::Refused(_) => (
                500,
                None,
                "the consumer refused to open the document".into(),
            ),
            DocumentError::Crashed(_) => (500, None, CRASHED.into()),
            DocumentError::InputRefused(_) => (500, None, NOT_APPLIED.into()),
            DocumentError::Storage(_) => (
                500,
                Some(1011),
                "saved state unreadable; see the server log".into(),
            ),
            DocumentError::CrashLoop(retry) => (
                503,
                Some(1013),
                format!("document is crash-looping; retry in {}s", seconds(retry)),
            ),
            DocumentError::OpenRateLimited(retry) => (
                429,
                None,
                format!(
                    "too many new documents from this address; retry in {}s",
                    seconds(retry)
                ),
            ),
            DocumentError::Moved => (
                503,
                None,
                "the document moved to another host; retry".into(),
            ),
            DocumentError::StoreUnavailable(_) => {
                (503, None, "store unavailable; retry later".into())
            }
            DocumentError::HeldElsewhere(_) => (
                503,
                None,
                "the document is held by another host; retry".into(),
            ),
            DocumentError::NewerVersion(_) => (
                503,
                None,
                "the document was saved by a newer version of its plugin; retry later".into(),
            ),
            DocumentError::Settling => (
                503,
                None,
                "the document is being saved after a crash; retry".into(),
            ),
            DocumentError::Unreplayable(_) => (
                500,
                Some(1011),
                "the document's journal cannot be replayed; see the server log".into(),
            ),
        };
        let retry_after = match self {
            DocumentError::OpenRateLimited(retry) => Some(seconds(retry)),
            _ => None,
        };
        ClientAnswer {
            status,
            close_after_upgrade,
            text,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, each carrying text a client must not see.
    fn every_error() -> Vec<DocumentError> {
        let secret = || {
            "error while executing at wasm backtrace: <wasm function 517> \
             /srv/data/chat/doc.snap host-7.internal panicked"
                .to_owned()
        };
        vec![
            DocumentError::PoolExhausted(secret()),
            DocumentError::Instantiate(secret()),
            DocumentError::Refused(secret()),
            DocumentError::Crashed(secret()),
            DocumentError::InputRefused(secret()),
            DocumentError::Storage(secret()),
            DocumentError::CrashLoop(Duration::from_secs(30)),
            DocumentError::OpenRateLimited(Duration::from_millis(10)),
            DocumentError::Moved,
            DocumentError::StoreUnavailable(secret()),
            DocumentError::HeldElsewhere(secret()),
            DocumentError::NewerVersion(secret()),
            DocumentError::Settling,
        ]
    }

    #[test]
    fn clients_never_get_the_errors_own_text() {
        for e in every_error() {
            let answer = e.client_answer();
            for secret in ["wasm", "backtrace", "/srv", ".snap", "host-7", "panicked"] {
                assert!(!answer.text.contains(secret), "{e:?}: {answer:?}");
            }
            assert!((400..=599).contains(&answer.status), "{e:?}");
            // A close reason must fit a control frame (123 bytes).
            assert!(answer.text.len() <= 123, "{e:?}");
        }
    }

    #[test]
    fn statuses_and_close_codes() {
        let answer = |e: DocumentError| {
            let a = e.client_answer();
            (a.status, a.close_after_upgrade, a.retry_after)
        };
        assert_eq!(
            answer(DocumentError::Crashed(String::new())),
            (500, None, None)
        );
        assert_eq!(
            DocumentError::Crashed(String::new()).client_answer().text,
            CRASHED
        );
        assert_eq!(
            answer(DocumentError::Storage(String::new())),
            (500, Some(1011), None)
        );
        assert_eq!(
            answer(DocumentError::CrashLoop(Duration::from_secs(30))),
            (503, Some(1013), None)
        );
        assert_eq!(
            answer(DocumentError::OpenRateLimited(Duration::from_millis(10))),
            (429, None, Some(1))
        );
        assert_eq!(answer(DocumentError::Moved), (503, None, None));
    }
}
