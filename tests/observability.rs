//! Metrics, health, the admin API, JSON logs and `wasmroom top`, on the real binary.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::SinkExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A request with headers; returns status and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_owned()))
}

/// `/metrics` parsed by a Prometheus text-format parser.
async fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> anyhow::Result<Scrape> {
    let (status, body) = request(addr, "GET", "/metrics", headers).await?;
    ensure!(status == 200, "/metrics answered {status}: {body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines)?;
    // Every sample line must have been understood (histogram buckets fold into one).
    let sample_lines = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("_bucket{"))
        .count();
    let folded = parsed
        .samples
        .iter()
        .filter(|s| !matches!(s.value, prometheus_parse::Value::Histogram(_)))
        .count();
    ensure!(
        folded == sample_lines,
        "parsed {folded} of {sample_lines} samples:\n{body}"
    );
    Ok(Scrape(parsed))
}

struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// The sum of `name` over every sample whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

/// Scrapes until `check` holds (counters are updated as events complete).
async fn scrape_until(addr: SocketAddr, check: impl Fn(&Scrape) -> bool) -> anyhow::Result<Scrape> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = scrape(addr, &[]).await?;
        if check(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("metrics never satisfied the condition");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() -> anyhow::Result<()> {
    let mut server = Server::start(&["relay"], 2, &["--admin-port", "0"])?;
    let admin = server.admin_addr()?;
    let mut a = server.connect(0, "/ws/relay/room").await?;
    let mut b = server.connect(1, "/ws/relay/room").await?;
    for _ in 0..3 {
        send_text(&mut a, "hello").await?;
    }
    a.send(Message::binary(vec![1, 2, 3, 4])).await?;
    for _ in 0..3 {
        assert_eq!(recv_text(&mut b).await?, "hello");
    }
    assert_eq!(recv(&mut b).await?, Message::binary(vec![1, 2, 3, 4]));
    a.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await?;
    assert_eq!(refused(&server.url(0, "/ws/nope/x")).await?.0, 404);
    assert_eq!(
        http(server.addr(1), "GET", "/ws/relay/x", b"").await?.0,
        426
    );

    let m = scrape_until(admin, |m| {
        m.sum("wasmroom_closes_total", &[("code", "1000")]) == 1.0
            && m.sum(
                "wasmroom_guest_call_seconds_count",
                &[("export", "on-disconnect")],
            ) == 1.0
    })
    .await?;
    assert_eq!(m.sum("wasmroom_messages_received_total", &[]), 4.0);
    assert_eq!(m.sum("wasmroom_received_bytes_total", &[]), 19.0);
    assert_eq!(m.sum("wasmroom_messages_sent_total", &[]), 4.0);
    assert_eq!(m.sum("wasmroom_sent_bytes_total", &[]), 19.0);
    assert_eq!(m.sum("wasmroom_websockets", &[]), 1.0);
    assert_eq!(m.sum("wasmroom_documents", &[]), 1.0);
    assert_eq!(m.sum("wasmroom_instances", &[("plugin", "relay")]), 1.0);
    assert_eq!(
        m.sum("wasmroom_rejected_total", &[("reason", "unknown_plugin")]),
        1.0
    );
    assert_eq!(
        m.sum("wasmroom_rejected_total", &[("reason", "not_upgrade")]),
        1.0
    );
    assert_eq!(m.sum("wasmroom_rejected_total", &[]), 2.0);
    let calls = |export| {
        m.sum(
            "wasmroom_guest_call_seconds_count",
            &[("plugin", "relay"), ("export", export)],
        )
    };
    assert_eq!((calls("open"), calls("on-connect")), (1.0, 2.0));
    // Four messages, one call each, unless the host read some of them together: then
    // those are one `on-messages` call (the relay is built with the Rust SDK).
    let message_calls = calls("on-message") + calls("on-messages");
    assert!((1.0..=4.0).contains(&message_calls), "{message_calls}");
    assert_eq!(m.sum("wasmroom_reloads_total", &[("plugin", "relay")]), 1.0);
    let moved = m.sum("wasmroom_handed_over_total", &[]);
    assert_eq!(moved, m.sum("wasmroom_adopted_total", &[]));
    // The room lives on one of the two lanes: its other socket was handed over (and
    // the refused requests may have been too, to the owners of their ids).
    assert!(moved >= 1.0, "{moved}");
    // With an admin port, the metrics are only there (behind its token, when set).
    assert_eq!(http(server.addr(0), "GET", "/metrics", b"").await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn memory_of_a_grown_document_shows_in_the_plugin_figures() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let addr = server.addr(0);
    let mut big = server.connect(0, "/ws/probe/big").await?;
    let mut small = server.connect(0, "/ws/probe/small").await?;
    let before = scrape(addr, &[]).await?;
    let sum0 = before.sum("wasmroom_memory_bytes", &[("plugin", "probe")]);
    let largest0 = before.sum(
        "wasmroom_memory_largest_document_bytes",
        &[("plugin", "probe")],
    );
    ensure!(
        sum0 > 0.0 && largest0 > 0.0 && largest0 < sum0,
        "{sum0} {largest0}"
    );

    send_text(&mut big, "hoard 8").await?;
    assert_eq!(recv_text(&mut big).await?, "hoarding 8 MiB");
    let grown = scrape(addr, &[]).await?;
    let mib8 = 8.0 * 1024.0 * 1024.0;
    let sum1 = grown.sum("wasmroom_memory_bytes", &[("plugin", "probe")]);
    let largest1 = grown.sum(
        "wasmroom_memory_largest_document_bytes",
        &[("plugin", "probe")],
    );
    assert!(sum1 >= sum0 + mib8, "sum {sum0} -> {sum1}");
    assert!(
        largest1 >= largest0 + mib8,
        "largest {largest0} -> {largest1}"
    );

    // A trap frees the instance: its memory leaves the figures and the trap is counted.
    send_text(&mut big, "panic").await?;
    assert_eq!(expect_close(&mut big).await?.0, 1011);
    let after = scrape_until(addr, |m| m.sum("wasmroom_traps_total", &[]) == 1.0).await?;
    assert_eq!(
        after.sum(
            "wasmroom_traps_total",
            &[("plugin", "probe"), ("kind", "panic")]
        ),
        1.0
    );
    let sum2 = after.sum("wasmroom_memory_bytes", &[("plugin", "probe")]);
    assert_eq!(sum2, sum0 - largest0, "only the small document is left");
    assert_eq!(
        after.sum(
            "wasmroom_memory_largest_document_bytes",
            &[("plugin", "probe")]
        ),
        sum2
    );
    send_text(&mut small, "count").await?;
    assert_eq!(recv_text(&mut small).await?, "1");
    Ok(())
}

#[tokio::test]
async fn admin_api_needs_its_token_beyond_loopback() -> anyhow::Result<()> {
    // No token on a public address: the server refuses to start and says why.
    let plugins = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args([
            "serve",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--admin-bind",
            "0.0.0.0",
        ])
        .arg("--plugins")
        .arg(plugins.path())
        .env_remove("WASMROOM_ADMIN_TOKEN")
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");

    let config = "admin_port = 0\nadmin_bind = \"0.0.0.0\"\nadmin_token = \"s3cret\"\n";
    let mut server = Server::start_with_config(&["chat"], 1, config)?;
    let admin = server.admin_addr()?;
    let admin = SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let mut ws = server.connect(0, "/ws/chat/kept?name=ann").await?;
    let good = [("authorization", "Bearer s3cret")];
    let bad = [("authorization", "Bearer s3cre7")];

    for headers in [&[][..], &bad[..]] {
        assert_eq!(
            request(admin, "GET", "/admin/documents", headers).await?.0,
            401
        );
        assert_eq!(request(admin, "GET", "/metrics", headers).await?.0, 401);
        let evict = request(admin, "POST", "/admin/documents/chat/kept/evict", headers).await?;
        assert_eq!(evict.0, 401);
    }
    assert_eq!(request(admin, "GET", "/healthz", &[]).await?.0, 200);
    // The unauthorised eviction changed nothing: the document still relays. Chat does not echo
    // to the sender, so a second client shows when the message has been handled.
    let mut watcher = server.connect(0, "/ws/chat/kept?name=bob").await?;
    assert_eq!(recv_json(&mut watcher).await?["type"], "history");
    send_text(&mut ws, "still here").await?;
    assert_eq!(recv_json(&mut watcher).await?["text"], "still here");
    let m = scrape(admin, &good).await?;
    assert_eq!(m.sum("wasmroom_instances", &[("plugin", "chat")]), 1.0);

    let (status, body) = request(admin, "GET", "/admin/documents", &good).await?;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body)?;
    let doc = &listed["lanes"][0]["documents"][0];
    assert_eq!(doc["document"], "kept");
    assert_eq!(doc["connections"], 2);
    assert_eq!(doc["messages"], 1);
    assert!(doc["memory_bytes"].as_u64().unwrap_or(0) > 0, "{doc}");

    let saved = request(admin, "POST", "/admin/documents/chat/kept/snapshot", &good).await?;
    assert_eq!(saved.0, 200, "{}", saved.1);
    let m = scrape(admin, &good).await?;
    assert!(m.sum("wasmroom_snapshot_saves_total", &[("plugin", "chat")]) >= 1.0);
    assert!(
        m.sum(
            "wasmroom_snapshot_save_seconds_count",
            &[("plugin", "chat")]
        ) >= 1.0
    );
    assert_eq!(
        m.sum(
            "wasmroom_snapshot_save_failures_total",
            &[("plugin", "chat")]
        ),
        0.0
    );
    // The client answers the close frame while the eviction waits for it.
    let closed = tokio::spawn(async move { expect_close(&mut ws).await });
    let watcher_closed = tokio::spawn(async move { expect_close(&mut watcher).await });
    let evicted = request(admin, "POST", "/admin/documents/chat/kept/evict", &good).await?;
    assert_eq!(evicted.0, 200, "{}", evicted.1);
    assert_eq!(closed.await??.0, 1001);
    assert_eq!(watcher_closed.await??.0, 1001);
    let m = scrape(admin, &good).await?;
    assert_eq!(m.sum("wasmroom_instances", &[("plugin", "chat")]), 0.0);
    assert_eq!(m.sum("wasmroom_documents", &[]), 0.0);
    let gone = request(admin, "POST", "/admin/documents/chat/kept/evict", &good).await?;
    assert_eq!(gone.0, 404, "{}", gone.1);
    Ok(())
}

#[tokio::test]
async fn readyz_turns_unready_during_shutdown() -> anyhow::Result<()> {
    let mut server = Server::start(&["relay"], 1, &["--admin-port", "0"])?;
    let admin = server.admin_addr()?;
    assert_eq!(
        request(admin, "GET", "/readyz", &[]).await?,
        (200, "ready\n".into())
    );
    // A client that never answers the close frame keeps shutdown going for a while.
    let mut silent = tokio::net::TcpStream::connect(server.addr(0)).await?;
    silent
        .write_all(
            b"GET /ws/relay/d HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        )
        .await?;
    let mut response = [0u8; 12];
    silent.read_exact(&mut response).await?;
    assert_eq!(&response, b"HTTP/1.1 101");
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()?;
    ensure!(status.success());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, _) = request(admin, "GET", "/readyz", &[]).await?;
        if status == 503 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "/readyz stayed ready during shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(silent);
    assert!(server.terminate()?.success());
    Ok(())
}

#[tokio::test]
async fn json_logs_and_top() -> anyhow::Result<()> {
    let mut server = Server::start(
        &["relay"],
        2,
        &["--log-format", "json", "--admin-port", "0"],
    )?;
    let admin = server.admin_addr()?;
    let line = server.wait_for_log("listening on")?;
    let json: serde_json::Value = serde_json::from_str(&line).context("a JSON log line")?;
    assert_eq!(json["level"], "INFO");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("listening on"))
    );

    let mut ws = server.connect(0, "/ws/relay/watched").await?;
    send_text(&mut ws, "x").await?;
    let out = Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args(["top", "--once", "--admin", &admin.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8(out.stdout)?;
    let lanes: Vec<&str> = screen.lines().skip(1).take(2).collect();
    assert!(
        lanes.iter().all(|l| l.split_whitespace().count() == 7),
        "{screen}"
    );
    assert!(screen.contains("relay/watched"), "{screen}");
    Ok(())
}
