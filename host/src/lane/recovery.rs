//! After a restart, the documents the journal holds inputs of are opened by the lane
//! that owns them, without waiting for a client: each is replayed, saved at its next
//! checkpoint and dropped when idle, so the journal lets their entries go and a
//! document nobody opens again still has its state on disk (for `GET /docs/...` on a
//! stopped server's files, a backup, or a webhook).

use std::rc::Rc;

use crate::guest::registry::Lookup;
use crate::lane::Lane;

/// Opens, one after the other, the recovered documents this lane owns.
pub async fn reopen_recovered(lane: Rc<Lane>) {
    let mine: Vec<_> = lane
        .services
        .recovered_documents()
        .into_iter()
        .filter(|(plugin, document)| lane.services.lanes.owner(plugin, document) == lane.index)
        .collect();
    for (plugin, document) in mine {
        let Lookup::Ready(version) = lane.services.registry.get(&plugin) else {
            tracing::warn!(lane = lane.index, plugin = %plugin, doc = %document, "the journal holds inputs of a plugin that is not loaded: they wait until it is");
            continue;
        };
        match lane.document_unlimited(&version, &document).await {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(lane = lane.index, plugin = %plugin, doc = %document, "cannot reopen from the journal: {e}");
            }
        }
    }
}
