//! The crash-loop guard: a document whose consumer traps again and again is refused
//! for a while (1013 / 503 with the time to wait) instead of being reopened at once,
//! so a poisoned state or a bad client cannot keep a lane busy re-instantiating it.
//!
//! Each lane keeps its own guard (a document lives on one lane), touched only from the
//! lane's thread.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::document::DocumentKey;

/// Recent traps of the documents of one lane.
#[derive(Debug)]
pub struct CrashLoopGuard {
    traps: usize,
    window: Duration,
    backoff: Duration,
    documents: RefCell<HashMap<DocumentKey, History>>,
}

/// Recent traps of one document.
#[derive(Debug, Default)]
struct History {
    recent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl CrashLoopGuard {
    /// A guard with the `crash_loop_*` and `crash_backoff_secs` limits.
    pub fn new(limits: &Limits) -> CrashLoopGuard {
        CrashLoopGuard {
            traps: limits.crash_loop_traps as usize,
            window: Duration::from_secs(limits.crash_loop_window_secs),
            backoff: Duration::from_secs(limits.crash_backoff_secs),
            documents: RefCell::new(HashMap::new()),
        }
    }

    /// Records a trap of `key` at `now`. Returns the back-off when this trap completes
    /// a loop (the document is then refused until the back-off has passed).
    pub fn record(&self, key: &DocumentKey, now: Instant) -> Option<Duration> {
        let mut documents = self.documents.borrow_mut();
        // Keep the map small: forget documents that are neither blocked nor recently failed.
        documents.retain(|_, h| {
            h.blocked_until.is_some_and(|t| t > now)
                || h.recent.back().is_some_and(|&t| t + self.window > now)
        });
        let history = documents.entry(key.clone()).or_default();
        history.recent.push_back(now);
        while history
            .recent
            .front()
            .is_some_and(|&t| t + self.window <= now)
        {
            history.recent.pop_front();
        }
        if history.recent.len() < self.traps {
            return None;
        }
        history.blocked_until = Some(now + self.backoff);
        history.recent.clear();
        Some(self.backoff)
    }

    /// How long `key` is still refused at `now`, if it is.
    pub fn backoff(&self, key: &DocumentKey, now: Instant) -> Option<Duration> {
        let until = self.documents.borrow().get(key)?.blocked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// The traps the guard needs within the window to start a back-off.
    pub fn traps(&self) -> usize {
        self.traps
    }

    /// The window the traps must fall in.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> CrashLoopGuard {
        CrashLoopGuard::new(&Limits {
            crash_loop_traps: 3,
            crash_loop_window_secs: 60,
            crash_backoff_secs: 30,
            ..Limits::default()
        })
    }

    fn key(doc: &str) -> DocumentKey {
        ("chat".to_owned(), doc.to_owned())
    }

    #[test]
    fn the_third_trap_within_the_window_starts_a_backoff() {
        let g = guard();
        let t0 = Instant::now();
        assert_eq!(g.record(&key("a"), t0), None);
        assert_eq!(g.record(&key("a"), t0 + Duration::from_secs(1)), None);
        assert_eq!(g.backoff(&key("a"), t0), None);
        let third = t0 + Duration::from_secs(2);
        assert_eq!(g.record(&key("a"), third), Some(Duration::from_secs(30)));
        assert_eq!(
            g.backoff(&key("a"), third + Duration::from_secs(10)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(g.backoff(&key("a"), third + Duration::from_secs(30)), None);
        // Other documents are not affected.
        assert_eq!(g.backoff(&key("b"), third), None);
    }

    #[test]
    fn traps_spread_wider_than_the_window_never_start_one() {
        let g = guard();
        let t0 = Instant::now();
        for i in 0..10 {
            let at = t0 + Duration::from_secs(31 * i);
            assert_eq!(g.record(&key("a"), at), None, "trap {i}");
        }
    }

    #[test]
    fn after_a_backoff_the_count_starts_over() {
        let g = guard();
        let t0 = Instant::now();
        for i in 0..3 {
            g.record(&key("a"), t0 + Duration::from_millis(i));
        }
        let later = t0 + Duration::from_secs(31);
        assert_eq!(g.record(&key("a"), later), None);
        assert_eq!(g.backoff(&key("a"), later), None);
    }

    #[test]
    fn forgotten_documents_do_not_pile_up() {
        let g = guard();
        let t0 = Instant::now();
        for i in 0..100 {
            g.record(&key(&format!("d{i}")), t0);
        }
        g.record(&key("last"), t0 + Duration::from_secs(61));
        assert_eq!(g.documents.borrow().len(), 1);
    }
}
