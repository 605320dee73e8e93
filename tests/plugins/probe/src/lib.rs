//! `probe`: a consumer for the integration tests, with hooks that misbehave on request.
//!
//! - connect with `?reject=STATUS&reason=TEXT` to be refused with that status and reason,
//!   with `?panic=TEXT` to have `on-connect` panic with TEXT; offer the `probe.v1`
//!   subprotocol to have it chosen;
//! - text commands: `timers` (sets timers 1 at 30 ms, 2 at 60 ms and 3 at 45 ms, then
//!   cancels 3), `later` (timer 9 in 1.5 s), `later MS` (timer 9 in MS ms), `echo ...`,
//!   `count`, `whoami`, `id` (this connection's id), `note TEXT` (kept), `note-observed`
//!   (keeps what `random` and `clocks` answer, as two notes), `notes` (every
//!   note, in order), `hoard N` (keeps N MiB more), `close-me CODE` (the consumer closes
//!   this connection), `connects` (how many connections `on-connect` accepted, ever),
//!   `relay TEXT` (TEXT to every other connection, no answer), `departed`
//!   (`id:code` of every connection gone, as `on-disconnect` reported them), `spin`
//!   (never returns), `grow` (allocates without end), `panic`, `poison-timer MS` (timer
//!   13 in MS ms, whose `on-timer` panics), `poison-leave` (this connection's
//!   `on-disconnect` panics);
//! - messages that arrive together come in one `on-messages` call (WIT 0.1.2): `batch`
//!   answers how many its call held (1 through `on-message`); a batch holding
//!   `drop-rest` is handled up to it and said to be, without closing the connection (a
//!   consumer bug, which the host answers with 1011); others as the SDK's default does;
//! - every due timer broadcasts `timer N`; `restore` broadcasts how many connections it sees;
//! - `log TEXT` logs TEXT as a warning, as it is (control characters included);
//! - `claims` answers this connection's token claims (`none` without), `setting NAME`
//!   the plugin's setting (`none` if unset), `subprotocols` what `on-connect` was offered,
//!   `connect-info` all `on-connect` saw (`{"path", "query", "headers", "subprotocols"}`);
//! - the document `trap-open` traps in `open`, with control characters in its message;
//! - an HTTP request answers `probe {document}`, or `?size=N` bytes of `x`, with status
//!   200 or `?status=N`; `?panic=TEXT` panics with TEXT instead; `/docs/probe/{document}/echo`
//!   answers all `on-request` saw (`{"method", "path", "query", "headers"}`);
//! - what a call observes (the host must make it depend on the call's input only):
//!   `clocks` reads every clock twice, spinning between the reads until the monotonic
//!   clock has moved 2 ms (or 20,000 reads), and reports both reads, the resolutions and
//!   which `subscribe-*` pollables are ready; `random` draws WASI random (secure,
//!   insecure, the insecure seed) and hashes with std's `RandomState`; `nan A B` answers
//!   the bits of `A / B` as f64 and f32.

use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasip2::clocks::{monotonic_clock, wall_clock};

use wasmroom_sdk::{
    Connect, ConnectionId, Consumer, Decision, LogLevel, Message, Request, Response, broadcast,
    cancel_timer, claims, close, connections, each_message, log, send, set_timer, setting,
};

struct Probe {
    document: String,
    remote: Vec<(ConnectionId, String)>,
    offered: Vec<(ConnectionId, Vec<String>)>,
    /// What `on-connect` saw of each connection, as JSON.
    seen: Vec<(ConnectionId, String)>,
    departed: Vec<(ConnectionId, u16)>,
    notes: Vec<String>,
    hoard: Vec<Vec<u8>>,
    /// Connections accepted, ever.
    connects: u64,
    /// How many messages the current call holds.
    batch: usize,
    /// Connections whose `on-disconnect` panics.
    poisoned: Vec<ConnectionId>,
}

/// The timer `poison-timer` sets: its `on-timer` panics.
const POISONED_TIMER: u64 = 13;

impl Consumer for Probe {
    fn open(document: &str) -> Self {
        if document == "trap-open" {
            panic!("probe refuses to open\r\nFORGED OPEN LINE\u{1b}[2K");
        }
        Probe {
            document: document.to_owned(),
            remote: Vec::new(),
            offered: Vec::new(),
            seen: Vec::new(),
            departed: Vec::new(),
            notes: Vec::new(),
            hoard: Vec::new(),
            connects: 0,
            batch: 1,
            poisoned: Vec::new(),
        }
    }

    fn on_connect(&mut self, conn: &Connect) -> Decision {
        if let Some(text) = conn.query_param("panic") {
            panic!("{text}");
        }
        if let Some(status) = conn.query_param("reject") {
            let status = status.parse().unwrap_or(403);
            let reason = conn.query_param("reason").unwrap_or("rejected by probe");
            return Decision::reject(status, reason.replace("%20", " "));
        }
        self.connects += 1;
        self.remote.push((conn.id, conn.remote_address.clone()));
        self.offered.push((conn.id, conn.subprotocols.clone()));
        let seen = serde_json::json!({
            "path": conn.path,
            "query": conn.query,
            "headers": conn.headers,
            "subprotocols": conn.subprotocols,
        });
        self.seen.push((conn.id, seen.to_string()));
        let subprotocol = conn.subprotocols.iter().find(|p| *p == "probe.v1").cloned();
        Decision::Accept { subprotocol }
    }

    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        let Message::Text(text) = msg else {
            let _ = send(from, msg);
            return;
        };
        let reply = match text.as_str() {
            "timers" => {
                let ms = Duration::from_millis;
                let ok = set_timer(1, ms(30)).is_ok()
                    && set_timer(2, ms(60)).is_ok()
                    && set_timer(3, ms(45)).is_ok()
                    && cancel_timer(3);
                if ok {
                    "timers set".to_owned()
                } else {
                    "timers failed".to_owned()
                }
            }
            "later" => later(1500),
            "count" => connections().len().to_string(),
            "connects" => self.connects.to_string(),
            "batch" => format!("batch {}", self.batch),
            other if other.starts_with("relay ") => {
                let _ = broadcast(Message::Text(other["relay ".len()..].to_owned()), &[from]);
                return;
            }
            "id" => from.to_string(),
            "whoami" => self
                .remote
                .iter()
                .find(|(id, _)| *id == from)
                .map(|(_, addr)| addr.clone())
                .unwrap_or_default(),
            "spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "grow" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "panic" => panic!("probe was asked to panic"),
            "poison-leave" => {
                self.poisoned.push(from);
                "leaving will trap".to_owned()
            }
            other if other.starts_with("poison-timer ") => {
                let ms = other["poison-timer ".len()..].parse().unwrap_or(50);
                match set_timer(POISONED_TIMER, Duration::from_millis(ms)) {
                    Ok(()) => "poisoned timer set".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
            "notes" => self.notes.join(","),
            "departed" => self
                .departed
                .iter()
                .map(|(id, code)| format!("{id}:{code}"))
                .collect::<Vec<_>>()
                .join(","),
            "claims" => claims(from).unwrap_or_else(|| "none".to_owned()),
            "clocks" => clocks(),
            "random" => random(),
            other if other.starts_with("nan ") => nan(&other["nan ".len()..]),
            "connect-info" => self
                .seen
                .iter()
                .find(|(id, _)| *id == from)
                .map(|(_, seen)| seen.clone())
                .unwrap_or_default(),
            "subprotocols" => self
                .offered
                .iter()
                .find(|(id, _)| *id == from)
                .map(|(_, p)| p.join(","))
                .unwrap_or_default(),
            other if other.starts_with("setting ") => {
                setting(&other["setting ".len()..]).unwrap_or_else(|| "none".to_owned())
            }
            other if other.starts_with("log ") => {
                log(LogLevel::Warn, &other["log ".len()..]);
                "logged".to_owned()
            }
            "note-observed" => {
                // What the call saw of time and randomness, kept like a note: a document
                // rebuilt from its journal must hold the same.
                self.notes.push(random());
                self.notes.push(clocks());
                return;
            }
            other if other.starts_with("note-setting ") => {
                // What `setting` answered, kept: a replay must see what the call saw.
                let name = &other["note-setting ".len()..];
                self.notes
                    .push(setting(name).unwrap_or_else(|| "none".to_owned()));
                return;
            }
            other if other.starts_with("note ") => {
                self.notes.push(other["note ".len()..].to_owned());
                return;
            }
            other if other.starts_with("later ") => {
                later(other["later ".len()..].parse().unwrap_or(1500))
            }
            other => match (
                other.strip_prefix("echo "),
                other.strip_prefix("hoard "),
                other.strip_prefix("close-me "),
            ) {
                (Some(rest), _, _) => rest.to_owned(),
                (_, _, Some(code)) => {
                    let code = code.parse().unwrap_or(4000);
                    match close(from, code, "asked to") {
                        Ok(()) => return,
                        Err(e) => e.to_string(),
                    }
                }
                (_, Some(mib), _) => {
                    // Keeps MiB of touched memory, for the memory metrics.
                    let mib: usize = mib.parse().unwrap_or(0);
                    for _ in 0..mib {
                        self.hoard.push(vec![1u8; 1 << 20]);
                    }
                    format!("hoarding {} MiB", self.hoard.len())
                }
                _ => format!("unknown command: {other}"),
            },
        };
        let _ = send(from, reply);
    }

    fn on_messages(&mut self, from: ConnectionId, messages: Vec<Message>) -> usize {
        let dropping = messages
            .iter()
            .position(|m| matches!(m, Message::Text(t) if t == "drop-rest"));
        self.batch = messages.len();
        let handled = match dropping {
            Some(at) => {
                for msg in messages.into_iter().take(at + 1) {
                    self.on_message(from, msg);
                }
                at + 1
            }
            None => each_message(self, from, messages),
        };
        self.batch = 1;
        handled
    }

    fn on_disconnect(&mut self, conn: ConnectionId, code: u16) {
        if self.poisoned.contains(&conn) {
            panic!("probe's connection {conn} was poisoned to trap as it left");
        }
        self.remote.retain(|(id, _)| *id != conn);
        self.departed.push((conn, code));
    }

    fn on_timer(&mut self, id: u64) {
        if id == POISONED_TIMER {
            panic!("probe's poisoned timer fired");
        }
        let _ = broadcast(format!("timer {id}"), &[]);
    }

    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        // Says who it sees: a hot reload must show the new version every connection.
        let _ = broadcast(
            format!("restored with {} connection(s)", connections().len()),
            &[],
        );
        Ok(())
    }

    fn on_request(&mut self, request: Request) -> Response {
        if let Some(text) = request.query_param("panic") {
            panic!("{text}");
        }
        if request.path.ends_with("/echo") {
            let seen = serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
            });
            return Response::json(200, seen.to_string());
        }
        let status = request
            .query_param("status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        match request.query_param("size").and_then(|n| n.parse().ok()) {
            Some(size) => Response::text(status, "x".repeat(size)),
            None => Response::text(status, format!("probe {}", self.document)),
        }
    }
}

/// Every clock read twice in one call, with time for them to move in between.
fn clocks() -> String {
    let read = || {
        let wall = wall_clock::now();
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        (
            wasmroom_sdk::now_ms(),
            u128::from(wall.seconds) * 1_000_000_000 + u128::from(wall.nanoseconds),
            monotonic_clock::now(),
            system,
        )
    };
    let std_instant = Instant::now();
    let first = read();
    let mut spins = 0;
    while spins < 20_000 && monotonic_clock::now().saturating_sub(first.2) < 2_000_000 {
        spins += 1;
    }
    let second = read();
    let resolution = wall_clock::resolution();
    let ready = |p: wasip2::io::poll::Pollable| p.ready();
    serde_json::json!({
        "now_ms": [first.0, second.0],
        "wall_ns": [first.1.to_string(), second.1.to_string()],
        "monotonic_ns": [first.2, second.2],
        "system_time_ns": [first.3.to_string(), second.3.to_string()],
        "instant_elapsed_ns": std_instant.elapsed().as_nanos().to_string(),
        "spins": spins,
        "resolution_ns": [
            u64::from(resolution.nanoseconds) + resolution.seconds * 1_000_000_000,
            monotonic_clock::resolution(),
        ],
        "ready": {
            "zero": ready(monotonic_clock::subscribe_duration(0)),
            "now": ready(monotonic_clock::subscribe_instant(first.2)),
            "later": ready(monotonic_clock::subscribe_duration(1)),
        },
    })
    .to_string()
}

/// What a call draws at random, as hex.
fn random() -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let (seed_low, seed_high) = wasip2::random::insecure_seed::insecure_seed();
    serde_json::json!({
        "secure": hex(&wasip2::random::random::get_random_bytes(16)),
        "secure_u64": wasip2::random::random::get_random_u64().to_string(),
        "insecure": hex(&wasip2::random::insecure::get_insecure_random_bytes(16)),
        "insecure_seed": format!("{seed_high:016x}{seed_low:016x}"),
        "std_hash": std::collections::hash_map::RandomState::new().hash_one(42u64).to_string(),
    })
    .to_string()
}

/// The bits of `a / b` (from text, so that the compiler cannot work it out).
fn nan(operands: &str) -> String {
    let mut numbers = operands.split(' ').map(|n| n.parse::<f64>().unwrap_or(0.0));
    let (a, b) = (
        std::hint::black_box(numbers.next().unwrap_or(0.0)),
        std::hint::black_box(numbers.next().unwrap_or(0.0)),
    );
    serde_json::json!({
        "f64": format!("{:#018x}", (a / b).to_bits()),
        "f32": format!("{:#010x}", (a as f32 / b as f32).to_bits()),
    })
    .to_string()
}

/// Sets timer 9 to fire in `ms` milliseconds.
fn later(ms: u64) -> String {
    match set_timer(9, Duration::from_millis(ms)) {
        Ok(()) => "later set".to_owned(),
        Err(e) => e.to_string(),
    }
}

wasmroom_sdk::export!(Probe);
