//! The pending timers of one document: the consumer names them, the host orders them.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Pending timers keyed by the consumer's timer id, ordered by deadline.
#[derive(Debug, Default)]
pub struct TimerTable {
    by_id: HashMap<u64, Instant>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl TimerTable {
    /// Sets timer `id` to fire at `at`, replacing an earlier setting of the same id.
    pub fn set(&mut self, id: u64, at: Instant) {
        if let Some(old) = self.by_id.insert(id, at) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((at, id));
    }

    /// Cancels timer `id`; returns whether it was pending.
    pub fn cancel(&mut self, id: u64) -> bool {
        match self.by_id.remove(&id) {
            Some(at) => {
                self.by_deadline.remove(&(at, id));
                true
            }
            None => false,
        }
    }

    /// Whether timer `id` is pending.
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The number of pending timers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every pending timer with its deadline, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Instant)> + '_ {
        self.by_deadline.iter().map(|&(at, id)| (id, at))
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(at, _)| at)
    }

    /// Removes and returns the earliest timer that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let &(at, id) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.pop_first();
        self.by_id.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_reschedules() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(1, t0 + Duration::from_millis(30));
        t.set(2, t0 + Duration::from_millis(10));
        t.set(3, t0 + Duration::from_millis(20));
        t.set(1, t0 + Duration::from_millis(5)); // rescheduled earlier
        assert_eq!(t.len(), 3);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(5)));
        assert!(t.cancel(3));
        assert!(!t.cancel(3));
        let now = t0 + Duration::from_millis(100);
        assert_eq!(t.pop_due(now), Some(1));
        assert_eq!(t.pop_due(now), Some(2));
        assert_eq!(t.pop_due(now), None);
        assert!(t.is_empty());
    }

    #[test]
    fn nothing_is_due_early() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(7, t0 + Duration::from_secs(1));
        assert_eq!(t.pop_due(t0), None);
        assert!(t.contains(7));
    }
}
