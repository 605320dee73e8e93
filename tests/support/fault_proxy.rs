//! A TCP proxy for fault-injection tests: it sits between a client (a wasmroom host) and a
//! server (PostgreSQL) and relays both ways until told to delay, stall or cut, either every
//! connection or one of them.
//!
//! It runs on its own thread with its own single-threaded tokio runtime, so it keeps
//! relaying while the test's runtime (if any) is blocked, and a test may drive it from a
//! plain thread. Commands are synchronous and take effect at once.
//!
//! How a stall is modelled: a stalled direction stops *reading* from its source (and holds
//! the chunks it had already read), so the bytes wait in the kernel's socket buffers and the
//! sender meets TCP backpressure once they fill, as behind a real stalled link. Nothing is
//! dropped: `resume` delivers everything, in order. A stalled direction does not pass on an
//! end of stream either, since it does not read it.

mod relay;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// How many of the first bytes a client sends are kept per connection, to be searched
/// (`LISTEN ` tells which connection is PostgreSQL's notification listener).
const HEAD: usize = 4096;
/// The event log keeps the latest lines: enough to see what happened before a failure.
const EVENTS_KEPT: usize = 300;

/// Which way bytes flow: `Upstream` is client to server, `Downstream` server to client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upstream,
    Downstream,
    Both,
}

/// A relayed connection, numbered from 0 in accept order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the proxy knows of one connection, at the moment it was asked.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: ConnId,
    /// The client's address (a host's side of its store connection).
    pub peer: SocketAddr,
    /// Bytes delivered to the server and to the client.
    pub upstream_bytes: u64,
    pub downstream_bytes: u64,
    /// The first [`HEAD`] bytes the client sent, recorded when read (delivered or not).
    pub upstream_head: Vec<u8>,
    /// False once the connection ended (both sides closed, an error, a cut).
    pub open: bool,
}

impl ConnInfo {
    /// Whether the client's first 4 KiB contain `needle`.
    pub fn saw_upstream(&self, needle: &[u8]) -> bool {
        (self.upstream_head.windows(needle.len().max(1))).any(|w| w == needle)
    }
}

/// How many connections met which fate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    /// Accepted and reset at once while `refuse(true)`; these get no [`ConnId`].
    pub refused: u64,
    /// The server could not be reached; the client was reset.
    pub upstream_failed: u64,
    /// Ended by `cut` or `cut_one`.
    pub cut: u64,
    /// Ended by an error on either side (the other side is then reset).
    pub failed: u64,
    /// Ended cleanly: both sides sent their end of stream.
    pub finished: u64,
}

/// What one connection's relay obeys; watched by its tasks, so a change applies at once.
#[derive(Debug, Clone, Copy, Default)]
struct Policy {
    stall_up: bool,
    stall_down: bool,
    delay: Duration,
    cut: bool,
}

impl Policy {
    /// Whether one way (`Upstream` or `Downstream`) is stalled.
    fn stalled(&self, dir: Direction) -> bool {
        if dir == Direction::Upstream {
            self.stall_up
        } else {
            self.stall_down
        }
    }

    fn set_stall(&mut self, dir: Direction, on: bool) {
        if dir != Direction::Downstream {
            self.stall_up = on;
        }
        if dir != Direction::Upstream {
            self.stall_down = on;
        }
    }
}

struct Conn {
    info: ConnInfo,
    policy: watch::Sender<Policy>,
}

struct State {
    /// What connections accepted from now on start with; every all-connection command
    /// (not `cut`) changes it too.
    policy: Policy,
    refuse: bool,
    /// Where connections accepted from now on are relayed.
    upstream: SocketAddr,
    conns: Vec<Conn>,
    counters: Counters,
    events: VecDeque<String>,
}

/// The state the test's thread and the proxy's runtime share; every change wakes `changed`.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    started: std::time::Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding it leaves nothing half-done worth refusing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, state: &mut State, what: String) {
        if state.events.len() == EVENTS_KEPT {
            state.events.pop_front();
        }
        let at = self.started.elapsed().as_secs_f64();
        state.events.push_back(format!("{at:>8.3}s {what}"));
        self.changed.notify_all();
    }

    fn infos(state: &State) -> impl Iterator<Item = &ConnInfo> {
        state.conns.iter().map(|c| &c.info)
    }

    fn with_conn(&self, id: ConnId, change: impl FnOnce(&mut ConnInfo)) {
        change(&mut self.lock().conns[id.0 as usize].info);
        self.changed.notify_all();
    }
}

/// A running proxy; stops when dropped (listener closed, every connection closed).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), upstream)
    }

    /// A proxy on a free port of `bind_ip` (hosts live on 127.0.0.x) to `upstream`.
    pub fn start_on(bind_ip: IpAddr, upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Bound here, so the address is known and a failure reported before we return.
        let listener = std::net::TcpListener::bind((bind_ip, 0))
            .with_context(|| format!("fault proxy cannot bind {bind_ip}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _in_runtime = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                policy: Policy::default(),
                refuse: false,
                upstream,
                conns: Vec::new(),
                counters: Counters::default(),
                events: VecDeque::new(),
            }),
            changed: Condvar::new(),
            started: std::time::Instant::now(),
        });
        let (stop, stopped) = oneshot::channel();
        let relaying = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy {addr}"))
            .spawn(move || {
                runtime.block_on(async {
                    tokio::select! {
                        _ = stopped => {}
                        () = relay::accept_loop(listener, relaying) => {}
                    }
                });
                // Dropping the runtime drops every relay task, which closes their sockets.
                drop(runtime);
            })?;
        Ok(FaultProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding `dir` on every connection, current and later (see the module doc).
    pub fn stall(&self, dir: Direction) {
        self.apply_all(format!("stall {dir:?}"), |p| p.set_stall(dir, true));
    }

    /// Forwards `dir` again on every connection, delivering what was held, in order.
    pub fn resume(&self, dir: Direction) {
        self.apply_all(format!("resume {dir:?}"), |p| p.set_stall(dir, false));
    }

    /// Forwards each chunk read from now on no earlier than `by` after it was read, both
    /// ways, order kept: a latency (up to 64 chunks of 16 KiB wait at once, so throughput
    /// is barely limited). Chunks already read keep their time; `Duration::ZERO` ends it.
    pub fn delay(&self, by: Duration) {
        self.apply_all(format!("delay {by:?}"), |p| p.delay = by);
    }

    /// Resets every open connection, both sides (RST through SO_LINGER 0). Later
    /// connections are relayed unless [`FaultProxy::refuse`] says otherwise.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        for conn in state.conns.iter().filter(|c| c.info.open) {
            conn.policy.send_modify(|p| p.cut = true);
        }
        self.shared.log(&mut state, "cut (all)".into());
    }

    /// Relays connections accepted from now on to `upstream` (a server restarted on a
    /// new port); current connections are left alone.
    pub fn retarget(&self, upstream: SocketAddr) {
        let mut state = self.shared.lock();
        state.upstream = upstream;
        self.shared.log(&mut state, format!("upstream {upstream}"));
    }

    /// While on, new connections are accepted and reset at once (a dead route); current
    /// connections are left alone.
    pub fn refuse(&self, on: bool) {
        let mut state = self.shared.lock();
        state.refuse = on;
        self.shared.log(&mut state, format!("refuse {on}"));
    }

    /// [`FaultProxy::stall`] for one connection only.
    pub fn stall_one(&self, id: ConnId, dir: Direction) {
        self.apply_one(id, format!("stall {dir:?}"), |p| p.set_stall(dir, true));
    }

    /// [`FaultProxy::resume`] for one connection only.
    pub fn resume_one(&self, id: ConnId, dir: Direction) {
        self.apply_one(id, format!("resume {dir:?}"), |p| p.set_stall(dir, false));
    }

    /// [`FaultProxy::cut`] for one connection only.
    pub fn cut_one(&self, id: ConnId) {
        self.apply_one(id, "cut".into(), |p| p.cut = true);
    }

    /// Every connection so far, open or ended, in accept order.
    pub fn connections(&self) -> Vec<ConnInfo> {
        Shared::infos(&self.shared.lock()).cloned().collect()
    }

    /// The first connection (in accept order) that `matches`, e.g.
    /// `find(|c| c.open && c.saw_upstream(b"LISTEN "))`.
    pub fn find(&self, matches: impl Fn(&ConnInfo) -> bool) -> Option<ConnInfo> {
        Shared::infos(&self.shared.lock())
            .find(|i| matches(i))
            .cloned()
    }

    /// Waits until a connection `matches` (its bytes are counted as they flow). Blocks the
    /// calling thread: from an async test, only while nothing the proxy waits for runs on
    /// that test's runtime (or call it through `spawn_blocking`).
    pub fn wait_for(
        &self,
        matches: impl Fn(&ConnInfo) -> bool,
        patience: Duration,
    ) -> anyhow::Result<ConnInfo> {
        let deadline = std::time::Instant::now() + patience;
        let mut state = self.shared.lock();
        loop {
            if let Some(info) = Shared::infos(&state).find(|i| matches(i)) {
                return Ok(info.clone());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "no matching connection within {patience:?}\n{}",
                self.report_of(&state)
            );
            state = (self.shared.changed)
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn counters(&self) -> Counters {
        self.shared.lock().counters
    }

    /// The latest events, oldest first: `   1.234s #2 accepted from 127.0.0.2:41234`.
    pub fn events(&self) -> Vec<String> {
        self.shared.lock().events.iter().cloned().collect()
    }

    /// Counters, policy, connections and events, to print when a test fails.
    pub fn report(&self) -> String {
        self.report_of(&self.shared.lock())
    }

    fn report_of(&self, state: &State) -> String {
        let mut out = format!(
            "fault proxy {} -> {}: {:?}; new connections: {:?}, refuse {}\n",
            self.addr, state.upstream, state.counters, state.policy, state.refuse
        );
        for c in Shared::infos(state) {
            let head = &c.upstream_head[..c.upstream_head.len().min(60)];
            out += &format!(
                "  #{} from {} {}: up {} B, down {} B, sent \"{}\"\n",
                c.id.0,
                c.peer,
                if c.open { "open" } else { "ended" },
                c.upstream_bytes,
                c.downstream_bytes,
                head.escape_ascii()
            );
        }
        for line in &state.events {
            out += &format!("  {line}\n");
        }
        out
    }

    fn apply_all(&self, what: String, change: impl Fn(&mut Policy)) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        change(&mut state.policy);
        for conn in &state.conns {
            conn.policy.send_modify(&change);
        }
        self.shared.log(state, format!("{what} (all)"));
    }

    fn apply_one(&self, id: ConnId, what: String, change: impl FnOnce(&mut Policy)) {
        let mut state = self.shared.lock();
        let conn = state.conns.get(id.0 as usize);
        let conn = conn.unwrap_or_else(|| panic!("fault proxy: no connection #{}", id.0));
        conn.policy.send_modify(change);
        self.shared.log(&mut state, format!("{what} #{}", id.0));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
