//! A lane's event loop: accept connections, take commands from the rest of the process
//! (hand-overs, migrations, admin requests), stop on shutdown.

use std::rc::Rc;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::lane::{ConnectionGuard, Handover, Lane, LaneCommand, Services};
use crate::metrics::Rejection;

/// Runs a lane on the current thread until `shutdown` turns true; then saves every
/// changed document, closes every connection with 1012 (service restart: clients should
/// reconnect) and waits for the clients to acknowledge, all bounded by the shutdown
/// timeout.
pub async fn run(
    index: usize,
    listener: std::net::TcpListener,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
    mut commands: mpsc::UnboundedReceiver<LaneCommand>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    tracing::info!("lane {index} listening on {addr}");
    let lane = Rc::new(Lane::new(index, services));
    let health = lane.services.health.clone();
    crate::lane::task::spawn(&health, "flusher", crate::lane::flusher::run(lane.clone()));
    if let Some(sink) = lane.services.journal.clone() {
        crate::lane::task::spawn(
            &health,
            "journal",
            crate::lane::journal::run(lane.clone(), sink),
        );
        crate::lane::task::spawn(
            &health,
            "recovery",
            crate::lane::recovery::reopen_recovered(lane.clone()),
        );
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some((stream, guard)) = admit(&lane, stream) {
                        let _ = stream.set_nodelay(true);
                        let serve = crate::lane::connection::serve(lane.clone(), stream, peer, guard);
                        crate::lane::task::spawn(&health, "connection", serve);
                    }
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(lane = index, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(command) = commands.recv() => match command {
                LaneCommand::Migrate(plugin) => {
                    let migrate = crate::lane::migrate::migrate_all(lane.clone(), plugin);
                    crate::lane::task::spawn(&health, "migration", migrate);
                }
                LaneCommand::Adopt(handover) => adopt(&lane, handover),
                LaneCommand::Admin(request, reply) => crate::lane::admin::answer(&lane, request, reply),
                LaneCommand::Release(key, epoch) => {
                    let hand_back = crate::lane::handback::hand_back(lane.clone(), key, epoch);
                    crate::lane::task::spawn(&health, "hand-back", hand_back);
                }
                LaneCommand::Fence => lane.retire_all("lapsed"),
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    crate::lane::shutdown::stop(&lane, commands).await;
    Ok(())
}

/// Takes over a connection another lane accepted for a document this lane owns (the
/// sending lane already counted it in this lane's connection cap).
fn adopt(lane: &Rc<Lane>, handover: Handover) {
    let Handover { stream, peer, head } = handover;
    let guard = lane.track_admitted();
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(lane = lane.index, %peer, "cannot take over a handed-over connection: {e}");
            return;
        }
    };
    lane.metrics.adopted.inc();
    let serve = crate::lane::connection::serve_adopted(lane.clone(), stream, peer, head, guard);
    crate::lane::task::spawn(&lane.services.health, "connection", serve);
}

/// Counts a new connection in, or answers 503 when the lane is at its connection limit
/// (the client should retry later) and returns `None`.
fn admit(
    lane: &Rc<Lane>,
    stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, ConnectionGuard)> {
    match lane.admit() {
        Some(guard) => Some((stream, guard)),
        None => {
            lane.metrics.rejected(Rejection::Capacity);
            let refuse = crate::lane::connection::refuse(
                stream,
                503,
                "lane at capacity: too many connections",
            );
            crate::lane::task::spawn(&lane.services.health, "refusal", refuse);
            None
        }
    }
}
