//! What a document carries through its life beside the consumer's state, so that what
//! its guest observes depends on the document's inputs, not on the host or the moment:
//! its clock `D` (frozen per call, never going backwards), its random seed and which of
//! its inputs a call is (the call's random stream), and the connection ids it gives.
//!
//! The seed, the next connection id and the input count travel with the snapshot
//! ([`Continuity`](crate::store::Continuity)); a document opened from a snapshot goes on
//! from there, also on another host. The input count is the document's journal sequence
//! number: input `n` draws from stream `n`, recorded or replayed alike.

use std::time::Instant;

use crate::document::error::DocumentError;
use crate::guest::CallStart;
use crate::guest::clock::DocumentClock;
use crate::guest::random::{Purpose, Seed, fresh_seed, stream_id};
use crate::store::{Continuity, FIRST_CONNECTION_ID, Snapshot};

/// Where a document restored from a version 1 snapshot (written before documents had
/// their own connection ids) starts numbering: above any id a process-wide counter of an
/// older wasmroom could have given (and the state may name), and still far below 2^53,
/// which JavaScript consumers need.
pub const VERSION_1_FIRST_CONNECTION_ID: u64 = 1 << 32;

/// A document's clock, seed, input count and connection ids.
#[derive(Debug)]
pub struct Lineage {
    clock: DocumentClock,
    seed: Seed,
    /// Inputs so far (guest calls that are inputs of the document; a trapped one too,
    /// until the document reopens from what its journal or snapshot holds).
    inputs: u64,
    next_connection_id: u64,
}

impl Lineage {
    /// The lineage of a document opened from `saved` (its snapshot, if it has one): its
    /// seed, connection ids and inputs go on, its clock starts no earlier than the
    /// snapshot's. A new document (or one saved in version 1) gets a fresh seed from the
    /// OS, unless its journal recorded the one it started with (`recorded`).
    pub fn of(
        saved: Option<&Snapshot>,
        recorded: Option<Continuity>,
    ) -> Result<Lineage, DocumentError> {
        let continuity = match (saved.map(|s| s.continuity), recorded) {
            (Some(Some(continuity)), _) => continuity,
            (None, Some(recorded)) => recorded,
            (old, _) => Continuity {
                seed: fresh_seed().map_err(|e| {
                    DocumentError::Instantiate(format!("no random seed from the OS: {e}"))
                })?,
                next_connection_id: if old.is_some() {
                    VERSION_1_FIRST_CONNECTION_ID
                } else {
                    FIRST_CONNECTION_ID
                },
                inputs: 0,
            },
        };
        Ok(Lineage {
            clock: DocumentClock::starting_at(saved.map_or(0, |s| s.saved_at_ms)),
            seed: continuity.seed,
            inputs: continuity.inputs,
            next_connection_id: continuity.next_connection_id,
        })
    }

    /// Input `seq` again, as the journal recorded it at `clock_ms`: the same clock and
    /// random stream as when it was first made.
    pub fn replayed(&mut self, seq: u64, clock_ms: u64) -> CallStart {
        self.inputs = seq;
        CallStart {
            clock_ms: self.clock.replayed(clock_ms),
            stream: stream_id(seq, Purpose::Input),
        }
    }

    /// The number of the document's last input (its journal sequence number).
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// A replayed connection had id `id`: later ones get higher ids.
    pub fn connection_seen(&mut self, id: u64) {
        self.next_connection_id = self.next_connection_id.max(id + 1);
    }

    /// The next input of the document starts at `now`.
    pub fn input(&mut self, now: Instant) -> CallStart {
        self.inputs += 1;
        CallStart {
            clock_ms: self.clock.at(now),
            stream: stream_id(self.inputs, Purpose::Input),
        }
    }

    /// A call at `now` that is no input (a snapshot, an export, a hot reload's calls):
    /// it draws from a stream of its own after the last input.
    pub fn aside(&mut self, now: Instant, purpose: Purpose) -> CallStart {
        CallStart {
            clock_ms: self.clock.at(now),
            stream: stream_id(self.inputs, purpose),
        }
    }

    /// A call that is no input, made again at the clock `clock_ms` it was first made at
    /// (a journaled hot reload's calls, replayed).
    pub fn aside_replayed(&mut self, clock_ms: u64, purpose: Purpose) -> CallStart {
        CallStart {
            clock_ms: self.clock.replayed(clock_ms),
            stream: stream_id(self.inputs, purpose),
        }
    }

    /// An entry that makes no guest call of its own (a hot reload's move, whose calls
    /// drew from the streams after the last input; a settings change): it takes the
    /// next number, at the clock `clock_ms`.
    pub fn entry(&mut self, clock_ms: u64) -> CallStart {
        self.inputs += 1;
        CallStart {
            clock_ms: self.clock.replayed(clock_ms),
            stream: stream_id(self.inputs, Purpose::Input),
        }
    }

    /// The id of the document's next connection (each id once, in order).
    pub fn next_connection_id(&mut self) -> u64 {
        let id = self.next_connection_id;
        self.next_connection_id += 1;
        id
    }

    /// The document's random seed.
    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The document's clock as of its last call (Unix milliseconds).
    pub fn clock_ms(&self) -> u64 {
        self.clock.last_ms()
    }

    /// What its snapshot carries.
    pub fn continuity(&self) -> Continuity {
        Continuity {
            seed: self.seed,
            next_connection_id: self.next_connection_id,
            inputs: self.inputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(continuity: Option<Continuity>) -> Snapshot {
        Snapshot {
            plugin_version: "v".into(),
            saved_at_ms: u64::MAX / 2,
            timers: Vec::new(),
            state: Vec::new(),
            continuity,
            connections: Vec::new(),
            sessions: Vec::new(),
            settings: None,
        }
    }

    #[test]
    fn a_document_goes_on_from_its_snapshot() {
        let mut fresh = Lineage::of(None, None).unwrap();
        assert_eq!(fresh.next_connection_id(), 1);
        assert_eq!(fresh.next_connection_id(), 2);
        assert_ne!(fresh.seed(), Lineage::of(None, None).unwrap().seed());
        fresh.input(Instant::now());
        let saved = snapshot(Some(fresh.continuity()));
        let mut reopened = Lineage::of(Some(&saved), None).unwrap();
        assert_eq!(reopened.seed(), fresh.seed());
        assert_eq!(reopened.next_connection_id(), 3);
        assert_eq!(reopened.inputs(), 1, "its inputs go on from the snapshot's");
        // Its clock starts at the snapshot's, whatever this host's clock says.
        assert_eq!(reopened.input(Instant::now()).clock_ms, u64::MAX / 2);
        let mut old = Lineage::of(Some(&snapshot(None)), None).unwrap();
        assert_eq!(old.next_connection_id(), VERSION_1_FIRST_CONNECTION_ID);
    }

    #[test]
    fn inputs_and_the_calls_between_them_draw_from_streams_of_their_own() {
        let mut lineage = Lineage::of(None, None).unwrap();
        let now = Instant::now();
        let open = lineage.input(now);
        let snapshot = lineage.aside(now, Purpose::Snapshot);
        let message = lineage.input(now);
        let streams = [open.stream, snapshot.stream, message.stream];
        assert_eq!(streams, [8, 9, 16]);
        assert!(open.clock_ms <= message.clock_ms);
    }

    #[test]
    fn a_replayed_input_starts_as_it_was_recorded() {
        let mut live = Lineage::of(None, None).unwrap();
        let recorded = live.continuity();
        let first = live.input(Instant::now());
        let second = live.input(Instant::now());
        let mut again = Lineage::of(None, Some(recorded)).unwrap();
        assert_eq!(again.seed(), live.seed());
        assert_eq!(again.replayed(1, first.clock_ms).stream, first.stream);
        let replayed = again.replayed(2, second.clock_ms);
        assert_eq!(
            (replayed.clock_ms, replayed.stream),
            (second.clock_ms, second.stream)
        );
        assert_eq!(
            again.input(Instant::now()).stream,
            stream_id(3, Purpose::Input)
        );
        again.connection_seen(7);
        assert_eq!(again.next_connection_id(), 8);
    }
}
