//! What the application's backend answered a webhook POST, and so what becomes of the
//! event: a 2xx delivered it; a 3xx (redirects are not followed: a 302 or 303 would turn
//! the POST into a GET elsewhere) or a 4xx but 408 and 429 refuses it for good, since
//! sending it again would get the same answer; anything else (408, 429, 5xx, no answer)
//! is worth another attempt, after `Retry-After` when a 429 or 503 carries one.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};

/// Longest `Retry-After` honoured (a 429 or 503 may ask for more; the queue is bounded,
/// not the backend's patience).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the backend's answer (or its absence) means for the event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: done.
    Delivered,
    /// Refused for good (sending it again would get the same answer): dropped.
    Rejected(String),
    /// Worth another attempt, after at least `after` when the backend asked for it.
    Retry {
        /// What went wrong, for the log.
        why: String,
        /// The backend's `Retry-After`, if it sent one.
        after: Option<Duration>,
    },
}

/// Judges an answer: 2xx delivered; 3xx (redirects are not followed) and 4xx but 408
/// and 429 rejected; anything else retried, after `Retry-After` on 429 and 503.
pub fn judge(status: StatusCode, headers: &HeaderMap) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    if status.is_redirection() {
        let location = headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("nowhere");
        return Outcome::Rejected(format!(
            "status {status}, a redirect to {location} (not followed: set url to the final address)"
        ));
    }
    let busy = matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
    );
    if status.is_client_error() && !busy {
        return Outcome::Rejected(format!("status {status}"));
    }
    let after = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
    .then(|| retry_after(headers))
    .flatten();
    Outcome::Retry {
        why: format!("status {status}"),
        after,
    }
}

/// `Retry-After` in seconds (an HTTP date is ignored: the back-off applies), at most
/// [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_retried_or_refused_for_good() {
        let none = HeaderMap::new();
        let judged = |code: u16| judge(StatusCode::from_u16(code).unwrap(), &none);
        assert_eq!(judged(200), Outcome::Delivered);
        assert_eq!(judged(204), Outcome::Delivered);
        for permanent in [400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(judged(permanent), Outcome::Rejected(_)),
                "{permanent}"
            );
        }
        for transient in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(judged(transient), Outcome::Retry { after: None, .. }),
                "{transient}"
            );
        }
        let mut moved = HeaderMap::new();
        moved.insert(LOCATION, "https://elsewhere.example/hook".parse().unwrap());
        let Outcome::Rejected(why) = judge(StatusCode::FOUND, &moved) else {
            panic!("a redirect is not followed");
        };
        assert!(why.contains("https://elsewhere.example/hook"), "{why}");
        let after = |code, value: &str| {
            let mut later = HeaderMap::new();
            later.insert(RETRY_AFTER, value.parse().unwrap());
            match judge(StatusCode::from_u16(code).unwrap(), &later) {
                Outcome::Retry { after, .. } => after,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(after(429, "3"), Some(Duration::from_secs(3)));
        assert_eq!(after(503, " 3 "), Some(Duration::from_secs(3)));
        assert_eq!(after(500, "3"), None, "only 429 and 503 say when");
        assert_eq!(after(429, "86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            after(429, "Wed, 21 Oct 2026 07:28:00 GMT"),
            None,
            "a date falls back to the back-off"
        );
    }
}
