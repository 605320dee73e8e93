//! This host's own view of its leases in a shared store: until when it may serve the
//! documents it holds, measured on its monotonic clock from the last heartbeat the store
//! accepted, with a margin, so that it stops before any other host can see its lease as
//! expired (which the store decides on its own clock, from the same heartbeat).
//!
//! Lanes ask [`LeaseClock::holds`] before every message, timer and request they apply
//! to a document: a host that was frozen (SIGSTOP, a long pause) and wakes up past its
//! lease applies nothing more, whatever order its threads resume in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::Lease;

/// Until when this host may serve its documents.
#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    /// Milliseconds after `base` until which the lease holds; 0: it does not.
    valid_until_ms: AtomicU64,
    /// This host's current registration in the store; documents opened under an earlier
    /// one are no longer its own.
    holder: AtomicU64,
    ttl: Duration,
    margin: Duration,
}

impl LeaseClock {
    /// A clock for leases of `ttl`, not holding anything yet. The margin covers clock
    /// drift between hosts and the time a message takes to apply: a fifth of the TTL,
    /// at least 200 ms.
    pub fn new(ttl: Duration) -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            valid_until_ms: AtomicU64::new(0),
            holder: AtomicU64::new(0),
            ttl,
            margin: (ttl / 5).max(Duration::from_millis(200)),
        }
    }

    /// The lease's time to live, as the other hosts count it.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store accepted a heartbeat sent at `sent_at`: the lease holds until `sent_at
    /// + ttl - margin` (the store stamped it no earlier than it was sent).
    pub fn renewed(&self, sent_at: Instant) {
        let until = (sent_at + self.ttl)
            .saturating_duration_since(self.base)
            .saturating_sub(self.margin);
        self.valid_until_ms
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// Stops serving at once (the heartbeat found this host's registration gone).
    pub fn lapse(&self) {
        self.valid_until_ms.store(0, Ordering::Release);
    }

    /// Starts a new registration `holder` (after a lapse, or at start).
    pub fn set_holder(&self, holder: u64) {
        self.valid_until_ms.store(0, Ordering::Release);
        self.holder.store(holder, Ordering::Release);
    }

    /// This host's current registration.
    pub fn holder(&self) -> u64 {
        self.holder.load(Ordering::Acquire)
    }

    /// Whether the lease holds now.
    pub fn valid_now(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// Whether the lease holds at `at`.
    pub fn valid_at(&self, at: Instant) -> bool {
        let at = at.saturating_duration_since(self.base).as_millis() as u64;
        at < self.valid_until_ms.load(Ordering::Acquire)
    }

    /// When the lease stops holding, if it holds.
    pub fn valid_until(&self) -> Option<Instant> {
        let ms = self.valid_until_ms.load(Ordering::Acquire);
        (ms > 0).then(|| self.base + Duration::from_millis(ms))
    }

    /// Whether a document opened under `lease` may be served now: the lease holds and
    /// was taken under this host's current registration.
    pub fn holds(&self, lease: Lease) -> bool {
        lease.holder == self.holder() && self.valid_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_until_ttl_minus_margin_after_the_heartbeat_was_sent() {
        let clock = LeaseClock::new(Duration::from_secs(10));
        clock.set_holder(7);
        let lease = Lease {
            epoch: 1,
            holder: 7,
        };
        assert!(!clock.holds(lease), "nothing holds before a heartbeat");
        let sent = Instant::now();
        clock.renewed(sent);
        assert!(clock.holds(lease));
        let until = clock.valid_until().unwrap();
        assert!(until <= sent + Duration::from_secs(8) + Duration::from_millis(1));
        assert!(until >= sent + Duration::from_millis(7_990));
        // An older heartbeat never shortens it.
        clock.renewed(sent - Duration::from_secs(5));
        assert_eq!(clock.valid_until().unwrap(), until);
        // A lease from an earlier registration is not this host's any more.
        assert!(!clock.holds(Lease {
            epoch: 1,
            holder: 6
        }));
        clock.set_holder(8);
        assert!(!clock.holds(lease), "a new registration starts unrenewed");
        clock.renewed(Instant::now());
        clock.lapse();
        assert!(!clock.valid_now());
    }
}
