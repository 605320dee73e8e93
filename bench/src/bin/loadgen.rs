//! Load generator for relay-style WebSocket servers.
//!
//! `run`: D documents x C clients; every client sends S-byte text messages at R messages/s
//! (the send time is in the payload); the server relays each message to the document's
//! other clients. Reports deliveries/s, delivered/expected, latency percentiles, connect
//! time, and the generator's own CPU share (if it nears 100 % the generator, not the
//! server, is the limit).
//!
//! `cold`: opens N fresh documents one after another; reports connect -> upgraded times.
//!
//! `hold`: opens D x C idle connections (from several loopback source addresses), prints
//! `READY <open> <failed>` and holds them until stdin closes, so that the server's
//! memory can be measured.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    /// Base URL; `/{document}` is appended (e.g. ws://127.0.0.1:8000/ws/relay).
    #[arg(long)]
    url: String,
    /// Worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Relay throughput and latency at a fixed send rate.
    Run {
        #[arg(long, default_value_t = 100)]
        docs: usize,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Message size in bytes (at least 16).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Messages per second per client.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Cold opens of fresh documents.
    Cold {
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Hold idle connections.
    Hold {
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Source addresses 127.0.0.1 .. 127.0.0.N (each has ~28k ephemeral ports).
        #[arg(long, default_value_t = 1)]
        sources: u8,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: a current-thread runtime, the leanest generator (no work stealing).
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(async {
        match cli.mode {
            Mode::Run {
                docs,
                clients,
                size,
                rate,
                seconds,
            } => {
                run(
                    &cli.url,
                    docs,
                    clients,
                    size,
                    rate,
                    Duration::from_secs_f64(seconds),
                )
                .await
            }
            Mode::Cold { count } => cold(&cli.url, count).await,
            Mode::Hold {
                docs,
                clients,
                sources,
            } => hold(&cli.url, docs, clients, sources).await,
        }
    })?;
    println!("{report}");
    Ok(())
}

fn address(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("ws:// URLs only")?;
    let host = rest.split('/').next().context("no host")?;
    Ok(host.parse()?)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(url: &str, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let addr = address(url)?;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

async fn run(
    base: &str,
    docs: usize,
    clients: usize,
    size: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let size = size.max(16);
    let start = Instant::now();
    let mut connect = Histogram::<u64>::new(3)?;
    let mut sockets = Vec::new();
    for d in 0..docs {
        for _ in 0..clients {
            let t = Instant::now();
            let ws = open(&format!("{base}/bench-{d}"), None).await?;
            connect.record(t.elapsed().as_micros() as u64)?;
            sockets.push(ws);
        }
    }
    let sent = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop_sending = Arc::new(AtomicBool::new(false));
    let (stop_receiving, receiving) = tokio::sync::watch::channel(false);
    let period = Duration::from_secs_f64(1.0 / rate);
    let begin = Instant::now() + Duration::from_millis(200);
    let cpu_before = cpu_seconds();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let total = sockets.len();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let (sent, stop) = (sent.clone(), stop_sending.clone());
        // Spread the clients over one period so that they do not send in lockstep.
        let first = begin + period.mul_f64(i as f64 / total as f64);
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first.into(), period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let padding = "x".repeat(size - 16);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut payload = String::with_capacity(size);
                let _ = write!(payload, "{:016x}", start.elapsed().as_nanos() as u64);
                payload.push_str(&padding);
                if sink.send(Message::text(payload)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        }));
        let (delivered, mut stop) = (delivered.clone(), receiving.clone());
        receivers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            loop {
                let next = tokio::select! {
                    biased;
                    next = stream.next() => next,
                    _ = stop.changed() => break,
                };
                let Some(Ok(Message::Text(text))) = next else {
                    if next.is_none() {
                        break;
                    }
                    continue;
                };
                if let Some(sent_at) = text.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok())
                {
                    let now = start.elapsed().as_nanos() as u64;
                    let _ = hist.record((now.saturating_sub(sent_at) / 1000).max(1));
                }
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            hist
        }));
    }
    tokio::time::sleep_until((begin + duration).into()).await;
    stop_sending.store(true, Ordering::Relaxed);
    let mut sinks = Vec::new();
    for s in senders {
        sinks.push(s.await?);
    }
    let send_wall = begin.elapsed().as_secs_f64();
    let expected = sent.load(Ordering::Relaxed) * (clients as u64 - 1);
    // Drain: wait until everything arrived or nothing more arrives for a second.
    let mut last = delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected
        && quiet_since.elapsed() < Duration::from_secs(1)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let cpu = cpu_seconds() - cpu_before;
    let wall = begin.elapsed().as_secs_f64();
    let _ = stop_receiving.send(true);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for r in receivers {
        latency.add(r.await?)?;
    }
    drop(sinks);
    let delivered = delivered.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "docs": docs, "clients": clients, "size": size, "rate": rate,
        "seconds": duration.as_secs_f64(),
        "sent": sent.load(Ordering::Relaxed),
        "expected": expected,
        "delivered": delivered,
        "ratio": if expected == 0 { 0.0 } else { delivered as f64 / expected as f64 },
        "deliveries_per_sec": delivered as f64 / send_wall,
        "p50_ms": percentile_us(&latency, 0.50) / 1000.0,
        "p99_ms": percentile_us(&latency, 0.99) / 1000.0,
        "max_ms": latency.max() as f64 / 1000.0,
        "connect_p50_ms": percentile_us(&connect, 0.50) / 1000.0,
        "connect_p99_ms": percentile_us(&connect, 0.99) / 1000.0,
        "generator_cpu_share": cpu / wall,
    }))
}

async fn cold(base: &str, count: usize) -> anyhow::Result<serde_json::Value> {
    let mut hist = Histogram::<u64>::new(3)?;
    let tag = std::process::id();
    for i in 0..count {
        let t = Instant::now();
        let mut ws = open(&format!("{base}/cold-{tag}-{i}"), None).await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        let _ = ws.close(None).await;
    }
    Ok(serde_json::json!({
        "count": count,
        "p50_ms": percentile_us(&hist, 0.50) / 1000.0,
        "p99_ms": percentile_us(&hist, 0.99) / 1000.0,
        "max_ms": hist.max() as f64 / 1000.0,
    }))
}

async fn hold(
    base: &str,
    docs: usize,
    clients: usize,
    sources: u8,
) -> anyhow::Result<serde_json::Value> {
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    let mut n = 0usize;
    for d in 0..docs {
        for _ in 0..clients {
            let source = IpAddr::from([127, 0, 0, 1 + (n % sources.max(1) as usize) as u8]);
            n += 1;
            let url = format!("{base}/idle-{d}");
            let limit = limit.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.ok()?;
                open(&url, Some(source)).await.ok()
            }));
        }
    }
    let mut open_sockets = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Some(ws) => open_sockets.push(ws),
            None => failed += 1,
        }
    }
    println!("READY {} {failed}", open_sockets.len());
    // Keep answering pings while holding, until stdin closes.
    let held = open_sockets.len();
    let keep = tokio::spawn(async move {
        let mut all =
            futures_util::stream::select_all(open_sockets.into_iter().map(|ws| ws.split().1));
        while all.next().await.is_some() {}
    });
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            line.clear();
        }
    })
    .await?;
    keep.abort();
    Ok(serde_json::json!({"held": held, "failed": failed}))
}
