//! Session clients (`clients/js`) behind a real nginx in front of two hosts on one
//! PostgreSQL: the holder stops (SIGTERM) and comes back (the hand-back), or dies
//! (`kill -9`, journal mode); the sessions follow the document, and nothing is lost or
//! doubled. A binary of its own: a host restarts on its fixed ports, which a test of
//! another binary binding free ports meanwhile could take.

#[path = "sessions/exchange.rs"]
mod exchange;
mod support;

use std::time::Duration;

use anyhow::Context;
use exchange::{Exchange, say_done};
use support::*;

/// Messages each Node client sends the other.
const EXCHANGED: usize = 100;

/// The probe in journal mode.
const JOURNALED: &str = "[plugin.probe]\ndurability = \"journal\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sessions_behind_nginx_survive_a_sigterm_and_the_hand_back() -> anyhow::Result<()> {
    use support::cluster::{Cluster, ONE_AT_A_TIME, connect_retrying};
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(2, &["probe"])?;
    let url = cluster.nginx.url("/ws/probe/behind");
    let mut exchange = Exchange::start(&url, EXCHANGED, 1)?;
    exchange.until("some traffic", |s| s.progress >= 40).await?;
    // The holder stops (SIGTERM): its sessions go on on the other host, through nginx.
    let owner = |cluster: &Cluster| -> anyhow::Result<Option<usize>> {
        let owners = cluster.owners()?;
        let ip = owners.get("behind").and_then(|(ip, _)| ip.clone());
        Ok(ip.and_then(|ip| ip.rsplit('.').next()?.parse::<usize>().ok().map(|n| n - 1)))
    };
    let h = owner(&cluster)?.context("the document has a holder")?;
    let host = cluster.hosts[h].take().context("it runs")?;
    let mut host = tokio::task::spawn_blocking(move || {
        let mut host = host;
        host.terminate().map(|_| host)
    })
    .await??;
    let deadline = std::time::Instant::now() + PATIENCE;
    while owner(&cluster)? != Some(1 - h) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It comes back; a connection nginx sends it asks for the document back, and the
    // sessions follow it there.
    host = host.restart()?;
    cluster.hosts[h] = Some(host);
    let deadline = std::time::Instant::now() + PATIENCE;
    while owner(&cluster)? != Some(h) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "never handed back");
        let _asking = connect_retrying(&url).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say_done(&url).await?;
    exchange.finish(EXCHANGED).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_js_sessions_behind_nginx_survive_kill_9_of_the_holder() -> anyhow::Result<()> {
    use support::cluster::{Cluster, HOST_CONFIG, ONE_AT_A_TIME};
    let _one = ONE_AT_A_TIME.lock().await;
    let config = format!("{HOST_CONFIG}{JOURNALED}");
    let mut cluster = Cluster::start_configured(2, &["probe"], &config)?;
    let url = cluster.nginx.url("/ws/probe/taken");
    let mut exchange = Exchange::start(&url, EXCHANGED, 1)?;
    exchange.until("some traffic", |s| s.progress >= 40).await?;
    // The holder dies: the other host takes the document once its lease expires, replays
    // its journal rows, and the sessions resume there.
    let holder = cluster.owners()?["taken"].0.clone().context("a holder")?;
    let h: usize = holder
        .rsplit('.')
        .next()
        .context("an address")?
        .parse::<usize>()?
        - 1;
    cluster.hosts[h].as_mut().context("it runs")?.kill9()?;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let owner = cluster.owners()?.get("taken").and_then(|(o, _)| o.clone());
        if owner.is_some_and(|o| o != holder) {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say_done(&url).await?;
    exchange.finish(EXCHANGED).await?;
    Ok(())
}
