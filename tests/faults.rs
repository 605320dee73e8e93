//! Fault injection: three hosts behind nginx on one PostgreSQL, each host's connections
//! to the store through a proxy the test controls, while clients stream numbered lines
//! into twenty chat documents. A seeded random schedule runs faults one after another:
//! stalls of one host's store connections (0.5-1.2x the lease TTL), kill -9, SIGSTOP /
//! SIGCONT, a PostgreSQL restart, a graceful restart (SIGTERM).
//!
//! An independent checker then verifies, from what the clients saw and from the hosts'
//! delivery logs (a line per applied message: time, host, registration, epoch):
//! - **one owner**: no two leases ever applied messages of one document in overlapping
//!   time, and a document's epochs follow each other in time;
//! - **drains keep lines**: every line a client sent before it saw a drain's close (a
//!   hand-back's or a shutdown's 1012) or before its own close is in its document, once,
//!   unless that close fell in a fault that can make the host's last save fail (then
//!   only the last checkpoint is promised, as documented, until journaling lands).
//!
//! `WASMROOM_FAULT_SECONDS` sets how long faults run (60 by default, as in CI);
//! `WASMROOM_FAULT_SEED` replays a schedule (the seed is printed first).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use support::fault_proxy::{Direction, FaultProxy};
use support::nginx::Nginx;
use support::postgres::Postgres;
use support::streaming::{Stream, Streamed};
use support::*;

const HOSTS: usize = 3;
const DOCS: usize = 20;
const TTL: Duration = Duration::from_millis(2000);
/// A line every 25 ms per document: 800 lines a second in all.
const EVERY: Duration = Duration::from_millis(25);

const HOST_CONFIG: &str = "\
checkpoint_secs = 1
idle_grace_secs = 600
http_idle_grace_ms = 600000
[store]
lease_ttl_ms = 2000
handoff_timeout_ms = 3000
[plugin.chat.settings]
history = \"100000\"
";

/// The drains' closes, which promise that what the client sent before applies.
const DRAINED: [&str; 2] = ["document moved to another host", "server restarting"];

/// A small deterministic generator (splitmix64): the schedule depends on the seed only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A duration between `from` and `to` times `unit`.
    fn span(&mut self, unit: Duration, from: f64, to: f64) -> Duration {
        let f = from + (to - from) * (self.below(1_000) as f64 / 1_000.0);
        unit.mul_f64(f)
    }
}

/// A fault as it ran.
#[derive(Debug)]
struct Fault {
    what: String,
    start: SystemTime,
    end: SystemTime,
    /// Whether a drain during it may fail to save (its lines are then not promised).
    store_unsure: bool,
}

/// Three hosts, a proxy in front of PostgreSQL for each, nginx in front of the hosts.
struct Rig {
    hosts: Vec<Option<Server>>,
    nginx: Nginx,
    proxies: Vec<FaultProxy>,
    _config: tempfile::NamedTempFile,
    log: tempfile::NamedTempFile,
    pg: Postgres,
}

impl Rig {
    fn start() -> anyhow::Result<Rig> {
        let pg = Postgres::start()?;
        let mut config = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::io::Write::write_all(&mut config, HOST_CONFIG.as_bytes())?;
        let log = tempfile::NamedTempFile::new()?;
        let mut hosts = Vec::new();
        let mut proxies = Vec::new();
        let mut lanes = Vec::new();
        for h in 0..HOSTS {
            let ip = format!("127.0.0.{}", h + 1);
            let proxy = FaultProxy::start_on(ip.parse()?, pg.addr())?;
            let url = pg.url_through(proxy.addr());
            let port = std::net::TcpListener::bind((ip.as_str(), 0))?
                .local_addr()?
                .port();
            lanes.push(format!("{ip}:{port}"));
            let config_path = config.path().to_str().context("temp path")?.to_owned();
            let log_path = log.path().to_str().context("temp path")?.to_owned();
            hosts.push(Some(Server::start_host_with_env(
                &["chat"],
                &ip,
                &[port],
                &["--store", &url, "--config", &config_path],
                &[("WASMROOM_TEST_DELIVERY_LOG", &log_path)],
            )?));
            proxies.push(proxy);
        }
        let nginx = Nginx::start_for(&lanes, &["--routing", "hash", "--store-shared"])?;
        Ok(Rig {
            hosts,
            nginx,
            proxies,
            _config: config,
            log,
            pg,
        })
    }

    fn host(&self, h: usize) -> &Server {
        self.hosts[h].as_ref().expect("the host runs")
    }

    /// Runs one fault on `h` (or the store), chosen by `rng`; returns it once healed.
    async fn fault(&mut self, rng: &mut Rng) -> anyhow::Result<Fault> {
        let h = rng.below(HOSTS as u64) as usize;
        let start = SystemTime::now();
        let (what, store_unsure) = match rng.below(5) {
            0 => {
                let stall = rng.span(TTL, 0.5, 1.2);
                self.proxies[h].stall(Direction::Both);
                tokio::time::sleep(stall).await;
                self.proxies[h].resume(Direction::Both);
                (
                    format!("host {h}: store connections stalled {stall:?}"),
                    true,
                )
            }
            1 => {
                let mut host = self.hosts[h].take().expect("the host runs");
                host.kill9()?;
                let down = rng.span(Duration::from_secs(1), 0.2, 2.0);
                tokio::time::sleep(down).await;
                self.hosts[h] = Some(host.restart()?);
                (format!("host {h}: kill -9, down {down:?}"), true)
            }
            2 => {
                let frozen = rng.span(TTL, 0.5, 1.5);
                self.host(h).signal("STOP")?;
                tokio::time::sleep(frozen).await;
                self.host(h).signal("CONT")?;
                (format!("host {h}: SIGSTOP for {frozen:?}"), true)
            }
            3 => {
                let down = rng.span(Duration::from_secs(1), 0.2, 1.0);
                self.pg.stop_server()?;
                tokio::time::sleep(down).await;
                self.pg.start_server()?;
                (format!("PostgreSQL restarted, down {down:?}"), true)
            }
            _ => {
                let mut host = self.hosts[h].take().expect("the host runs");
                let status = tokio::task::spawn_blocking(move || {
                    host.terminate().map(|status| (status, host))
                })
                .await??;
                anyhow::ensure!(status.0.success(), "host {h} exited with {}", status.0);
                self.hosts[h] = Some(status.1.restart()?);
                (format!("host {h}: SIGTERM and restart"), false)
            }
        };
        Ok(Fault {
            what,
            start,
            end: SystemTime::now(),
            store_unsure,
        })
    }
}

/// One document's writer: streams lines `{n}` through nginx, reconnecting after every
/// close, until `stop`; returns every connection's outcome with its first line.
async fn write(url: String, stop: Arc<AtomicBool>) -> Vec<(usize, Streamed)> {
    let mut connections = Vec::new();
    let mut next = 0;
    while !stop.load(Ordering::Acquire) {
        let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let stream = Stream::start_at(ws, "", next, EVERY);
        while !stream.is_finished() && !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stream.stop();
        let first = next;
        let so_far = stream.sent();
        match stream.finished().await {
            Ok(streamed) => {
                next = streamed.sent;
                connections.push((first, streamed));
            }
            // A stream whose close never completed: none of its lines is promised, and
            // the next connection's numbers start well clear of it.
            Err(_) => next = so_far + 1_000,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connections
}

fn micros(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i128)
}

/// Every applied message's time by document and lease, from the hosts' delivery log.
type Leases = BTreeMap<String, BTreeMap<(String, u64, u64), (i128, i128)>>;

fn read_deliveries(log: &std::path::Path) -> anyhow::Result<(Leases, usize)> {
    let mut leases: Leases = BTreeMap::new();
    let text = std::fs::read_to_string(log)?;
    let mut lines = 0;
    for line in text.lines() {
        let mut fields = line.splitn(5, ' ');
        let (Some(t), Some(host), Some(holder), Some(epoch), Some(doc)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            anyhow::bail!("malformed delivery line {line:?}");
        };
        let t: i128 = t.parse()?;
        let key = (host.to_owned(), holder.parse()?, epoch.parse()?);
        let span = leases
            .entry(doc.to_owned())
            .or_default()
            .entry(key)
            .or_insert((t, t));
        span.0 = span.0.min(t);
        span.1 = span.1.max(t);
        lines += 1;
    }
    Ok((leases, lines))
}

/// Overlapping leases of one document, or epochs out of time order.
fn two_owners(leases: &Leases) -> Vec<String> {
    let mut found = Vec::new();
    for (doc, spans) in leases {
        let mut spans: Vec<_> = spans.iter().collect();
        spans.sort_by_key(|(_, (first, _))| *first);
        for pair in spans.windows(2) {
            let ((a, (_, a_last)), (b, (b_first, _))) = (pair[0], pair[1]);
            if a_last >= b_first {
                found.push(format!(
                    "{doc}: {a:?} applied until {a_last} while {b:?} started at {b_first}"
                ));
            }
            if b.2 <= a.2 {
                found.push(format!("{doc}: epoch {} after epoch {}", b.2, a.2));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_never_give_a_document_two_owners_nor_lose_a_drained_line()
-> anyhow::Result<()> {
    let seconds: u64 = std::env::var("WASMROOM_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("WASMROOM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| micros(SystemTime::now()) as u64);
    eprintln!("fault schedule seed {seed} ({seconds} s): WASMROOM_FAULT_SEED={seed} replays it");
    let mut rng = Rng(seed);
    let mut rig = Rig::start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..DOCS)
        .map(|d| {
            let url = rig.nginx.url(&format!("/ws/chat/f{d}?name=w{d}"));
            tokio::spawn(write(url, stop.clone()))
        })
        .collect();
    let mut faults = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    tokio::time::sleep(Duration::from_secs(2)).await;
    while Instant::now() < until {
        let fault = rig.fault(&mut rng).await?;
        eprintln!("  {}", fault.what);
        faults.push(fault);
        // Settle: documents move back, hand-backs drain, checkpoints run.
        tokio::time::sleep(rng.span(Duration::from_secs(1), 1.0, 3.0)).await;
    }
    // Everything healed; the writers close their sockets themselves.
    tokio::time::sleep(TTL * 2).await;
    stop.store(true, Ordering::Release);
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await?);
    }

    // One owner at a time, by the hosts' own records of what they applied.
    let (leases, deliveries) = read_deliveries(rig.log.path())?;
    let overlaps = two_owners(&leases);

    // Every line the drain rule covers is in its document, once.
    let unsure = |at: SystemTime| {
        let at = micros(at);
        faults.iter().any(|f| {
            f.store_unsure
                && at >= micros(f.start) - 2_000_000
                && at <= micros(f.end) + 2 * TTL.as_micros() as i128
        })
    };
    let (mut promised, mut exempt, mut sent) = (0usize, 0usize, 0usize);
    let mut lost = Vec::new();
    for (d, connections) in outcomes.iter().enumerate() {
        let doc = format!("f{d}");
        let deadline = Instant::now() + PATIENCE;
        let body = loop {
            let (status, body) =
                http(rig.nginx.addr, "GET", &format!("/docs/chat/{doc}"), b"").await?;
            if status == 200 {
                break body;
            }
            anyhow::ensure!(Instant::now() < deadline, "{doc}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let history: serde_json::Value = serde_json::from_str(&body)?;
        let mut kept = BTreeMap::<usize, usize>::new();
        for m in history["messages"].as_array().context("no messages")? {
            if let Some(n) = m["text"].as_str().and_then(|t| t.parse().ok()) {
                *kept.entry(n).or_default() += 1;
            }
        }
        if let Some((n, times)) = kept.iter().find(|(_, times)| **times > 1) {
            lost.push(format!("{doc}: line {n} applied {times} times"));
        }
        let mut missing = BTreeSet::new();
        for (first, streamed) in connections {
            let lines = streamed.sent.saturating_sub(*first);
            sent += lines;
            let drained = streamed.by_client
                || streamed
                    .close
                    .as_ref()
                    .is_some_and(|(code, why)| *code == 1012 && DRAINED.contains(&why.as_str()));
            if !drained {
                continue;
            }
            if !streamed.by_client && unsure(streamed.closed_at) {
                exempt += lines;
                continue;
            }
            promised += lines;
            missing.extend((*first..streamed.sent).filter(|n| !kept.contains_key(n)));
        }
        if !missing.is_empty() {
            let few: Vec<_> = missing.iter().take(10).collect();
            lost.push(format!(
                "{doc}: {} drained line(s) missing, e.g. {few:?}",
                missing.len()
            ));
        }
    }
    eprintln!(
        "{} faults; {sent} lines sent, {promised} promised by a drain and checked, {exempt} \
         exempt (drained during a store fault); {deliveries} deliveries in {} leases",
        faults.len(),
        leases.values().map(BTreeMap::len).sum::<usize>()
    );
    if !overlaps.is_empty() || !lost.is_empty() {
        for fault in &faults {
            eprintln!(
                "  {} .. {}: {}",
                micros(fault.start),
                micros(fault.end),
                fault.what
            );
        }
        anyhow::bail!(
            "seed {seed}: {} overlap(s), {} loss(es):\n{}\n{}",
            overlaps.len(),
            lost.len(),
            overlaps.join("\n"),
            lost.join("\n")
        );
    }
    anyhow::ensure!(promised > 0, "seed {seed}: no drained line was checked");
    Ok(())
}
