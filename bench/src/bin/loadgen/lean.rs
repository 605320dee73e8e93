//! The `run` mode: relay load from one thread that costs little per message, so that the
//! server, not the generator, sets the ceiling.
//!
//! One thread, one `mio` poll over every socket, polled every 0.25 ms. Each client
//! writes once per tick (50 ms by default, or once per message if it sends less often), at
//! its own place in the tick so that the writes are spread evenly: every message that came
//! due since its last write is appended to the socket's reusable out buffer as a
//! ready-masked frame (a template with only the 16-digit timestamp rewritten), and the
//! buffer goes out in one `write`. Reads go into one shared buffer and are parsed in place;
//! a socket keeps only the bytes of a frame that has not fully arrived. Nothing is
//! allocated per message.
//!
//! Why ticks: on loopback the sender of a segment pays for the receiver's TCP processing
//! too, so a `write` costs the generator about 10 us whatever its size; one write per
//! message would cost it most of its core at 400k deliveries (48k messages) per second.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::frame::{
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, ParseError, apply_mask,
    encode_masked, parse_header, read_hex16, write_hex16,
};

/// Above this share of its core the generator's own delays may show in the results: such
/// a point is marked `generator_saturated` and is not a valid ceiling.
const SATURATED_SHARE: f64 = 0.70;
/// The drain after the sending window ends once nothing has arrived for this long, or
/// after `DRAIN_MAX` (an overloaded server could take minutes to work off its backlog;
/// what has not arrived by then counts as not delivered).
const QUIET: Duration = Duration::from_secs(1);
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Any key does; the server does the same work for every key.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x3c];

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
}

struct Conn {
    stream: TcpStream,
    /// The start of a frame that has not fully arrived.
    partial: Vec<u8>,
    /// Frames for the server; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    /// Messages sent so far, and where in each tick this client writes (0..1): the
    /// clients are spread over the tick so that they do not write in lockstep.
    sent: u64,
    phase: f64,
    open: bool,
}

impl Conn {
    /// One `write` of what is pending (the rest waits for the socket to be writable).
    fn flush(&mut self) {
        if !self.open || self.written == self.out.len() {
            return;
        }
        loop {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.open = false,
            }
            break;
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }
}

#[derive(Default)]
struct Received {
    delivered: u64,
    /// `read` calls that returned data.
    reads: u64,
    /// Connections the server closed or broke.
    closed: u64,
    protocol_errors: u64,
}

/// Handles the complete frames at the start of `buf` (received at `now_ns`); returns how
/// many bytes they took and whether the server closed the connection. Pings and the
/// close are answered into `out`.
fn consume(
    buf: &[u8],
    now_ns: u64,
    out: &mut Vec<u8>,
    latency: &mut Histogram<u64>,
    received: &mut Received,
) -> Result<(usize, bool), ParseError> {
    let mut at = 0;
    while let Some(h) = parse_header(&buf[at..])? {
        let end = at + h.frame_len();
        if end > buf.len() {
            break;
        }
        let payload = &buf[at + h.payload_at..end];
        match h.opcode {
            OP_TEXT | OP_BINARY => {
                if let Some(sent_ns) = read_hex16(payload) {
                    let _ = latency.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                }
                received.delivered += u64::from(h.fin);
            }
            OP_CONTINUATION => received.delivered += u64::from(h.fin),
            OP_PING => encode_masked(out, OP_PONG, MASK, payload),
            OP_CLOSE => {
                encode_masked(out, OP_CLOSE, MASK, payload.get(..2).unwrap_or_default());
                return Ok((end, true));
            }
            _ => {}
        }
        at = end;
    }
    Ok((at, false))
}

/// The frame every message is, masked once: only the 16 timestamp digits at the returned
/// offset are rewritten per tick (with `masked_stamp`).
fn message_template(size: usize) -> (Vec<u8>, usize) {
    let mut payload = vec![b'x'; size];
    payload[..16].fill(b'0');
    let mut template = Vec::new();
    encode_masked(&mut template, OP_TEXT, MASK, &payload);
    let stamp_at = template.len() - size;
    (template, stamp_at)
}

/// A send time as the template's first 16 payload bytes, masked.
fn masked_stamp(ns: u64) -> [u8; 16] {
    let mut stamp = [0u8; 16];
    write_hex16(ns, &mut stamp);
    apply_mask(&mut stamp, MASK, 0);
    stamp
}

/// Connects and upgrades `path` (blocking; not measured). Returns the stream and any
/// bytes that came after the response head.
fn handshake(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<(std::net::TcpStream, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed during the upgrade of {path}");
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&head[..head.len().min(64)]);
            ensure!(
                head.starts_with(b"HTTP/1.1 101"),
                "upgrade of {path} refused: {}",
                status.lines().next().unwrap_or_default()
            );
            return Ok((stream, head.split_off(end + 4)));
        }
        ensure!(head.len() < 16 << 10, "response head of {path} too long");
    }
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
    let rest = base.strip_prefix("ws://").context("ws:// URLs only")?;
    let (host, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().context("the URL's host must be ip:port")?;

    let (template, stamp_at) = message_template(size);

    let start = Instant::now();
    let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    let mut poll = Poll::new()?;
    let mut connect = Histogram::<u64>::new(3)?;
    let mut conns = Vec::with_capacity(docs * clients);
    let total = docs * clients;
    for d in 0..docs {
        for _ in 0..clients {
            let t = Instant::now();
            let (stream, early) = handshake(
                addr,
                host,
                &format!("{prefix}/bench-{}", shape.first_doc + d),
            )?;
            connect.record(t.elapsed().as_micros().max(1) as u64)?;
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            let token = Token(conns.len());
            poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                stream,
                partial: early,
                out: Vec::with_capacity(4 * template.len()),
                written: 0,
                sent: 0,
                phase: token.0 as f64 / total as f64,
                open: true,
            });
        }
    }

    let mut events = Events::with_capacity(total.clamp(256, 8192));
    let mut scratch = vec![0u8; 256 << 10];
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // How late the generator wrote, against each client's schedule.
    let mut late = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut received = Received::default();
    let mut sent = 0u64;
    let mut writes = 0u64;
    let begin = Instant::now() + Duration::from_millis(200);
    let end = begin + duration;
    // Client `i` writes at `begin + (round + i / total) * tick`: the next one due is
    // `cursor` in `round`. A client that sends less than once per tick writes each
    // message when it is due.
    let tick = shape.tick.as_secs_f64().max(1.0 / rate);
    let (mut cursor, mut round) = (0usize, 0u64);
    let write_at = |round: u64, i: usize| (round as f64 + i as f64 / total as f64) * tick;
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
                read_ready(conn, &mut scratch, start, &mut latency, &mut received);
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
            let stamp = masked_stamp(ns(now));
            while write_at(round, cursor) <= elapsed {
                let behind = elapsed - write_at(round, cursor);
                let _ = late.record(((behind * 1e6) as u64).max(1));
                let conn = &mut conns[cursor];
                // Every message that came due since this client's last write: message
                // `j` is due at `(j + phase) / rate` (the epsilon absorbs rounding when
                // the write is exactly at a due time).
                let due = (elapsed * rate - conn.phase + 1e-6).floor() as i64 + 1;
                if conn.open && (conn.sent as i64) < due {
                    while (conn.sent as i64) < due {
                        conn.out.extend_from_slice(&template);
                        let at = conn.out.len() - template.len() + stamp_at;
                        conn.out[at..at + 16].copy_from_slice(&stamp);
                        conn.sent += 1;
                        sent += 1;
                    }
                    conn.flush();
                    writes += 1;
                }
                cursor += 1;
                if cursor == total {
                    (cursor, round) = (0, round + 1);
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
    drop(conns);

    let expected = sent * (clients as u64 - 1);
    let delivered = received.delivered;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(serde_json::json!({
        "docs": docs, "clients": clients, "size": size, "rate": rate,
        "seconds": duration.as_secs_f64(),
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
    }))
}

/// Reads what `conn` has into `scratch` (after the partial frame it kept), handles the
/// complete frames and keeps the incomplete rest.
fn read_ready(
    conn: &mut Conn,
    scratch: &mut Vec<u8>,
    start: Instant,
    latency: &mut Histogram<u64>,
    received: &mut Received,
) {
    let mut filled = conn.partial.len();
    scratch[..filled].copy_from_slice(&conn.partial);
    conn.partial.clear();
    let mut closed = false;
    loop {
        let space = scratch.len() - filled;
        let n = match conn.stream.read(&mut scratch[filled..]) {
            Ok(0) => {
                closed = true;
                0
            }
            Ok(n) => {
                received.reads += 1;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                closed = true;
                0
            }
        };
        filled += n;
        let now_ns = start.elapsed().as_nanos() as u64;
        let (used, close) =
            match consume(&scratch[..filled], now_ns, &mut conn.out, latency, received) {
                Ok(r) => r,
                Err(_) => {
                    received.protocol_errors += 1;
                    (filled, true)
                }
            };
        scratch.copy_within(used..filled, 0);
        filled -= used;
        if close {
            closed = true;
        }
        // A read that did not fill the buffer emptied the socket: with edge-triggered
        // readiness, later data raises a new event.
        if closed || n < space {
            break;
        }
        if filled == scratch.len() {
            // One frame larger than the buffer.
            scratch.resize(2 * scratch.len(), 0);
        }
    }
    if closed {
        conn.flush();
        conn.open = false;
        return;
    }
    conn.partial.extend_from_slice(&scratch[..filled]);
    conn.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_counts_messages_answers_pings_and_keeps_partial_frames() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&[0x81, 20]);
        buf.extend_from_slice(b"00000000000003e8xxxx"); // sent at 1000 ns
        buf.extend_from_slice(&[0x89, 2, b'h', b'i']);
        buf.extend_from_slice(&[0x01, 16]); // a fragment, then its end
        buf.extend_from_slice(b"00000000000007d0");
        buf.extend_from_slice(&[0x80, 1, b'z']);
        buf.extend_from_slice(&[0x81, 126, 0, 200, b'0']); // incomplete
        let mut out = Vec::new();
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut received = Received::default();
        let (used, closed) =
            consume(&buf, 5_001_000, &mut out, &mut latency, &mut received).unwrap();
        assert_eq!(used, buf.len() - 5);
        assert!(!closed);
        assert_eq!(received.delivered, 2);
        assert_eq!(latency.len(), 2);
        assert!(latency.equivalent(latency.max(), 5000));
        assert_eq!(out[0], 0x80 | OP_PONG);
        assert_eq!(out.len(), 2 + 4 + 2);

        let mut out = Vec::new();
        let close = [0x88, 2, 0x03, 0xe8, 0x81, 0];
        let (used, closed) = consume(&close, 0, &mut out, &mut latency, &mut received).unwrap();
        assert_eq!((used, closed), (4, true));
        assert_eq!(out[0], 0x80 | OP_CLOSE);
    }

    #[test]
    fn stamped_templates_are_masked_text_frames_with_the_send_time() {
        for size in [16, 100, 200] {
            let (mut frame, at) = message_template(size);
            frame[at..at + 16].copy_from_slice(&masked_stamp(0x1234_5678_9abc));
            // What a server sees: unmask the payload.
            assert_eq!(frame[0], 0x80 | OP_TEXT);
            let mut payload = frame[at..].to_vec();
            apply_mask(&mut payload, MASK, 0);
            assert_eq!(&frame[at - 4..at], &MASK);
            assert_eq!(payload.len(), size);
            assert_eq!(read_hex16(&payload), Some(0x1234_5678_9abc));
            assert!(payload[16..].iter().all(|&b| b == b'x'));
        }
    }
}
