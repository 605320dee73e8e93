//! Time as a consumer sees it: the document's clock `D`, frozen for the whole of each
//! guest call.
//!
//! `now-ms` and both WASI clocks (wall and monotonic) read [`CallClock`], which the host
//! sets right before each call to the document's clock for that call
//! ([`DocumentClock`]): every read within a call gives the same value, so what a call
//! does depends on its input and `D`, not on how fast it ran (a replay can then redo it
//! exactly). `D` follows the wall clock but never goes backwards for a document, also
//! across restarts and hosts (it starts at least at the clock its snapshot was taken
//! at). Both clocks tick in whole milliseconds and say so (`resolution`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The clocks' resolution: `D` is whole milliseconds.
pub const RESOLUTION: Duration = Duration::from_millis(1);

/// How often a document's clock reads the wall clock again; in between it advances by
/// the `Instant` each call already has, so a call costs no extra clock reading.
const REBASE: Duration = Duration::from_secs(1);

/// The current call's `D`, in Unix milliseconds, shared by the host functions and the
/// WASI clocks of one document's store.
#[derive(Debug, Clone, Default)]
pub struct CallClock(Arc<AtomicU64>);

impl CallClock {
    /// The call about to run sees `ms`.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::Relaxed);
    }

    /// `D`, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `D`, in nanoseconds (the monotonic clock's unit; its epoch is the Unix epoch).
    pub fn now_ns(&self) -> u64 {
        self.now_ms().saturating_mul(1_000_000)
    }
}

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        RESOLUTION
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms())
    }
}

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        self.now_ns()
    }
}

/// A store whose guest reads the call's clock: its [`CallClock`] beside its resource
/// table (WASI's `subscribe-*` pollables live in the table and read the clock).
pub trait FrozenTime: Send {
    /// The call's clock and the resource table.
    fn frozen_time(&mut self) -> (&CallClock, &mut ResourceTable);
}

/// A document's clock: `D` for each of its calls.
#[derive(Debug)]
pub struct DocumentClock {
    /// When the wall clock was last read, and what it said (Unix milliseconds).
    base: Instant,
    base_ms: u64,
    /// The last `D` given.
    last_ms: u64,
}

impl DocumentClock {
    /// A clock that never gives less than `floor_ms` (the clock of the snapshot a
    /// document opens from).
    pub fn starting_at(floor_ms: u64) -> DocumentClock {
        DocumentClock {
            base: Instant::now(),
            base_ms: unix_ms(),
            last_ms: floor_ms,
        }
    }

    /// `D` for a call starting at `now` (the caller's reading of the clock).
    pub fn at(&mut self, now: Instant) -> u64 {
        self.at_with(now, unix_ms)
    }

    fn at_with(&mut self, now: Instant, wall_ms: impl FnOnce() -> u64) -> u64 {
        let since = now.saturating_duration_since(self.base);
        let ms = if since >= REBASE {
            // The wall clock may have been stepped; re-read it now and then.
            self.base = now;
            self.base_ms = wall_ms();
            self.base_ms
        } else {
            self.base_ms.saturating_add(since.as_millis() as u64)
        };
        self.last_ms = self.last_ms.max(ms);
        self.last_ms
    }

    /// `D` of a call replayed from the journal: what the call had, recorded, which the
    /// clock never goes below afterwards.
    pub fn replayed(&mut self, ms: u64) -> u64 {
        self.last_ms = self.last_ms.max(ms);
        ms
    }

    /// The last `D` given (the floor of the next).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }
}

/// The wall clock, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reader_sees_the_value_of_the_call() {
        let clock = CallClock::default();
        let wasi = clock.clone();
        clock.set(1_700_000_000_123);
        assert_eq!(
            HostWallClock::now(&wasi),
            Duration::from_millis(1_700_000_000_123)
        );
        assert_eq!(HostMonotonicClock::now(&wasi), 1_700_000_000_123_000_000);
        assert_eq!(HostWallClock::resolution(&wasi), RESOLUTION);
        assert_eq!(HostMonotonicClock::resolution(&wasi), 1_000_000);
    }

    #[test]
    fn a_document_clock_never_goes_backwards() {
        let start = Instant::now();
        let mut clock = DocumentClock {
            base: start,
            base_ms: 10_000,
            last_ms: 0,
        };
        assert_eq!(clock.at_with(start, || unreachable!()), 10_000);
        let d = clock.at_with(start + Duration::from_millis(250), || unreachable!());
        assert_eq!(d, 10_250, "advances with the call's Instant");
        // The wall clock was stepped back by a minute: D stays where it was.
        let d = clock.at_with(start + Duration::from_secs(2), || 5_000);
        assert_eq!(d, 10_250);
        let d = clock.at_with(start + Duration::from_millis(2500), || unreachable!());
        assert_eq!(d, 10_250);
        // An Instant from before the base (a reader's older reading) gives no less.
        assert_eq!(clock.at_with(start, || unreachable!()), 10_250);
        // A snapshot's clock is a floor.
        let mut reopened = DocumentClock::starting_at(u64::MAX - 1);
        assert_eq!(reopened.at(Instant::now()), u64::MAX - 1);
    }
}
