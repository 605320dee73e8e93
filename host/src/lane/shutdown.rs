//! A lane's shutdown: close every connection with 1012 (service restart: clients should
//! reconnect) while what each client sent before its own close frame still applies
//! (bounded by [`DRAIN`]), then stop applying anything, save every changed document,
//! wait for the last connections to end and save again (the closes ran
//! `on-disconnect`), all bounded by the shutdown timeout.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::document::Document;
use crate::lane::commands::{AdminReply, SHUTTING_DOWN};
use crate::lane::handback::DRAIN;
use crate::lane::{Lane, LaneCommand};
use crate::metrics::Rejection;

/// Runs once the lane stopped accepting.
pub async fn stop(lane: &Rc<Lane>, mut commands: mpsc::UnboundedReceiver<LaneCommand>) {
    // Lanes that hand a connection over from now on get it back and answer 503 themselves;
    // those already queued are answered here (once closed, `recv` ends after the last).
    commands.close();
    while let Some(command) = commands.recv().await {
        match command {
            LaneCommand::Admin(_, reply) => {
                let _ = reply.send(AdminReply::Done(Err(SHUTTING_DOWN.to_owned())));
            }
            LaneCommand::Adopt(h) => {
                lane.metrics.rejected(Rejection::ShuttingDown);
                // Counted as a connection (the sender counted it in this lane's cap), so
                // the drain below waits for the answer.
                let guard = lane.track_admitted();
                if let Ok(stream) = tokio::net::TcpStream::from_std(h.stream) {
                    crate::lane::task::spawn(&lane.services.health, "refusal", async move {
                        crate::lane::connection::refuse(stream, 503, SHUTTING_DOWN).await;
                        drop(guard);
                    });
                }
            }
            // The store frees everything this host holds once the lanes have stopped.
            LaneCommand::Migrate(_) | LaneCommand::Release(..) | LaneCommand::Fence => {}
        }
    }
    // No connection joins from here on. Every socket is asked to close, and what its
    // client sent before its close frame still applies (TCP delivers it first).
    lane.begin_draining();
    let started = Instant::now();
    let timeout = lane.services.config.shutdown_timeout();
    for (_, doc) in lane.live_documents() {
        let mut doc = doc.borrow_mut();
        if !doc.is_retired() && !doc.is_crashed() {
            doc.leave(1012, "server restarting");
        }
    }
    let drain_until = started + DRAIN.min(timeout / 2);
    let gone = futures_util::future::join_all(
        lane.live_documents()
            .iter()
            .map(|(_, doc)| Document::connections_gone(doc, drain_until)),
    )
    .await;
    let lingering = gone.iter().filter(|gone| !**gone).count();
    if lingering > 0 {
        tracing::debug!(
            lane = lane.index,
            "{lingering} document(s) still had connections after {DRAIN:?}; what they send from now on is not applied"
        );
    }
    // From here on, readers stop handing messages to documents, so the saved state is
    // the last state.
    lane.freeze();
    let docs = lane.live_documents();
    let left = timeout.saturating_sub(started.elapsed());
    let saves = futures_util::future::join_all(docs.iter().map(|(key, doc)| async {
        // A checkpoint may be in flight: let it finish, then save what changed since.
        while doc.borrow().persistence.saving {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        crate::lane::housekeeping::save(lane, key, doc).await
    }));
    if tokio::time::timeout(left, saves).await.is_err() {
        tracing::error!(lane = lane.index, "saving took longer than {timeout:?}");
    }
    let unsaved: Vec<String> = docs
        .iter()
        .filter(|(_, d)| d.borrow().is_dirty())
        .map(|((p, d), _)| format!("{p}/{d}"))
        .collect();
    if unsaved.is_empty() {
        tracing::info!(
            lane = lane.index,
            "shutting down: {} document(s), all saved ({:?}); {} connection(s) still closing",
            docs.len(),
            started.elapsed(),
            lane.connection_count()
        );
    } else {
        tracing::error!(
            lane = lane.index,
            "shutting down with {} unsaved document(s): {}",
            unsaved.len(),
            unsaved.join(", ")
        );
    }
    let timeout = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let drained = lane.drained();
    if tokio::time::timeout(timeout, drained).await.is_err() {
        tracing::warn!(
            lane = lane.index,
            "{} connection(s) still open after {timeout:?}; dropping them",
            lane.connection_count()
        );
    }
    // The closes ran the consumers' `on-disconnect` (presence, say): save that too.
    let left = lane
        .services
        .config
        .shutdown_timeout()
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let again = futures_util::future::join_all(
        docs.iter()
            .map(|(key, doc)| crate::lane::housekeeping::save(lane, key, doc)),
    );
    let _ = tokio::time::timeout(left, again).await;
}
