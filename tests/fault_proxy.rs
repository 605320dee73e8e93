//! The fault-injection proxy of the tests (`support::fault_proxy`): relaying, stalls,
//! delays, cuts and refusals against an echo server on plain threads (so nothing here
//! shares a runtime with the proxy), then a real PostgreSQL client through it.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::PATIENCE;
use support::fault_proxy::{Direction, FaultProxy};
use support::postgres::Postgres;

/// How long a test waits to show that bytes are held. "Not delivered yet" can only be
/// shown by waiting: a relay on loopback delivers in well under a millisecond, so a broken
/// stall fails within this; a working one passes however slow the machine is.
const ABSENCE: Duration = Duration::from_millis(200);

/// An echo server on plain threads: returns every byte, ends when its client ends.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start() -> anyhow::Result<Echo> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut from = conn.try_clone()?;
                    std::io::copy(&mut from, &mut conn)?;
                    conn.shutdown(Shutdown::Write)
                });
            }
        });
        Ok(Echo { addr, stop })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept
    }
}

fn connect(proxy: &FaultProxy) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(proxy.addr())?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn read_n(stream: &mut TcpStream, n: usize) -> anyhow::Result<Vec<u8>> {
    let mut got = vec![0; n];
    stream.read_exact(&mut got)?;
    Ok(got)
}

/// Sends `text` and expects it back.
fn echoes(stream: &mut TcpStream, text: &str) -> anyhow::Result<()> {
    stream.write_all(text.as_bytes())?;
    assert_eq!(read_n(stream, text.len())?, text.as_bytes());
    Ok(())
}

/// Nothing arrives within [`ABSENCE`].
fn nothing_arrives(stream: &mut TcpStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(ABSENCE))?;
    let read = stream.read(&mut [0; 64]);
    stream.set_read_timeout(Some(PATIENCE))?;
    match read {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
        other => anyhow::bail!("expected nothing while stalled, got {other:?}"),
    }
}

/// The proxy closed this connection: end of stream or a reset, nothing else.
fn closed(stream: &mut TcpStream) -> anyhow::Result<()> {
    match stream.read(&mut [0; 64]) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        other => anyhow::bail!("expected the connection closed, got {other:?}"),
    }
}

#[test]
fn relays_both_ways_counts_and_records_and_stops_when_dropped() -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let proxy = FaultProxy::start(echo.addr)?;
    let mut client = connect(&proxy)?;
    // More than the socket buffers hold, written from another thread while we read.
    let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = client.try_clone()?;
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || writer.write_all(&to_send));
    assert!(read_n(&mut client, sent.len())? == sent, "bytes changed");
    writing.join().unwrap()?;

    // Counted once written, which may be just after the client read the last byte.
    let n = sent.len() as u64;
    let conn = proxy.wait_for(
        |c| c.upstream_bytes == n && c.downstream_bytes == n,
        PATIENCE,
    )?;
    assert_eq!(proxy.connections().len(), 1);
    assert_eq!(conn.peer, client.local_addr()?);
    assert_eq!(conn.upstream_head, sent[..4096]);
    // An end of stream is passed on, and the echo's end comes back.
    client.shutdown(Shutdown::Write)?;
    closed(&mut client)?;
    proxy.wait_for(|c| !c.open, PATIENCE)?;
    assert_eq!(proxy.counters().finished, 1, "{}", proxy.report());

    let mut open = connect(&proxy)?;
    let addr = proxy.addr();
    drop(proxy);
    closed(&mut open)?;
    assert!(TcpStream::connect(addr).is_err(), "still listening");
    Ok(())
}

#[test]
fn a_stalled_direction_holds_bytes_until_resumed_then_delivers_them_in_order() -> anyhow::Result<()>
{
    let echo = Echo::start()?;
    let proxy = FaultProxy::start(echo.addr)?;
    let mut before = connect(&proxy)?;
    echoes(&mut before, "up")?;
    proxy.stall(Direction::Downstream);
    // A connection accepted during the stall is stalled too.
    let mut during = connect(&proxy)?;
    for piece in ["one", "two", "three"] {
        before.write_all(piece.as_bytes())?;
        during.write_all(piece.as_bytes())?;
    }
    // Upstream still flows: the echo server got them all and answered.
    proxy.wait_for(|c| c.id.0 == 0 && c.upstream_bytes == 13, PATIENCE)?;
    proxy.wait_for(|c| c.id.0 == 1 && c.upstream_bytes == 11, PATIENCE)?;
    nothing_arrives(&mut before)?;
    nothing_arrives(&mut during)?;

    proxy.resume(Direction::Downstream);
    assert_eq!(read_n(&mut before, 11)?, b"onetwothree");
    assert_eq!(read_n(&mut during, 11)?, b"onetwothree");
    echoes(&mut during, "flowing again")?;

    // Stalled upstream: nothing reaches the server, so nothing comes back.
    proxy.stall(Direction::Upstream);
    during.write_all(b"held")?;
    nothing_arrives(&mut during)?;
    assert_eq!(proxy.connections()[1].upstream_bytes, 24);
    proxy.resume(Direction::Both);
    assert_eq!(read_n(&mut during, 4)?, b"held");
    Ok(())
}

#[test]
fn a_cut_resets_every_connection_even_stalled_and_new_ones_still_relay() -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let proxy = FaultProxy::start(echo.addr)?;
    let mut first = connect(&proxy)?;
    let mut second = connect(&proxy)?;
    echoes(&mut first, "a")?;
    echoes(&mut second, "b")?;
    proxy.stall(Direction::Both);
    second.write_all(b"held")?;
    proxy.cut();
    closed(&mut first)?;
    closed(&mut second)?;
    proxy.wait_for(|c| c.id.0 == 0 && !c.open, PATIENCE)?;
    proxy.wait_for(|c| c.id.0 == 1 && !c.open, PATIENCE)?;
    assert_eq!(proxy.counters().cut, 2, "{}", proxy.report());

    proxy.resume(Direction::Both);
    let mut third = connect(&proxy)?;
    echoes(&mut third, "after the cut")?;
    Ok(())
}

#[test]
fn refusing_resets_new_connections_and_leaves_current_ones() -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let proxy = FaultProxy::start(echo.addr)?;
    let mut current = connect(&proxy)?;
    echoes(&mut current, "before")?;
    proxy.refuse(true);
    let mut refused = connect(&proxy)?;
    closed(&mut refused)?;
    assert_eq!(proxy.counters().refused, 1);
    assert_eq!(proxy.connections().len(), 1);
    echoes(&mut current, "still relayed")?;

    proxy.refuse(false);
    let mut later = connect(&proxy)?;
    echoes(&mut later, "accepted again")?;
    Ok(())
}

#[test]
fn a_delay_holds_each_chunk_both_ways_and_keeps_order() -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let proxy = FaultProxy::start(echo.addr)?;
    let delay = Duration::from_millis(150);
    proxy.delay(delay);
    let mut client = connect(&proxy)?;
    let started = Instant::now();
    echoes(&mut client, "x")?;
    // A lower bound only: each way waits at least the delay.
    assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());

    // Many small writes, read by the proxy as many chunks, each held on its own.
    let mut writer = client.try_clone()?;
    let writing = std::thread::spawn(move || {
        for i in 0..300 {
            writer.write_all(format!("{i:04},").as_bytes())?;
            writer.flush()?;
        }
        std::io::Result::Ok(())
    });
    let expected: String = (0..300).map(|i| format!("{i:04},")).collect();
    let got = read_n(&mut client, expected.len())?;
    writing.join().unwrap()?;
    assert_eq!(String::from_utf8(got)?, expected);
    Ok(())
}

#[test]
fn one_connection_found_by_what_it_sent_is_stalled_and_cut_alone() -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let proxy = FaultProxy::start(echo.addr)?;
    let mut other = connect(&proxy)?;
    let mut listener = connect(&proxy)?;
    echoes(&mut other, "SELECT 1;")?;
    echoes(&mut listener, "LISTEN wasmroom_events;")?;
    let found = proxy.find(|c| c.saw_upstream(b"LISTEN ")).unwrap();
    assert_eq!(found.peer, listener.local_addr()?);
    assert_eq!(proxy.connections()[1].id, found.id);

    proxy.stall_one(found.id, Direction::Both);
    listener.write_all(b"held")?;
    echoes(&mut other, "not held")?;
    nothing_arrives(&mut listener)?;
    proxy.resume_one(found.id, Direction::Both);
    assert_eq!(read_n(&mut listener, 4)?, b"held");

    proxy.cut_one(found.id);
    closed(&mut listener)?;
    echoes(&mut other, "still relayed")?;
    proxy.wait_for(|c| c.id == found.id && !c.open, PATIENCE)?;
    assert_eq!(proxy.counters().cut, 1);
    Ok(())
}

#[tokio::test]
async fn a_postgres_query_waits_out_a_stall_and_fails_after_a_cut() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let proxy = FaultProxy::start(pg.addr())?;
    let url = pg.url_through(proxy.addr());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let value = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    assert_eq!(value(client.query_one("SELECT 1", &[]).await?), 1);
    client.batch_execute("LISTEN wasmroom_test").await?;
    assert!(proxy.find(|c| c.saw_upstream(b"LISTEN ")).is_some());

    proxy.stall(Direction::Both);
    let query = client.query_one("SELECT 2", &[]);
    let mut query = std::pin::pin!(query);
    assert!(
        tokio::time::timeout(ABSENCE, &mut query).await.is_err(),
        "the query completed through a stall\n{}",
        proxy.report()
    );
    proxy.resume(Direction::Both);
    assert_eq!(value(tokio::time::timeout(PATIENCE, query).await??), 2);

    proxy.cut();
    let after = tokio::time::timeout(PATIENCE, client.query_one("SELECT 3", &[])).await?;
    assert!(after.is_err(), "a query through a cut connection succeeded");
    assert!(client.is_closed());
    assert!(tokio::time::timeout(PATIENCE, connection).await??.is_err());
    Ok(())
}
