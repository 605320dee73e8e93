//! The `run` mode: relay load from one thread that costs little per message, so that the
//! server, not the generator, sets the ceiling.
//!
//! One thread, one `mio` poll over every socket, polled every 0.25 ms. Each client
//! writes once per tick (50 ms by default, or once per message if it sends less often), at
//! its own place in the tick so that the writes are spread evenly: every message that came
//! due since its last write is appended to the socket's reusable out buffer as a
//! ready-masked frame (a template with only the 16-digit timestamp rewritten), and the
//! buffer goes out in one `write`. Reads go into one shared buffer and are parsed in place
//! (`conn.rs`). Nothing is allocated per message.
//!
//! Why ticks: on loopback the sender of a segment pays for the receiver's TCP processing
//! too, so a `write` costs the generator about 10 us whatever its size; one write per
//! message would cost it most of its core at 400k deliveries (48k messages) per second.
//!
//! With `--session` every client opens a session (`session.rs`): its messages are
//! numbered (on the same schedule), the host's numbers checked, and its acknowledgements
//! go out with its messages or, between them, in a turn of their own every tick.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::conn::{Conn, Received, read_ready};
use crate::frame::{MASK, OP_CLOSE, encode_masked};
use crate::session::Session;
use crate::template::{Frames, masked_stamps};
use crate::upgrade::handshake;

/// Above this share of its core the generator's own delays may show in the results: such
/// a point is marked `generator_saturated` and is not a valid ceiling.
const SATURATED_SHARE: f64 = 0.70;
/// The drain after the sending window ends once nothing has arrived for this long, or
/// after `DRAIN_MAX` (an overloaded server could take minutes to work off its backlog;
/// what has not arrived by then counts as not delivered).
const QUIET: Duration = Duration::from_secs(1);
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// With sessions, how long the clients wait for the host's answer to their close frames
/// (after the measurement): a session that ends with a close is over, one whose socket
/// just went away would stay parked on the host into the next run.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// The load: `docs` x `clients` sockets, each sending `size`-byte text messages at `rate`
/// per second for `duration`, in one write per `tick` (the clients' writes are spread
/// evenly over the tick); and how often the generator polls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) docs: usize,
    pub(crate) clients: usize,
    pub(crate) size: usize,
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) tick: Duration,
    /// The event loop polls once per `poll` (plus the sleep's timer slack, up to 50 us): the
    /// latencies it measures include up to that much.
    pub(crate) poll: Duration,
    /// The first document's number (`bench-{first_doc}`).
    pub(crate) first_doc: usize,
    /// Every client offers `wasmroom.session.v1` (docs/sessions.md).
    pub(crate) session: bool,
}

/// The clients' turns to write: client `i` of `total` writes at `(round + i / total) *
/// tick` seconds into the run, so that the writes are spread evenly over each tick.
struct Turns {
    tick: f64,
    total: usize,
    /// The next turn: client `cursor` in `round`.
    cursor: usize,
    round: u64,
}

impl Turns {
    fn new(tick: f64, total: usize) -> Self {
        Self {
            tick,
            total,
            cursor: 0,
            round: 0,
        }
    }

    /// The next client whose turn came by `elapsed` seconds, and how late the turn is.
    fn next(&mut self, elapsed: f64) -> Option<(usize, f64)> {
        let at = (self.round as f64 + self.cursor as f64 / self.total as f64) * self.tick;
        if at > elapsed {
            return None;
        }
        let turn = self.cursor;
        self.cursor += 1;
        if self.cursor == self.total {
            (self.cursor, self.round) = (0, self.round + 1);
        }
        Some((turn, elapsed - at))
    }
}

/// Opens the `docs` x `clients` sockets (blocking; not measured) and registers them.
fn open_all(
    addr: SocketAddr,
    host: &str,
    prefix: &str,
    shape: &Shape,
    poll: &Poll,
    connect: &mut Histogram<u64>,
) -> anyhow::Result<Vec<Conn>> {
    let total = shape.docs * shape.clients;
    let mut conns = Vec::with_capacity(total);
    for d in 0..shape.docs {
        for _ in 0..shape.clients {
            let t = Instant::now();
            let path = format!("{prefix}/bench-{}", shape.first_doc + d);
            let (stream, early) = handshake(addr, host, &path, shape.session)?;
            connect.record(t.elapsed().as_micros().max(1) as u64)?;
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            let token = Token(conns.len());
            poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let mut conn = Conn::new(
                stream,
                early,
                4 * (shape.size + 32),
                token.0 as f64 / total as f64,
            );
            conn.session = shape.session.then(Session::default);
            conns.push(conn);
        }
    }
    Ok(conns)
}

/// Sends every open session's close frame and waits (at most `CLOSE_WAIT`) for the
/// host's: returns how many were answered.
fn close_sessions(
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Conn],
    scratch: &mut Vec<u8>,
    start: Instant,
    received: &mut Received,
) -> anyhow::Result<u64> {
    let mut waiting = 0;
    for conn in conns.iter_mut().filter(|c| c.open) {
        encode_masked(&mut conn.out, OP_CLOSE, MASK, &1000u16.to_be_bytes());
        conn.closing = true;
        conn.flush();
        waiting += 1;
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    while conns.iter().any(|c| c.open) && Instant::now() < deadline {
        match poll.poll(events, Some(Duration::from_millis(10))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if conn.open {
                read_ready(
                    conn,
                    scratch,
                    || start.elapsed().as_nanos() as u64,
                    received,
                );
                conn.flush();
            }
        }
    }
    Ok(waiting - conns.iter().filter(|c| c.open).count() as u64)
}

/// User + system CPU seconds of process `pid` ("self" for this one).
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    // utime and stime, in clock ticks of USER_HZ (100 on Linux).
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of this process and of the server (NaN if unknown).
fn cpu_pair(server: Option<u32>) -> (f64, f64) {
    let theirs = server.map_or(f64::NAN, |pid| cpu_seconds(&pid.to_string()));
    (cpu_seconds("self"), theirs)
}

/// Runs `shape` against `base`; `server` is the server's pid, for its CPU share over the
/// sending window.
pub(crate) fn run(
    base: &str,
    shape: Shape,
    server: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let Shape {
        docs,
        clients,
        rate,
        duration,
        ..
    } = shape;
    ensure!(docs > 0, "--docs must be positive");
    // One client per document is a writer only (nothing is relayed back to it): the
    // checkpoint benchmark uses it to change many documents at little cost.
    ensure!(clients >= 1, "--clients must be positive");
    ensure!(rate > 0.0, "--rate must be positive");
    ensure!(!shape.tick.is_zero(), "--tick-ms must be positive");
    ensure!(!shape.poll.is_zero(), "--poll-us must be positive");
    let size = shape.size.max(16);
    let shape = Shape { size, ..shape };
    let rest = base.strip_prefix("ws://").context("ws:// URLs only")?;
    let (host, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().context("the URL's host must be ip:port")?;

    let frames = Frames::new(size, shape.session);
    let start = Instant::now();
    let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    let mut poll = Poll::new()?;
    let mut connect = Histogram::<u64>::new(3)?;
    let mut conns = open_all(addr, host, prefix, &shape, &poll, &mut connect)?;
    let total = conns.len();

    let mut events = Events::with_capacity(total.clamp(256, 8192));
    let mut scratch = vec![0u8; 256 << 10];
    // How late the generator wrote, against each client's schedule.
    let mut late = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = Received::new()?;
    let mut sent = 0u64;
    let mut writes = 0u64;
    let begin = Instant::now() + Duration::from_millis(200);
    let end = begin + duration;
    // A client that sends less than once per tick writes each message when it is due.
    let tick = shape.tick.as_secs_f64().max(1.0 / rate);
    let mut turns = Turns::new(tick, total);
    // A session client also has a turn every tick for the acknowledgements that fall due
    // between its messages (and after the sending window): the messages keep the same
    // schedule as without sessions.
    let mut ack_turns = Turns::new(shape.tick.as_secs_f64(), total);
    let mut sending = true;
    let mut cpu_at_begin: Option<(f64, f64)> = None;
    let mut send_wall = duration.as_secs_f64();
    let (mut generator_cpu, mut server_cpu) = (0.0, f64::NAN);
    let mut last_delivered = 0;
    let mut drain_cut = false;
    let mut quiet_since = Instant::now();
    let mut wake = Instant::now();
    loop {
        // A fixed-period loop: sleeping between polls instead of blocking in `epoll_wait`
        // lets readiness pile up (one `epoll_wait` returns many sockets), and the server's
        // writes do not have to wake the generator.
        wake += shape.poll;
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        } else {
            wake = now;
        }
        match poll.poll(&mut events, Some(Duration::ZERO)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if !conn.open {
                continue;
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                read_ready(conn, &mut scratch, || ns(Instant::now()), &mut received);
            }
            if event.is_writable() {
                conn.flush();
            }
        }

        let now = Instant::now();
        if sending && now >= end {
            sending = false;
            send_wall = now.duration_since(begin).as_secs_f64();
            if let Some(cpu) = cpu_at_begin {
                let (ours, theirs) = cpu_pair(server);
                generator_cpu = (ours - cpu.0) / send_wall;
                server_cpu = (theirs - cpu.1) / send_wall;
            }
            quiet_since = now;
        } else if sending && now >= begin {
            cpu_at_begin.get_or_insert_with(|| cpu_pair(server));
            let elapsed = now.duration_since(begin).as_secs_f64();
            // Every message written now carries the same send time, masked once.
            let stamps = masked_stamps(ns(now));
            while let Some((i, behind)) = turns.next(elapsed) {
                let _ = late.record(((behind * 1e6) as u64).max(1));
                let conn = &mut conns[i];
                // Every message that came due since this client's last write: message
                // `j` is due at `(j + phase) / rate` (the epsilon absorbs rounding when
                // the write is exactly at a due time).
                let due = (elapsed * rate - conn.phase + 1e-6).floor() as i64 + 1;
                if conn.open && (conn.sent as i64) < due {
                    while (conn.sent as i64) < due {
                        received.session.prefix_bytes_sent += frames.push(conn, &stamps) as u64;
                        conn.sent += 1;
                        sent += 1;
                    }
                    // The acknowledgements due go with the messages.
                    if let Some(session) = conn.session.as_mut() {
                        session.take_acks(ns(now), &mut conn.out, &mut received.session);
                    }
                    conn.flush();
                    writes += 1;
                }
            }
        }
        if shape.session && now >= begin {
            let elapsed = now.duration_since(begin).as_secs_f64();
            while let Some((i, _)) = ack_turns.next(elapsed) {
                let conn = &mut conns[i];
                let Some(session) = conn.session.as_mut().filter(|_| conn.open) else {
                    continue;
                };
                if session.take_acks(ns(now), &mut conn.out, &mut received.session) {
                    conn.flush();
                    writes += 1;
                }
            }
        }
        if !sending {
            let expected = sent * (clients as u64 - 1);
            if received.delivered != last_delivered {
                last_delivered = received.delivered;
                quiet_since = now;
            }
            if received.delivered >= expected || now.duration_since(quiet_since) >= QUIET {
                break;
            }
            if now >= end + DRAIN_MAX {
                drain_cut = true;
                break;
            }
        }
    }
    // The server's CPU time from the first send to the last delivery: what all the
    // deliveries cost it, also those that came after the sending window.
    let server_cpu_seconds = cpu_pair(server).1 - cpu_at_begin.map_or(f64::NAN, |c| c.1);
    received.closed = conns.iter().filter(|c| !c.open).count() as u64;

    let expected = sent * (clients as u64 - 1);
    let delivered = received.delivered;
    let latency = &received.latency;
    let ms = |us: u64| us as f64 / 1000.0;
    let mut report = serde_json::json!({
        "docs": docs, "clients": clients, "size": size, "rate": rate,
        "seconds": duration.as_secs_f64(),
        "session": shape.session,
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "ratio": if expected == 0 { 0.0 } else { delivered as f64 / expected as f64 },
        "offered_deliveries_per_sec": expected as f64 / send_wall,
        "deliveries_per_sec": delivered as f64 / send_wall,
        "p50_ms": ms(latency.value_at_quantile(0.50)),
        "p99_ms": ms(latency.value_at_quantile(0.99)),
        "max_ms": ms(latency.max()),
        "connect_p50_ms": ms(connect.value_at_quantile(0.50)),
        "connect_p99_ms": ms(connect.value_at_quantile(0.99)),
        "closed_connections": received.closed,
        "drain_cut_short": drain_cut,
        "reads": received.reads,
        "writes": writes,
        // On the wire, after the upgrade (and after a session's hello) up to the end of
        // the drain.
        "bytes_read": received.bytes_read,
        "bytes_written": conns.iter().map(|c| c.bytes_written).sum::<u64>(),
        "protocol_errors": received.protocol_errors,
        "tick_ms": tick * 1000.0,
        "poll_ms": shape.poll.as_secs_f64() * 1000.0,
        "write_late_p99_ms": ms(late.value_at_quantile(0.99)),
        "write_late_max_ms": ms(late.max()),
        "generator_cpu_share": generator_cpu,
        "generator_saturated": generator_cpu > SATURATED_SHARE,
        // null without --server-pid
        "server_cpu_share": server_cpu,
        "server_cpu_seconds": server_cpu_seconds,
    });
    if shape.session {
        let closed = close_sessions(
            &mut poll,
            &mut events,
            &mut conns,
            &mut scratch,
            start,
            &mut received,
        )?;
        let s = &received.session;
        let extra = serde_json::json!({
            // Gaps and duplicates in the host's numbers, and malformed frames: each an
            // error (also those read while closing).
            "session_errors": s.errors(),
            "session_gaps": s.gaps,
            "session_duplicates": s.duplicates,
            "session_malformed": s.malformed,
            "session_acks_sent": s.acks_sent,
            "session_acks_received": s.acks_received,
            "session_ack_bytes_sent": s.ack_bytes_sent,
            "session_ack_bytes_received": s.ack_bytes_received,
            "session_prefix_bytes_sent": s.prefix_bytes_sent,
            "session_prefix_bytes_received": s.prefix_bytes_received,
            // Messages sent that the host had not acknowledged when the sessions closed.
            "session_unacked": conns.iter().filter_map(|c| c.session.as_ref()).map(Session::unacked).sum::<u64>(),
            "sessions_closed_cleanly": closed,
        });
        if let (Some(report), serde_json::Value::Object(extra)) = (report.as_object_mut(), extra) {
            report.extend(extra);
        }
    }
    drop(conns);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_spread_each_tick_over_the_clients() {
        let mut turns = Turns::new(0.05, 4);
        let mut order = Vec::new();
        while let Some((i, late)) = turns.next(0.1) {
            order.push(i);
            assert!((0.0..=0.1).contains(&late));
        }
        // Turns at 0, 12.5, 25, 37.5 ms, then again from 50 ms; 100 ms is the next one.
        assert_eq!(order, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(turns.next(0.1124), None);
        assert_eq!(turns.next(0.1125).map(|t| t.0), Some(1));
    }
}
