//! Handing a document back to another host that asks for it (it received a connection
//! for the document, usually because nginx routes the document to it again): save it
//! until the saved state is the last one, stop serving it in the same step, close its
//! sockets with 1012 (clients reconnect and reach the asker), then let its lease go.
//! The lease is released only once nothing here can change the document any more, so
//! the two hosts never both accept messages for it.

use std::rc::Rc;
use std::time::Duration;

use crate::document::DocumentKey;
use crate::lane::Lane;
use crate::lane::housekeeping::{Saved, save};

/// Saves taken at most while the document keeps changing under them.
const ATTEMPTS: usize = 5;

/// Answers another host's request for `key`.
pub async fn hand_back(lane: Rc<Lane>, key: DocumentKey) {
    let storage = lane.services.storage.clone();
    let Some(doc) = lane.live(&key) else {
        if !lane.is_opening(&key) {
            // Not in memory here, but maybe still held in the store (a release that
            // failed, a crash): let it go.
            let _ = storage.release_unheld(&key.0, &key.1).await;
        }
        return;
    };
    if doc.borrow().is_retired() || doc.borrow().is_crashed() {
        return; // on its way out; its lease is released there
    }
    for _ in 0..ATTEMPTS {
        while doc.borrow().persistence.saving {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match save(&lane, &key, &doc).await {
            Saved::Failed(e) => {
                tracing::warn!(lane = lane.index, plugin = %key.0, doc = %key.1, "not handed back: its last state cannot be saved ({e})");
                return;
            }
            Saved::Fenced => return,
            Saved::Clean | Saved::Skipped => {}
        }
        // No await between this check and the retirement: nothing can change it after.
        if !doc.borrow().is_dirty() {
            let lease = doc.borrow().persistence.lease;
            doc.borrow_mut()
                .retire(1012, "document moved to another host");
            lane.forget(&key, &doc);
            tracing::info!(lane = lane.index, plugin = %key.0, doc = %key.1, "handed back to the host that asked for it");
            if let Err(e) = storage.release(&key.0, &key.1, lease).await {
                tracing::warn!(plugin = %key.0, doc = %key.1, "cannot release the lease: {e}");
            }
            return;
        }
    }
    tracing::warn!(lane = lane.index, plugin = %key.0, doc = %key.1, "not handed back: it keeps changing");
}
