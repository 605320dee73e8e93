//! The heartbeat: one statement per host every third of the lease TTL, on a connection
//! of its own. While it succeeds the lease clock moves on; when it has not for too long
//! the clock runs out on its own (self-fencing, see
//! [`LeaseClock`](crate::store::lease::LeaseClock)), the rest of the process is told,
//! and once the store answers again this host registers anew and resumes.
//!
//! A lease that ran out never comes back, however late an answer arrives:
//! - the `UPDATE` matches only while the row's last heartbeat is younger than the TTL by
//!   `clock_timestamp()` (the time the statement runs, not `now()`, the time its
//!   transaction started), so a statement that reaches PostgreSQL late renews nothing;
//! - a statement that waited on a row lock was checked before it waited, so the host
//!   also renews only if its own lease still holds when the answer arrives;
//! - the connection is its own (the pool that opens and saves share can keep it waiting
//!   for seconds) and `statement_timeout` ends a statement that waits longer than half
//!   the TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::StoreEvent;
use crate::store::postgres::{Inner, StoreError, error_text};

/// Renews this host's registration `$1` if the store still counts it as alive (its last
/// heartbeat younger than `$2` seconds by the clock at the time the statement runs).
const BEAT: &str = "UPDATE wasmroom.hosts SET heartbeat_at = clock_timestamp()
    WHERE id = $1 AND heartbeat_at > clock_timestamp() - make_interval(secs => $2)";

/// Beats until the store's thread stops.
pub(super) async fn run(inner: Arc<Inner>) {
    let period = inner.clock.ttl() / 3;
    let mut lapsed = false;
    let mut connection: Option<Connection> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let holder = inner.clock.holder();
        // The time is taken before anything else: a heartbeat accepted after a pause
        // (SIGSTOP, a stalled machine) renews the lease only from before the pause.
        let sent = Instant::now();
        if !lapsed && inner.clock.valid_at(sent) {
            match beat(&inner, &mut connection, holder).await {
                // Renewed only if the lease still held when the answer came: otherwise
                // another host may have taken this host's documents meanwhile.
                Ok(true) if inner.clock.valid_now() => inner.clock.renewed(sent),
                Ok(true) => {
                    tracing::warn!(
                        "the heartbeat's answer came after this host's lease ran out ({:?} after it was sent): registering anew",
                        sent.elapsed()
                    );
                    inner.clock.lapse();
                }
                // The registration is gone (another host removed it as long dead) or the
                // store counts it as dead already: this host's leases are void.
                Ok(false) => inner.clock.lapse(),
                Err(e) => {
                    tracing::warn!("heartbeat failed: {e}");
                    // Its state is unknown (a statement may still run): a new one next time.
                    connection = None;
                }
            }
        }
        if !lapsed && !inner.clock.valid_now() {
            lapsed = true;
            inner.metrics.lease_valid(false);
            tracing::error!(
                "no heartbeat accepted within the lease TTL ({:?}): serving nothing until the store answers again",
                inner.clock.ttl()
            );
            let _ = inner.events.send(StoreEvent::Lapsed).await;
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
                    let _ = inner.events.send(StoreEvent::Resumed).await;
                }
                Err(e) => tracing::debug!("store still unreachable: {e}"),
            }
        }
    }
}

/// How long one heartbeat may take, in PostgreSQL (`statement_timeout`, lock waits
/// included) and on this side: half the TTL, well inside the lease (TTL minus a margin
/// of at least a fifth).
fn beat_timeout(ttl: Duration) -> Duration {
    (ttl / 2).max(Duration::from_millis(100))
}

/// The heartbeat's own connection, with its statement prepared.
struct Connection {
    client: tokio_postgres::Client,
    beat: tokio_postgres::Statement,
}

/// One heartbeat on the heartbeat's own connection (opened when missing): whether the
/// store renewed this host's registration.
async fn beat(
    inner: &Inner,
    connection: &mut Option<Connection>,
    holder: u64,
) -> Result<bool, StoreError> {
    let ttl = inner.clock.ttl();
    let timeout = beat_timeout(ttl);
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        if connection.as_ref().is_none_or(|c| c.client.is_closed()) {
            let client = inner.target.connect().await?;
            client
                .batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis()))
                .await
                .map_err(StoreError::query)?;
            let beat = client.prepare(BEAT).await.map_err(StoreError::query)?;
            *connection = Some(Connection { client, beat });
        }
        let Connection { client, beat } = connection.as_ref().expect("connected above");
        client
            .execute(beat, &[&(holder as i64), &ttl.as_secs_f64()])
            .await
            .map_err(|e| StoreError::Query(error_text(&e)))
    })
    .await
    .unwrap_or_else(|_| {
        Err(StoreError::Query(format!(
            "no answer from {} within {timeout:?}",
            inner.target
        )))
    });
    inner
        .metrics
        .round_trip("heartbeat", started.elapsed(), result.is_ok());
    Ok(result? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_gives_up_while_the_lease_still_holds() {
        // Every TTL the configuration allows (500 ms to 10 minutes).
        for ttl_ms in [500, 2_000, 10_000, 600_000] {
            let ttl = Duration::from_millis(ttl_ms);
            let margin = (ttl / 5).max(Duration::from_millis(200));
            assert!(beat_timeout(ttl) < ttl - margin, "TTL {ttl:?}");
        }
    }
}
