//! Handing a document back to another host that asks for it (it received a connection
//! for the document, usually because nginx routes the document to it again).
//!
//! Nothing a client sent before it learnt of the move is lost: the document's sockets
//! are closed with 1012 (clients reconnect and reach the asker) but what each client
//! sends until its own close frame still applies, since TCP delivers it first; no
//! connection joins meanwhile. Once they are gone (or after [`DRAIN`]), the document is
//! saved until the saved state is the last one, stops serving in the same step, and
//! only then is its lease released, so the two hosts never both accept messages for it.
//! If its last state cannot be saved, it stays here and serves again.
//!
//! A release only frees what it was meant for: the lease of the epoch this host held
//! (or the asker saw, for a document no longer in memory here), while opens of the
//! document on this lane wait, so a client that reconnects meanwhile cannot have its
//! fresh lease freed under it.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::document::{Document, DocumentCell, DocumentKey};
use crate::lane::Lane;
use crate::lane::housekeeping::{Saved, save};

/// Saves taken at most while the document keeps changing under them.
const ATTEMPTS: usize = 5;

/// The longest a leaving document waits for its clients' close frames (a client that
/// does not answer must not hold the asker, whose own wait is `handoff_timeout_ms`).
pub const DRAIN: Duration = Duration::from_secs(1);

/// What a leaving document's sockets are told.
const MOVED: (u16, &str) = (1012, "document moved to another host");

/// Answers another host's request for `key`, which it saw held here under epoch `seen`
/// (unknown from hosts that do not say).
pub async fn hand_back(lane: Rc<Lane>, key: DocumentKey, seen: Option<u64>) {
    // One answer at a time per document: the asker repeats its request while it waits.
    if !lane.handing_back.borrow_mut().insert(key.clone()) {
        return;
    }
    let _answered = Answering {
        lane: lane.clone(),
        key: key.clone(),
    };
    match lane.live(&key) {
        Some(doc) => hand_back_live(&lane, &key, doc).await,
        None => release_unheld(&lane, &key, seen).await,
    }
}

/// A document no longer in memory here, but maybe still held in the store (a release
/// that failed, a crash): let it go, under the epoch the asker saw only.
async fn release_unheld(lane: &Rc<Lane>, key: &DocumentKey, seen: Option<u64>) {
    if lane.is_opening(key) {
        // Being opened here right now: that open decides, and the asker asks again.
        return;
    }
    let Some(epoch) = seen else {
        tracing::debug!(lane = lane.index, plugin = %key.0, doc = %key.1, "asked for a document not in memory, without an epoch: left to its lease");
        return;
    };
    let _held = lane.hold_opens(key);
    if let Err(e) = lane
        .services
        .storage
        .release_unheld(&key.0, &key.1, epoch)
        .await
    {
        tracing::warn!(plugin = %key.0, doc = %key.1, "cannot release the lease: {e}");
    }
}

async fn hand_back_live(lane: &Rc<Lane>, key: &DocumentKey, doc: DocumentCell) {
    {
        let d = doc.borrow();
        if d.is_retired() || d.is_crashed() || d.is_leaving() {
            return; // on its way out already; its lease is released there
        }
    }
    doc.borrow_mut().leave(MOVED.0, MOVED.1);
    if !Document::connections_gone(&doc, Instant::now() + DRAIN).await {
        tracing::debug!(lane = lane.index, plugin = %key.0, doc = %key.1, "handing back with {} connection(s) that did not close within {DRAIN:?}", doc.borrow().connection_count());
    }
    for _ in 0..ATTEMPTS {
        while doc.borrow().persistence.saving {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if doc.borrow().is_retired() {
            return; // the lease was lost meanwhile
        }
        match save(lane, key, &doc).await {
            Saved::Failed(e) => {
                tracing::warn!(lane = lane.index, plugin = %key.0, doc = %key.1, "not handed back: its last state cannot be saved ({e}); serving it again");
                doc.borrow_mut().stay();
                return;
            }
            Saved::Fenced => return,
            Saved::Clean | Saved::Skipped => {}
        }
        // No await between this check and the retirement: nothing can change it after.
        if !doc.borrow().is_dirty() && !doc.borrow().is_retired() {
            let lease = doc.borrow().persistence.lease;
            doc.borrow_mut().retire(MOVED.0, MOVED.1);
            lane.forget(key, &doc);
            tracing::info!(lane = lane.index, plugin = %key.0, doc = %key.1, "handed back to the host that asked for it");
            let _held = lane.hold_opens(key);
            if let Err(e) = lane.services.storage.release(&key.0, &key.1, lease).await {
                tracing::warn!(plugin = %key.0, doc = %key.1, "cannot release the lease: {e}");
            }
            return;
        }
    }
    tracing::warn!(lane = lane.index, plugin = %key.0, doc = %key.1, "not handed back: it keeps changing; serving it again");
    doc.borrow_mut().stay();
}

/// Marks a document's hand-back as answered when it ends, however it ends.
struct Answering {
    lane: Rc<Lane>,
    key: DocumentKey,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.lane.handing_back.borrow_mut().remove(&self.key);
    }
}
