//! Journal mode: inputs nobody can be refused, a timer firing and a connection leaving,
//! whose call traps (ARCHITECTURE.md, "Recovery, reopening, traps").
//!
//! A message, a connection or a request that traps is refused to whoever sent it, and the
//! document rebuilt without it ([`crate::document::rebuild`]): it is simply not in the
//! journal. A timer or a departure has no sender, and leaving it out of the journal would
//! not leave it out of the document: rebuilt, the timer would still be pending and fire,
//! and trap, again (at every reopen too), and the departed connection would still be one
//! the consumer sees. So it is journaled as what happened instead, an input of its own
//! (`TimerDropped`: the timer is over; `Detach`: the connection is gone), before the
//! rebuild, whose replay, like every later one, applies it without calling the consumer.
//! Every socket stays; nobody is told of a dropped timer (it is counted and logged), and
//! a departed connection was leaving anyway. In checkpoint mode, or past the rebuilds
//! allowed, the document crashes as before.

use std::time::Instant;

use wasmroom_wire::journal::Record;

use crate::document::error::DocumentError;
use crate::document::live::Document;
use crate::guest::{CallStart, GuestState, Room};
use crate::metrics::Dropped;
use wasmtime::Store;

impl Document {
    /// Runs an input nobody can be refused (`on-timer`, `on-disconnect`): `record` is
    /// journaled if it returns, `dropped` if it traps and the document is rebuilt without
    /// it ([`Self::call`] otherwise).
    pub(super) fn call_droppable<R>(
        &mut self,
        what: &'static str,
        record: impl FnOnce(&R) -> Record,
        dropped: Record,
        f: impl FnOnce(&Room, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, DocumentError> {
        let started = Instant::now();
        let start = self.next_input(started);
        self.run(what, started, start, Some(record), Some(dropped), f)
    }

    /// Journals `dropped` as the input that started at `start` (it took that input's
    /// number), counts and logs it; returns what the rebuild goes without, for the log.
    pub(super) fn drop_input(&mut self, start: CallStart, dropped: Record) -> String {
        let (input, without) = match &dropped {
            Record::TimerDropped { id } => (
                Dropped::Timer,
                format!("timer {id}, which is dropped (journaled: it never fires again)"),
            ),
            Record::Detach { connection, code } => (
                Dropped::Departure,
                format!(
                    "the departure of connection {connection} (code {code}), which is \
                     dropped (journaled: the connection is gone without its on-disconnect)"
                ),
            ),
            other => unreachable!("only a timer or a departure is dropped, not {other:?}"),
        };
        self.journal(start, || dropped);
        // The state changed (a timer less, a connection less): the next checkpoint
        // covers the record, so that the journal lets it go.
        self.changes += 1;
        self.metrics.dropped(input);
        without
    }
}
