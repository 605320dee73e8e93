//! Load generator for relay-style WebSocket servers.
//!
//! `run`: D documents x C clients; every client sends S-byte text messages at R messages/s
//! (the send time is in the payload); the server relays each message to the document's
//! other clients. Reports offered and delivered deliveries/s, delivered/expected, latency
//! percentiles, connect time, and the generator's own CPU share over the sending window;
//! above 70 % the point is marked `generator_saturated` (not a valid ceiling). One thread,
//! hand-encoded frames, no allocation per message: see `lean.rs`. With `--session` every
//! client opens a session (`session.rs`).
//!
//! `cold`: opens N fresh documents one after another; reports connect -> upgraded times.
//!
//! `hold`: opens D x C idle connections (from several loopback source addresses, at most
//! `--concurrency` handshakes at a time; as many as there are connections for a burst),
//! prints `READY <open> <failed> <sessions> <seconds>` and holds them until stdin closes,
//! so that the server's memory can be measured. With `--session` each one opens a session
//! (the host's hello read; `<sessions>` counts the distinct ids). A `broadcast` line on
//! stdin sends one message from the first socket and prints `BROADCAST <received> <ms>`
//! once the others have it (the relay sends it to every other connection).
//!
//! `takeover`: opens D documents (one connection each) on `--url`, prints `READY <open>`,
//! and when the server ends them (it was killed) opens each document on `--to`, retrying,
//! until it is served there; reports when each one was lost and served again (Unix ms, so
//! that the caller can measure from the moment it killed the server).

mod conn;
mod frame;
mod lean;
mod session;
mod template;
mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Parser)]
struct Cli {
    /// Base URL; `/{document}` is appended (e.g. ws://127.0.0.1:8000/ws/relay).
    #[arg(long)]
    url: String,
    /// Worker threads of the generator (`cold` and `hold`; `run` is single-threaded).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Relay throughput and latency at a fixed send rate (one thread, lean).
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
        /// Each client writes once per tick every message that came due (milliseconds).
        #[arg(long, default_value_t = 50.0)]
        tick_ms: f64,
        /// The generator polls its sockets once per this many microseconds (received
        /// messages are timed when read, so latencies include up to this much).
        #[arg(long, default_value_t = 250)]
        poll_us: u64,
        /// Documents are `bench-{first_doc}` onwards (generators sharing a server use
        /// distinct ranges).
        #[arg(long, default_value_t = 0)]
        first_doc: usize,
        /// The server's pid: its CPU share over the sending window is reported too.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Every client opens a session (`wasmroom.session.v1`, docs/sessions.md): its
        /// messages are numbered, the host's numbers checked (a gap or a duplicate is an
        /// error) and acknowledged as `clients/js` does.
        #[arg(long)]
        session: bool,
    },
    /// Cold opens of fresh documents.
    Cold {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// A query string for every request (e.g. `token=...` for access tokens).
        #[arg(long)]
        query: Option<String>,
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
        /// Every connection opens a session: a connection counts as open once the host's
        /// hello of a new session arrived.
        #[arg(long)]
        session: bool,
        /// Connections being opened at once (a burst: all of them).
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Documents held on one host, then opened on another once the first dies.
    Takeover {
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        /// Base URL of the host that takes over.
        #[arg(long)]
        to: String,
        /// Pause between two attempts at one document (milliseconds).
        #[arg(long, default_value_t = 100)]
        retry_ms: u64,
        /// Give up on a document this long after it was lost (seconds).
        #[arg(long, default_value_t = 120)]
        patience_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.mode {
        Mode::Run {
            docs,
            clients,
            size,
            rate,
            seconds,
            tick_ms,
            poll_us,
            first_doc,
            server_pid,
            session,
        } => lean::run(
            &cli.url,
            lean::Shape {
                docs,
                clients,
                size,
                rate,
                duration: Duration::from_secs_f64(seconds),
                tick: Duration::from_secs_f64(tick_ms / 1000.0),
                poll: Duration::from_micros(poll_us),
                first_doc,
                session,
            },
            server_pid,
        )?,
        Mode::Cold { count, query } => {
            runtime(cli.threads)?.block_on(cold(&cli.url, count, query.as_deref()))?
        }
        Mode::Hold {
            docs,
            clients,
            sources,
            session,
            concurrency,
        } => runtime(cli.threads)?.block_on(hold(
            &cli.url,
            docs,
            clients,
            sources,
            session,
            concurrency,
        ))?,
        Mode::Takeover {
            docs,
            to,
            retry_ms,
            patience_secs,
        } => runtime(cli.threads)?.block_on(takeover(
            &cli.url,
            &to,
            docs,
            Duration::from_millis(retry_ms),
            Duration::from_secs(patience_secs),
        ))?,
    };
    println!("{report}");
    Ok(())
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // One thread: a current-thread runtime (no work stealing).
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
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

/// Opens `url` offering a session and reads the host's hello: the socket and the new
/// session's id.
async fn open_session(url: &str, source: Option<IpAddr>) -> anyhow::Result<(Ws, String)> {
    let addr = address(url)?;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(wasmroom_wire::session::SUBPROTOCOL),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    let accepted = response.headers().get("sec-websocket-protocol");
    anyhow::ensure!(
        accepted.is_some_and(|p| p == wasmroom_wire::session::SUBPROTOCOL),
        "the host did not accept the session subprotocol"
    );
    match ws.next().await {
        Some(Ok(Message::Text(hello))) => {
            let id = session::new_session_id(hello.as_str())
                .with_context(|| format!("not a new session's hello: {hello}"))?;
            Ok((ws, id.to_owned()))
        }
        other => anyhow::bail!("no hello: {other:?}"),
    }
}

fn percentile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

async fn cold(base: &str, count: usize, query: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut hist = Histogram::<u64>::new(3)?;
    let tag = std::process::id();
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    for i in 0..count {
        let t = Instant::now();
        let mut ws = open(&format!("{base}/cold-{tag}-{i}{query}"), None).await?;
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
    session: bool,
    concurrency: usize,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
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
                if session {
                    open_session(&url, Some(source))
                        .await
                        .ok()
                        .map(|(ws, id)| (ws, Some(id)))
                } else {
                    open(&url, Some(source)).await.ok().map(|ws| (ws, None))
                }
            }));
        }
    }
    let mut open_sockets = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Some((ws, id)) => {
                open_sockets.push(ws);
                ids.extend(id);
            }
            None => failed += 1,
        }
    }
    // The third figure: distinct sessions the host opened (one per socket, or 0).
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "READY {} {failed} {} {seconds:.3}",
        open_sockets.len(),
        ids.len()
    );
    // Keep answering pings while holding, until stdin closes; count the text messages
    // the sockets receive (a `broadcast` line on stdin sends one from the first socket).
    let held = open_sockets.len();
    let (mut sinks, streams): (Vec<_>, Vec<_>) =
        open_sockets.into_iter().map(|ws| ws.split()).unzip();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = received.clone();
    // Unconstrained by tokio's cooperative budget: once the budget of a poll runs out,
    // every other ready socket of the `select_all` answers `Pending` and is polled again
    // on the next poll, so a broadcast to tens of thousands cost the generator seconds
    // of CPU (quadratic), and the figure measured the generator, not the server.
    let keep = tokio::spawn(tokio::task::unconstrained(async move {
        let mut all = futures_util::stream::select_all(streams);
        while let Some(message) = all.next().await {
            if matches!(message, Ok(Message::Text(_) | Message::Binary(_))) {
                counting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }));
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::stdin().lock()).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if line.trim() == "broadcast" {
            broadcast(&mut sinks, &received, held).await?;
        }
    }
    keep.abort();
    Ok(serde_json::json!({"held": held, "failed": failed, "open_seconds": seconds}))
}

/// Sends one message from the first held socket and waits (at most a minute) until the
/// others received it (the relay sends it to every other connection of its document);
/// prints `BROADCAST <received> <milliseconds>`.
async fn broadcast(
    sinks: &mut [futures_util::stream::SplitSink<Ws, Message>],
    received: &std::sync::atomic::AtomicUsize,
    held: usize,
) -> anyhow::Result<()> {
    use futures_util::SinkExt;
    let before = received.load(std::sync::atomic::Ordering::Relaxed);
    let others = held.saturating_sub(1);
    let first = sinks.first_mut().context("no socket held")?;
    let started = Instant::now();
    first.send(Message::text("fan out")).await?;
    let deadline = started + Duration::from_secs(60);
    let mut got = 0;
    while Instant::now() < deadline {
        got = received.load(std::sync::atomic::Ordering::Relaxed) - before;
        if got >= others {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    println!(
        "BROADCAST {got} {:.1}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// When one document was lost on the first host and served on the second, and how many
/// attempts that took.
struct Moved {
    lost_ms: f64,
    served_ms: f64,
    attempts: u32,
    /// Held until every document is served, so that none is dropped as idle meanwhile.
    _socket: Ws,
}

async fn takeover(
    from: &str,
    to: &str,
    docs: usize,
    retry: Duration,
    patience: Duration,
) -> anyhow::Result<serde_json::Value> {
    let tag = std::process::id();
    let names: Vec<String> = (0..docs).map(|d| format!("takeover-{tag}-{d}")).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let opening: Vec<_> = names
        .iter()
        .map(|name| {
            let (url, limit) = (format!("{from}/{name}"), limit.clone());
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await?;
                open(&url, None).await
            })
        })
        .collect();
    let mut held = Vec::with_capacity(docs);
    for task in opening {
        held.push(task.await??);
    }
    println!("READY {}", held.len());
    // The generator's CPU from the first document lost to the last one served again.
    let first_lost = Arc::new(std::sync::OnceLock::new());
    let moving: Vec<_> = held
        .into_iter()
        .zip(&names)
        .map(|(mut ws, name)| {
            let (url, first_lost) = (format!("{to}/{name}"), first_lost.clone());
            tokio::spawn(async move {
                // Every frame until the first host goes away (its sockets are reset).
                while let Some(Ok(_)) = ws.next().await {}
                let lost_ms = unix_ms();
                first_lost.get_or_init(|| (lean::cpu_seconds("self"), Instant::now()));
                let deadline = Instant::now() + patience;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match open(&url, None).await {
                        Ok(socket) => {
                            return Ok::<_, anyhow::Error>(Moved {
                                lost_ms,
                                served_ms: unix_ms(),
                                attempts,
                                _socket: socket,
                            });
                        }
                        Err(e) if Instant::now() >= deadline => {
                            anyhow::bail!("{url} not served after {attempts} attempts: {e}")
                        }
                        Err(_) => tokio::time::sleep(retry).await,
                    }
                }
            })
        })
        .collect();
    let mut moved = Vec::with_capacity(docs);
    for task in moving {
        moved.push(task.await??);
    }
    let (cpu, wall) = first_lost.get().map_or((0.0, 0.0), |(cpu, at)| {
        (lean::cpu_seconds("self") - cpu, at.elapsed().as_secs_f64())
    });
    let lost: Vec<f64> = moved.iter().map(|m| m.lost_ms).collect();
    let served: Vec<f64> = moved.iter().map(|m| m.served_ms).collect();
    let attempts: Vec<u32> = moved.iter().map(|m| m.attempts).collect();
    Ok(serde_json::json!({
        "docs": docs,
        "lost_unix_ms": lost,
        "served_unix_ms": served,
        "attempts": attempts,
        // From the first document lost to the last one served again.
        "generator_cpu_seconds": cpu,
        "generator_wall_seconds": wall,
        "generator_cpu_share": if wall > 0.0 { cpu / wall } else { 0.0 },
    }))
}
