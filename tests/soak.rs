//! The soak: normal clients beside every hostile pattern of `tests/bounds.rs` and the
//! hostile consumers of `tests/plugins/probe`, for minutes, while the server's resident
//! memory, open files and disk use are sampled every 10 s. It fails when one of them
//! keeps growing past what the limits allow.
//!
//! Not part of `cargo xtask test` (it runs for minutes): `cargo xtask soak --minutes N`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The configuration: tight limits, so the bounds are reached within seconds.
const CONFIG: &str = "\
idle_grace_secs = 2
http_idle_grace_ms = 500
checkpoint_secs = 1
[limits]
max_queued_bytes = 1048576
max_queued_frames = 4096
message_timeout_ms = 2000
handshake_timeout_ms = 2000
max_incoming_bytes_per_lane = 8388608
open_rate_per_address = 200
open_burst_per_address = 400
# Every client of the soak, normal or hostile, comes from 127.0.0.1.
max_connections_per_address = 100000
crash_loop_traps = 3
crash_loop_window_secs = 10
crash_backoff_secs = 2
max_memory_bytes = 16777216
# The normal clients' chat journals every input: checkpoints must keep the journal small.
[plugin.chat]
durability = \"journal\"
";

/// How much the server may grow after the warm-up: the per-lane budgets and queues
/// the hostile clients fill are reached in the warm-up; later growth is a leak.
const GROWTH_AFTER_WARMUP: u64 = 64 << 20;
/// Open files beyond the connections the soak itself holds (listeners, logs, the
/// plugin watcher, the engine's files).
const FD_SLACK: usize = 256;
/// The soak's documents that change hold a few KiB each on disk.
const MAX_DISK: u64 = 16 << 20;
/// Journal segments are sealed at this size in the soak (64 MiB in production).
const SEGMENT_BYTES: u64 = 1 << 20;
/// The journal per lane: its active segment, and the sealed ones whose entries wait for
/// their documents' next checkpoint (every second here) before they are trimmed. It
/// grows past this only if checkpoints stop letting the journal go.
const MAX_JOURNAL_PER_LANE: u64 = 4 * SEGMENT_BYTES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for minutes: cargo xtask soak --minutes N"]
async fn soak() -> anyhow::Result<()> {
    let minutes: f64 = std::env::var("WASMROOM_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1.0);
    let run_for = Duration::from_secs_f64(minutes * 60.0);
    let warmup = (run_for / 5).min(Duration::from_secs(120));
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(config.path(), CONFIG)?;
    let config_arg = config.path().to_str().expect("temp paths are UTF-8");
    let segment_bytes = SEGMENT_BYTES.to_string();
    let server = Arc::new(Server::start_with_env(
        &["relay", "chat", "probe"],
        2,
        &["--config", config_arg],
        &[("WASMROOM_TEST_JOURNAL_SEGMENT_BYTES", &segment_bytes)],
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for lane in 0..2 {
        workers.push(tokio::spawn(normal_chat(
            server.clone(),
            lane,
            stop.clone(),
            delivered.clone(),
        )));
    }
    for hostile in [
        empty_frame_flood as Hostile,
        body_less_heads,
        read_only_gets,
        fragment_stallers,
        partial_messages,
        hostile_consumers,
        reconnect_churn,
    ] {
        let attack = looped(server.clone(), stop.clone(), hostile);
        workers.push(tokio::spawn(async move {
            attack.await;
            anyhow::Ok(())
        }));
    }

    let started = Instant::now();
    let mut warm_rss = None;
    let mut worst = 0u64;
    let mut worst_journal = 0u64;
    let mut failure = None;
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = server.rss_bytes()?;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))?.count();
        let journal = disk_use(&server.data.path().join("journal"));
        let disk = disk_use(server.data.path()) - journal;
        worst_journal = worst_journal.max(journal);
        eprintln!(
            "soak {:>5.0}s  rss {:>6} KiB  open files {:>5}  disk {:>6} KiB  journal {:>6} KiB  delivered {}",
            started.elapsed().as_secs_f64(),
            rss >> 10,
            fds,
            disk >> 10,
            journal >> 10,
            delivered.load(Ordering::Relaxed)
        );
        if started.elapsed() >= warmup {
            let base = *warm_rss.get_or_insert(rss);
            worst = worst.max(rss);
            if rss > base + GROWTH_AFTER_WARMUP {
                failure = Some(format!(
                    "resident memory grew from {base} to {rss} bytes after the warm-up"
                ));
            }
        }
        // The soak holds a few hundred sockets at a time; the server about as many.
        if fds > 1_000 + FD_SLACK {
            failure = Some(format!("{fds} open files"));
        }
        if disk > MAX_DISK {
            failure = Some(format!("{disk} bytes on disk"));
        }
        if journal > 2 * MAX_JOURNAL_PER_LANE {
            failure = Some(format!("{journal} bytes of journal"));
        }
        if failure.is_some() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(PATIENCE, w).await;
    }
    if let Some(why) = failure {
        anyhow::bail!("soak failed: {why}");
    }
    anyhow::ensure!(
        delivered.load(Ordering::Relaxed) > 0,
        "normal clients got nothing through"
    );
    eprintln!(
        "soak passed: {minutes} min, resident memory at most {} KiB after the warm-up, journal at most {} KiB",
        worst >> 10,
        worst_journal >> 10
    );
    Ok(())
}

type Hostile = fn(Arc<Server>) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>>;

/// Runs `attack` again and again until `stop`; its errors (refusals, resets) are what
/// the attack provokes, not failures of the soak.
async fn looped(server: Arc<Server>, stop: Arc<AtomicBool>, attack: Hostile) {
    while !stop.load(Ordering::Relaxed) {
        let _ = attack(server.clone()).await;
    }
}

/// Three chat clients per document, ten documents per lane, each sending a line every
/// 100 ms and counting what the others deliver.
async fn normal_chat(
    server: Arc<Server>,
    lane: usize,
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for d in 0..10 {
        for c in 0..3 {
            let ws = server
                .connect(lane, &format!("/ws/chat/normal-{lane}-{d}?name=c{c}"))
                .await?;
            clients.push(ws);
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        round += 1;
        for ws in clients.iter_mut() {
            ws.send(Message::text(format!("line {round}"))).await?;
        }
        for ws in clients.iter_mut() {
            while let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_millis(1), ws.next()).await
            {
                if matches!(msg, Message::Text(_)) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}

fn empty_frame_flood(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let _sleeper = raw_upgrade(server.addr(0), "/ws/relay/flood").await?;
        let mut sender = raw_upgrade(server.addr(0), "/ws/relay/flood").await?;
        let batch: Vec<u8> = (0..10_000)
            .flat_map(|_| client_frame(true, 1, b""))
            .collect();
        for _ in 0..20 {
            sender.write_all(&batch).await?;
        }
        Ok(())
    })
}

fn body_less_heads(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let mut held = Vec::new();
        for i in 0..200 {
            let mut s = TcpStream::connect(server.addr(i % 2)).await?;
            let head = format!(
                "POST /docs/relay/body-{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await?;
            held.push(s);
        }
        // Held past the handshake timeout: the server drops them.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    })
}

fn read_only_gets(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        for i in 0..100 {
            let n: u64 = rand_like(i);
            let _ = http(
                server.addr(i % 2),
                "GET",
                &format!("/docs/chat/read-{n}"),
                b"",
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    })
}

fn fragment_stallers(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let mut held = Vec::new();
        for i in 0..20 {
            let mut s = raw_upgrade(server.addr(i % 2), &format!("/ws/relay/stall-{i}")).await?;
            s.write_all(&client_frame(false, 1, b"never finished"))
                .await?;
            held.push(s);
        }
        for _ in 0..30 {
            for s in held.iter_mut() {
                let _ = s.write_all(&client_frame(true, 9, b"")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
}

fn partial_messages(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let part = vec![b'a'; 900 * 1024];
        let mut held = Vec::new();
        for i in 0..12 {
            let mut s = raw_upgrade(server.addr(i % 2), "/ws/relay/partial").await?;
            let _ = s.write_all(&client_frame(false, 2, &part)).await;
            held.push(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    })
}

fn hostile_consumers(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        for (i, command) in ["spin", "grow", "panic", "hoard 8", "timers"]
            .iter()
            .enumerate()
        {
            let doc = format!("/ws/probe/hostile-{i}");
            if let Ok(mut ws) = server.connect(i % 2, &doc).await {
                let _ = ws.send(Message::text(*command)).await;
                let _ = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
            }
        }
        Ok(())
    })
}

fn reconnect_churn(
    server: Arc<Server>,
) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        for i in 0..50 {
            let doc = format!("/ws/relay/churn-{}", i % 10);
            let ws = server.connect(i % 2, &doc).await?;
            drop(ws);
        }
        Ok(())
    })
}

/// A spread of numbers without a random-number dependency.
fn rand_like(i: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % 1_000_000
}

fn disk_use(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                // The compiled plugins are a cache, not documents.
                if !path.ends_with(".compiled") {
                    dirs.push(path);
                }
            } else if let Ok(meta) = entry.metadata() {
                total += meta.len();
            }
        }
    }
    total
}
