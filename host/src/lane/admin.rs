//! The lane's side of the admin API: answering [`AdminRequest`]s between two events of
//! the lane (list the live documents, save one now, evict one). The HTTP side is
//! `crate::ops::admin`; the two meet only on the lane's command channel.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::document::DocumentKey;
use crate::document::outbox::CLOSE_TIMEOUT;
use crate::lane::commands::{AdminReply, AdminRequest, LaneInfo};
use crate::lane::housekeeping::{Saved, save};
use crate::lane::state::Lane;

/// Runs on lane `lane`: lists at once, acts on a task of its own.
pub fn answer(lane: &Rc<Lane>, request: AdminRequest, reply: oneshot::Sender<AdminReply>) {
    match request {
        AdminRequest::List => {
            let m = &lane.metrics;
            let info = LaneInfo {
                lane: lane.index,
                port: lane.services.lanes.get(lane.index).addr.port(),
                websockets: m.websockets.get(),
                messages_in: m.messages_in.get(),
                messages_out: m.messages_out.get(),
                documents: lane
                    .live_documents()
                    .iter()
                    .filter_map(|(_, d)| d.try_borrow().ok().map(|d| d.info()))
                    .collect(),
                lease: lane
                    .services
                    .storage
                    .leases()
                    .map(|clock| if clock.valid_now() { "held" } else { "lapsed" }.to_owned()),
            };
            let _ = reply.send(AdminReply::Lane(info));
        }
        AdminRequest::Snapshot(key) | AdminRequest::Evict(key) if lane.live(&key).is_none() => {
            let _ = reply.send(AdminReply::Done(Err(format!(
                "{}/{} is not live",
                key.0, key.1
            ))));
        }
        AdminRequest::Snapshot(key) => {
            let lane = lane.clone();
            let health = lane.services.health.clone();
            crate::lane::task::spawn(&health, "admin", async move {
                let _ = reply.send(AdminReply::Done(save_now(&lane, &key).await));
            });
        }
        AdminRequest::Evict(key) => {
            let lane = lane.clone();
            let health = lane.services.health.clone();
            crate::lane::task::spawn(&health, "admin", async move {
                let _ = reply.send(AdminReply::Done(evict(&lane, &key).await));
            });
        }
    }
}

async fn save_now(lane: &Lane, key: &DocumentKey) -> Result<String, String> {
    let Some(doc) = lane.live(key) else {
        return Err(format!("{}/{} is not live", key.0, key.1));
    };
    // A checkpoint in flight: let it land, then save what changed since.
    while doc.borrow().persistence.saving {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match save(lane, key, &doc).await {
        Saved::Clean => Ok(format!("{}/{} saved", key.0, key.1)),
        Saved::Failed(e) => Err(format!("save failed: {e}")),
        Saved::Skipped => Err("the document crashed".to_owned()),
        Saved::Fenced => Err("another host took the document".to_owned()),
    }
}

/// Closes the document's connections, saves it and drops it. A document that cannot be
/// saved stays (dropping it would lose its state).
async fn evict(lane: &Lane, key: &DocumentKey) -> Result<String, String> {
    let Some(doc) = lane.live(key) else {
        return Err(format!("{}/{} is not live", key.0, key.1));
    };
    doc.borrow_mut().close_all(1001, "document evicted");
    // The clients answer the close (or their writers give up after the close timeout);
    // their `on-disconnect` then runs before the save.
    let deadline = Instant::now() + CLOSE_TIMEOUT + Duration::from_secs(1);
    while doc.borrow().connection_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A change may land while a write is in flight (a timer, a `/docs` request, a late
    // `on-disconnect`): save until the saved state is the last one.
    let mut saved = save_now(lane, key).await?;
    for _ in 0..3 {
        if !doc.borrow().is_dirty() {
            break;
        }
        saved = save_now(lane, key).await?;
    }
    if doc.borrow().connection_count() > 0 {
        return Err(format!(
            "{saved}, but it has connections again; not evicted"
        ));
    }
    if doc.borrow().is_dirty() {
        return Err(format!("{saved}, but it keeps changing; not evicted"));
    }
    lane.forget(key, &doc);
    lane.release_later(key, doc.borrow().persistence.lease);
    tracing::info!(lane = lane.index, plugin = %key.0, doc = %key.1, "evicted by the admin API");
    Ok(format!("{}/{} saved and evicted", key.0, key.1))
}
