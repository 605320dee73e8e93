//! A lane's journal committer (journal mode; see ARCHITECTURE.md, "the input journal"):
//! it seals the lane's open batch of records, hands it to the journal sink, and releases
//! its output once the batch is durable. One commit is in flight at a time: while the
//! sink works, the records of later turns pile into the next batch, so a slow disk makes
//! bigger batches, not more syncs.
//!
//! It runs after the tasks that were ready before it (the lane's runtime runs woken tasks
//! in order), so a batch holds the records of every read of one turn.

use std::rc::Rc;
use std::sync::Arc;

use crate::document::{DocumentCell, journal};
use crate::lane::Lane;
use crate::store::journal::{Batch, JournalSink};

/// What a document dropped because its journal could not be written is closed with:
/// 1012, the client reconnects and finds the document as its journal left it.
const NOT_JOURNALED: (u16, &str) = (
    1012,
    "the document's journal could not be written: reconnect to resume",
);

/// Commits the lane's batches to `sink`, forever (the lane's runtime ends it).
pub async fn run(lane: Rc<Lane>, sink: Arc<dyn JournalSink>) {
    let appended = journal::appended();
    loop {
        if !journal::has_open_records() {
            appended.notified().await;
            // Everything woken in this turn appends first.
            tokio::task::yield_now().await;
        }
        let sealed = journal::seal();
        if sealed.count == 0 {
            journal::release(sealed.number);
            continue;
        }
        let batch = Batch {
            lane: lane.index,
            number: sealed.number,
            records: sealed.records,
            count: sealed.count,
        };
        let started = std::time::Instant::now();
        let committed = sink.commit(batch).await;
        lane.metrics
            .journal
            .commit(committed.is_ok(), started.elapsed(), sealed.count);
        if let Err(e) = committed {
            tracing::error!(
                lane = lane.index,
                batch = sealed.number,
                "journal commit failed: {e}; dropping its documents"
            );
            drop_documents_of(&lane, sealed.number);
        }
        journal::release(sealed.number);
    }
}

/// Waits until what `doc` did so far is durable (at once in checkpoint mode); `false`
/// if the document was dropped meanwhile because its journal could not be written.
pub async fn durable(doc: &DocumentCell) -> bool {
    let batch = doc.borrow().last_batch();
    if batch == 0 {
        return true;
    }
    journal::wait_durable(batch).await;
    !doc.borrow().is_retired()
}

/// Drops every journal-mode document with records in `batch` or later: what they caused
/// since is still gated and must never leave, and their state holds inputs no journal
/// has. Their clients reconnect to the state the journal keeps.
fn drop_documents_of(lane: &Lane, batch: u64) {
    for (key, doc) in lane.live_documents() {
        let hit = {
            let d = doc.borrow();
            d.is_journaled() && d.last_batch() >= batch && !d.is_retired()
        };
        if hit {
            if let Some(tail) = doc.borrow().tail() {
                tail.borrow_mut().forget_from(batch);
            }
            doc.borrow_mut()
                .drop_unjournaled(NOT_JOURNALED.0, NOT_JOURNALED.1);
            lane.forget(&key, &doc);
            lane.release_later(&key, doc.borrow().persistence.lease);
        }
    }
}
