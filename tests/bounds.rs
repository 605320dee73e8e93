//! Bounded by construction: each attack on the server's memory, disk or instance pool,
//! tried against the real binary, ends at the bound the README's limits table states.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A 1 MiB queue, and rates no flood reaches: the rate limits (tests/edge.rs) would stop
/// the flooder before the queue bound under test is reached.
const FLOOD_CONFIG: &str = "[limits]\nmax_queued_bytes = 1048576\nmax_messages_per_sec = 4000000000\nmax_bytes_per_sec = 1000000000000\n";

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn empty_frames_cannot_grow_a_queue_past_its_bound() -> anyhow::Result<()> {
    let server = Server::start_with_config(&["relay"], 1, FLOOD_CONFIG)?;
    // A member that never reads, and a sender of empty text frames.
    let _sleeper = raw_upgrade(server.addr(0), "/ws/relay/empty").await?;
    let mut sender = raw_upgrade(server.addr(0), "/ws/relay/empty").await?;
    let rss_before = server.rss_bytes()?;
    // A million empty frames: 6 bytes each on the wire, about 55 bytes each in a queue
    // that counted payload only.
    let batch: Vec<u8> = (0..10_000)
        .flat_map(|_| client_frame(true, 1, b""))
        .collect();
    for _ in 0..100 {
        sender.write_all(&batch).await?;
    }
    // Every frame has gone through the document.
    wait_for_metric(
        server.addr(0),
        "wasmroom_messages_received_total",
        &[],
        1_000_000.0,
    )
    .await?;
    wait_for_metric(
        server.addr(0),
        "wasmroom_closes_total",
        &[r#"code="1008""#],
        1.0,
    )
    .await?;
    let grown = server.rss_bytes()?.saturating_sub(rss_before);
    eprintln!("server grew by {} KiB", grown >> 10);
    // The queue bound (1 MiB, each frame counted with its overhead) plus a stated
    // constant for buffers and allocator slack.
    assert!(grown < MIB + 16 * MIB, "grew by {grown} bytes");
    Ok(())
}

#[tokio::test]
async fn announced_bodies_cost_nothing_until_their_bytes_arrive() -> anyhow::Result<()> {
    let server =
        Server::start_with_config(&["relay"], 1, "[limits]\nhandshake_timeout_ms = 60000\n")?;
    let rss_before = server.rss_bytes()?;
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(server.addr(0)).await?;
        let head = format!(
            "POST /docs/relay/body-{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        held.push(s);
    }
    // Every head has reached the lane (it counts the connections) before measuring.
    server
        .wait_for_stats(0, |s| s["connections"].as_u64() >= Some(1000))
        .await?;
    let grown = server.rss_bytes()?.saturating_sub(rss_before);
    eprintln!(
        "1,000 body-less heads grew the server by {} KiB",
        grown >> 10
    );
    // Far below the per-lane budget for bodies in flight (64 MiB): without a body, a
    // request holds its connection's task and head only.
    assert!(grown < 32 * MIB, "grew by {grown} bytes");
    Ok(())
}

#[tokio::test]
async fn bodies_in_flight_share_the_lanes_budget() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        &["relay"],
        1,
        "[limits]\nmax_message_bytes = 1048576\nmax_incoming_bytes_per_lane = 2621440\n",
    )?;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(server.addr(0)).await?;
        let head =
            format!("POST /docs/relay/b{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        s.write_all(&vec![b'x'; 1_000_000]).await?;
        held.push(s);
    }
    // Two bodies hold about 2 MiB of the 2.5 MiB: a third cannot take 600 KiB more.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = post_part(server.addr(0), "/docs/relay/b3", 600 * 1024).await?;
        if status == 503 {
            assert!(body.contains("server busy"), "{body}");
            break;
        }
        // The held bodies may not have arrived yet.
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "never refused: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_metric(
        server.addr(0),
        "wasmroom_rejected_total",
        &[r#"reason="busy""#],
        1.0,
    )
    .await?;
    // Once they are gone the budget is free again.
    drop(held);
    let deadline = std::time::Instant::now() + PATIENCE;
    while http(server.addr(0), "POST", "/docs/relay/b3", &[b'x'; 1000])
        .await?
        .0
        != 202
    {
        anyhow::ensure!(std::time::Instant::now() < deadline, "budget never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends the head of a POST announcing `len` bytes and then `len` bytes, reading the
/// answer meanwhile: a server that refuses early may close before the body is sent.
async fn post_part(
    addr: std::net::SocketAddr,
    path: &str,
    len: usize,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let s = TcpStream::connect(addr).await?;
    let (mut read, mut write) = s.into_split();
    let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\n\r\n");
    let writing = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        write.write_all(&vec![b'p'; len]).await?;
        anyhow::Ok(write)
    });
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut raw)).await??;
    let _ = writing.await;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[tokio::test]
async fn reading_new_documents_writes_nothing_and_they_leave_memory() -> anyhow::Result<()> {
    let server = Server::start(
        &["chat"],
        1,
        &[
            "--checkpoint",
            "1",
            "--config",
            &config_file("http_idle_grace_ms = 300\n")?,
        ],
    )?;
    for i in 0..50 {
        let (status, _) = http(server.addr(0), "GET", &format!("/docs/chat/new-{i}"), b"").await?;
        assert_eq!(status, 200);
    }
    // Opened by HTTP alone, they leave memory after the short grace...
    server
        .wait_for_stats(0, |s| s["documents"] == 0 && s["unsaved"] == 0)
        .await?;
    // ...and leave nothing on disk: their state is the state they opened with.
    let files = snapshot_files(server.data.path());
    assert!(files.is_empty(), "{files:?}");
    // A document that did change is saved as before.
    let mut ws = server.connect(0, "/ws/chat/changed?name=ann").await?;
    recv_json(&mut ws).await?;
    send_text(&mut ws, "hello").await?;
    drop(ws);
    let deadline = std::time::Instant::now() + PATIENCE;
    while snapshot_files(server.data.path()).is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the change was never saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn one_address_cannot_open_documents_without_end() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        &["relay"],
        1,
        "[limits]\nopen_burst_per_address = 3\nopen_rate_per_address = 1\n",
    )?;
    let mut live = Vec::new();
    for i in 0..3 {
        live.push(server.connect(0, &format!("/ws/relay/o{i}")).await?);
    }
    let (status, body) = refused(&server.url(0, "/ws/relay/o3")).await?;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many new documents"), "{body}");
    let (status, _) = http(server.addr(0), "GET", "/docs/relay/o4", b"").await?;
    assert_eq!(status, 429);
    // Joining a live document opens nothing and is not limited.
    let _joined = server.connect(0, "/ws/relay/o0").await?;
    assert_eq!(
        metric(
            server.addr(0),
            "wasmroom_rejected_total",
            &[r#"reason="open_rate""#]
        )
        .await?,
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn a_message_left_unfinished_is_closed_with_1008() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        &["relay"],
        1,
        "[limits]\nmessage_timeout_ms = 1000\nping_interval_ms = 200\n",
    )?;
    let staller = server.connect(0, "/ws/relay/frag").await?;
    let mut other = server.connect(0, "/ws/relay/frag").await?;
    let (mut sink, mut stream) = futures_util::StreamExt::split(staller);
    let first = Frame::message(b"abc".to_vec(), OpCode::Data(Data::Text), false);
    sink.send(Message::Frame(first)).await?;
    // Control frames keep coming (pings, and the pongs the client library answers the
    // server's pings with): they must not keep the message open.
    let pinging = async {
        loop {
            sink.send(Message::Ping(Default::default())).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let closed = async {
        loop {
            match futures_util::StreamExt::next(&mut stream).await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    };
    let code = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            code = closed => Ok(code),
            err = pinging => err.map(|_| None),
        }
    })
    .await??;
    assert_eq!(code, Some(1008));
    // The document goes on for the others.
    let mut third = server.connect(0, "/ws/relay/frag").await?;
    send_text(&mut other, "still here").await?;
    assert_eq!(recv_text(&mut third).await?, "still here");
    Ok(())
}

#[tokio::test]
async fn partial_messages_share_the_lanes_budget() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        &["relay"],
        1,
        "[limits]\nmax_message_bytes = 1048576\nmax_incoming_bytes_per_lane = 1048576\n",
    )?;
    let mut first = raw_upgrade(server.addr(0), "/ws/relay/big").await?;
    let mut second = raw_upgrade(server.addr(0), "/ws/relay/big").await?;
    let mut observer = server.connect(0, "/ws/relay/big").await?;
    let part = vec![b'a'; 600 * 1024];
    first.write_all(&client_frame(false, 2, &part)).await?;
    // The first partial message holds 600 KiB of the lane's 1 MiB: wait until the lane has
    // it, then the second cannot fit and is closed with 1013 (try again later).
    wait_for_budget_use(&server).await?;
    second.write_all(&client_frame(false, 2, &part)).await?;
    assert_eq!(raw_close_code(&mut second).await?, Some(1013));
    // The first completes its message and is delivered.
    first.write_all(&client_frame(true, 0, b"end")).await?;
    match recv(&mut observer).await? {
        Message::Binary(b) => assert_eq!(b.len(), part.len() + 3),
        other => anyhow::bail!("unexpected {other:?}"),
    }
    Ok(())
}

/// Waits until the lane holds a partial message (the relay sees nothing of it, so the
/// sign is that a 600 KiB POST no longer fits the 1 MiB budget).
async fn wait_for_budget_use(server: &Server) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = post_part(server.addr(0), "/docs/relay/probe", 600 * 1024).await?;
        if status == 503 {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the partial message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_its_answer_is_dropped() -> anyhow::Result<()> {
    // Building 16 MB takes the guest longer than the default deadline.
    let server =
        Server::start_with_config(&["probe"], 1, "[plugin.probe]\nguest_deadline_ms = 5000\n")?;
    // 16 MB: more than the kernel's socket buffers hold, so the write blocks.
    let mut s = TcpStream::connect(server.addr(0)).await?;
    s.write_all(b"GET /docs/probe/big?size=16000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    server
        .wait_for_stats(0, |s| s["connections"].as_u64() >= Some(1))
        .await?;
    // Never read: the lane gives up after its write timeout and the connection is gone.
    server.wait_for_stats(0, |s| s["connections"] == 0).await?;
    drop(s);
    Ok(())
}

#[tokio::test]
async fn a_panic_in_a_lane_ends_the_process_after_the_others_save() -> anyhow::Result<()> {
    let mut server = Server::start_with_env(
        &["chat"],
        2,
        &[],
        &[("WASMROOM_TEST_PANIC_PATH", "/panic-now")],
    )?;
    let mut ws = server.connect(1, "/ws/chat/kept?name=ann").await?;
    recv_json(&mut ws).await?;
    send_text(&mut ws, "before the panic").await?;
    let deadline = std::time::Instant::now() + PATIENCE;
    while !http(server.addr(1), "GET", "/docs/chat/kept", b"")
        .await?
        .1
        .contains("before the panic")
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the line never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request's connection task panics on lane 0.
    let _ = http(server.addr(0), "GET", "/panic-now", b"").await;
    // Everyone is told to reconnect, and the process exits non-zero for its supervisor.
    assert_eq!(expect_close(&mut ws).await?.0, 1012);
    let status = server.wait_for_exit()?;
    assert_eq!(status.code(), Some(70), "{status}");
    let fatal = server.wait_for_log("fatal: a lane's connection task panicked")?;
    assert!(
        fatal.contains("the test asked this lane to panic"),
        "{fatal}"
    );
    // What the other lanes held was saved.
    let server = server.restart()?;
    let (_, history) = http(server.addr(0), "GET", "/docs/chat/kept", b"").await?;
    assert!(history.contains("before the panic"), "{history}");
    Ok(())
}

#[tokio::test]
async fn durations_that_do_not_fit_the_clock_are_refused_at_start() -> anyhow::Result<()> {
    let config = config_file("checkpoint_secs = 18446744073709551615\n")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args(["serve", "--port", "0", "--config", &config])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checkpoint_secs") && stderr.contains("at most a day"),
        "{stderr}"
    );
    Ok(())
}

/// A config file holding `text`; returns its path.
fn config_file(text: &str) -> anyhow::Result<String> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(file.path(), text)?;
    let (_, path) = file.keep()?;
    Ok(path.to_string_lossy().into_owned())
}

/// The snapshot files under a data directory.
fn snapshot_files(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![data.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "snap") {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn hand_overs_count_toward_the_owner_lanes_cap_while_on_their_way() -> anyhow::Result<()> {
    // Four connections per lane; probe calls may run two seconds (long enough to hold
    // lane 1 while connections pile up for it).
    let server = Server::start_with_config(
        &["probe", "relay"],
        2,
        "[limits]\nmax_connections_per_lane = 4\n[plugin.probe]\nguest_deadline_ms = 2000\n",
    )?;
    let spin_doc = owned_by_lane_1(&server, "probe").await?;
    let relay_doc = owned_by_lane_1(&server, "relay").await?;
    let mut spinner = server.connect(1, &format!("/ws/probe/{spin_doc}")).await?;
    send_text(&mut spinner, "spin").await?;
    // Lane 1 is busy in the spin. Sockets for its documents arrive on lane 0, which
    // hands them over: three fit lane 1's cap beside the spinner...
    let url = server.url(0, &format!("/ws/relay/{relay_doc}"));
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        waiting.push(tokio::spawn(async move {
            tokio_tungstenite::connect_async(url).await
        }));
    }
    server
        .wait_for_stats(0, |s| s["handed_over"].as_u64() >= Some(3))
        .await?;
    // ...the fourth is refused by lane 0 at once, while lane 1 is still in the spin.
    let (status, body) = refused(&url).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("lane at capacity"), "{body}");
    assert!(
        nothing_within(&mut spinner, Duration::ZERO).await,
        "the spin ended before the refusal: lane 1's cap was not counted in advance"
    );
    // Once lane 1 is free it serves the three it had room for.
    assert_eq!(expect_close(&mut spinner).await?.0, 1011);
    for w in waiting {
        w.await??;
    }
    Ok(())
}

/// A document of `plugin` that lane 1 owns (found by asking through lane 0 and watching
/// lane 1's hand-over count).
async fn owned_by_lane_1(server: &Server, plugin: &str) -> anyhow::Result<String> {
    for i in 0..100 {
        let doc = format!("{plugin}-{i}");
        let before = adopted(server).await?;
        http(server.addr(0), "GET", &format!("/docs/{plugin}/{doc}"), b"").await?;
        if adopted(server).await? > before {
            return Ok(doc);
        }
    }
    anyhow::bail!("no document of {plugin} on lane 1 among 100")
}

async fn adopted(server: &Server) -> anyhow::Result<u64> {
    let (_, body) = http(server.addr(1), "GET", "/stats", b"").await?;
    let stats: serde_json::Value = serde_json::from_str(&body)?;
    Ok(stats["adopted"].as_u64().unwrap_or(0))
}
