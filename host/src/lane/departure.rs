//! How a connection leaves its lane: it ends (the consumer hears `on-disconnect`, the
//! metrics and webhooks count it), or, for a session whose document is leaving the host
//! (a hand-back, a shutdown), it travels with the document's snapshot and is parked
//! again on the lane that opens the document next, where its client resumes it
//! (docs/sessions.md, [`crate::document::carried_sessions`]).

use std::rc::Rc;
use std::time::Duration;

use crate::config::WebhookEvent;
use crate::document::carried_sessions::Carried;
use crate::document::outbox::Outbox;
use crate::document::{DocumentCell, DocumentKey};
use crate::guest::clock::unix_ms;
use crate::lane::Lane;
use crate::lane::sessions;

/// Connection `id`'s socket is gone for good (and its session's grace, if it had one),
/// with close code `code`.
pub fn over(lane: &Lane, doc: &DocumentCell, id: u64, outbox: &Outbox, code: u16) {
    let travels = {
        let d = doc.borrow();
        d.is_leaving() && !d.is_retired() && outbox.is_session() && outbox.closed_by_leaving()
    };
    if travels {
        // Not this host's connection any more, but not over for the consumer either.
        lane.metrics.websockets.dec();
        lane.metrics.closed(code);
        doc.borrow_mut().carry(id);
        return;
    }
    ended(lane, doc, id, outbox, code);
}

/// Connection `id` is over: the consumer hears it left with `code`.
fn ended(lane: &Lane, doc: &DocumentCell, id: u64, outbox: &Outbox, code: u16) {
    outbox.finish();
    lane.metrics.websockets.dec();
    lane.metrics.closed(code);
    doc.borrow_mut().disconnect(id, code);
    let (plugin, document) = {
        let doc = doc.borrow();
        (doc.plugin().name.clone(), doc.id().to_owned())
    };
    let batch = doc.borrow().last_batch();
    lane.webhook_after(
        batch,
        &plugin,
        WebhookEvent::Disconnected,
        &document,
        Some(id),
        Some(code),
    );
}

/// Parks the sessions document `key` carried from its last host, each for what is left
/// of its grace there: a resume takes it over; without one it ends with 1006.
pub fn park_carried(lane: &Rc<Lane>, key: &DocumentKey, doc: &DocumentCell, carried: Vec<Carried>) {
    let grace = lane.services.config.session_grace();
    let cap = lane.services.config.limits.max_connections_per_lane;
    for c in carried {
        // A move's grace runs from the move; a crash's from the reopen.
        let away = c.parked_at_ms.map_or(0, |at| unix_ms().saturating_sub(at));
        let left = grace.saturating_sub(Duration::from_millis(away));
        tracing::debug!(lane = lane.index, plugin = %key.0, doc = %key.1, connection = c.connection, "session carried from the last host, parked for {left:?}");
        lane.metrics.websockets.inc();
        let session = lane.sessions.start_parked(
            c.session.clone(),
            key.clone(),
            doc.clone(),
            c.connection,
            c.outbox.clone(),
        );
        // Counted like the socket it stands for, so a shutdown waits for it.
        let slot = lane.address().try_admit(cap).then(|| lane.track_admitted());
        let (lane, doc, outbox, id) = (lane.clone(), doc.clone(), c.outbox, c.connection);
        let health = lane.services.health.clone();
        crate::lane::task::spawn(&health, "session", async move {
            let end = |code| over(&lane, &doc, id, &outbox, code);
            sessions::wait_parked(&lane.sessions, left, session, slot, end).await;
        });
    }
}
