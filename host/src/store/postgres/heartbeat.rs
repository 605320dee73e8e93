//! The heartbeat: one statement per host every third of the lease TTL. While it
//! succeeds the lease clock moves on; when it has not for too long the clock runs out
//! on its own (self-fencing, see [`LeaseClock`](crate::store::lease::LeaseClock)), the
//! rest of the process is told, and once the store answers again this host registers
//! anew and resumes.

use std::sync::Arc;
use std::time::Instant;

use crate::store::StoreEvent;
use crate::store::postgres::Inner;

/// Beats until the store's thread stops.
pub(super) async fn run(inner: Arc<Inner>) {
    let period = inner.clock.ttl() / 3;
    let mut lapsed = false;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let holder = inner.clock.holder();
        // The time is taken before anything else: a heartbeat accepted after a pause
        // (SIGSTOP, a stalled machine) renews the lease only from before the pause, and a
        // lease that ran out during the pause is never renewed: other hosts may have taken
        // its documents, so this host registers anew instead.
        let sent = Instant::now();
        if !lapsed && inner.clock.valid_at(sent) {
            match inner.heartbeat(holder).await {
                Ok(true) => inner.clock.renewed(sent),
                // The registration is gone (another host removed it as long dead): this
                // host's leases are void.
                Ok(false) => inner.clock.lapse(),
                Err(e) => tracing::warn!("heartbeat failed: {e}"),
            }
        }
        if !lapsed && !inner.clock.valid_now() {
            lapsed = true;
            inner.metrics.lease_valid(false);
            tracing::error!(
                "no heartbeat accepted within the lease TTL ({:?}): serving nothing until the store answers again",
                inner.clock.ttl()
            );
            let _ = inner.events.send(StoreEvent::Lapsed);
        }
        if lapsed {
            match inner.reregister(holder).await {
                Ok(()) => {
                    lapsed = false;
                    inner.metrics.lease_valid(true);
                    tracing::info!(
                        holder = inner.clock.holder(),
                        "the store answers again: registered anew, serving"
                    );
                    let _ = inner.events.send(StoreEvent::Resumed);
                }
                Err(e) => tracing::debug!("store still unreachable: {e}"),
            }
        }
    }
}
