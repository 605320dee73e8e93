//! Security at the edge, against the real binary: which pages may open a document
//! (`Origin`), how fast a connection may send, how many sockets one address may hold,
//! and what a consumer's output may put on the wire and in the log.

mod support;

use std::net::SocketAddr;

use futures_util::SinkExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A one-shot HTTP request with `headers`; the whole answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw)).await??;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn pages_from_other_origins_are_refused_before_the_consumer() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        &["relay", "probe", "chat"],
        1,
        "[plugin.probe]\nallowed_origins = [\"https://*.example.org\", \"http://app.test:3000\"]\n[plugin.chat]\nallowed_origins = [\"*\"]\n",
    )?;
    let addr = server.addr(0);
    let own = format!("http://{addr}");
    let other_port = format!("http://127.0.0.1:{}", addr.port() + 1);
    // (plugin, Origin, expected status)
    let cases: [(&str, Option<&str>, u16); 10] = [
        ("relay", Some(&own), 101),
        ("relay", None, 101),
        ("relay", Some("https://evil.example"), 403),
        ("relay", Some(&other_port), 403),
        ("relay", Some("null"), 403),
        ("probe", Some("https://a.example.org"), 101),
        ("probe", Some("https://example.org"), 403),
        ("probe", Some("http://app.test:3000"), 101),
        ("probe", Some("http://app.test:3001"), 403),
        ("chat", Some("https://anywhere.net"), 101),
    ];
    let mut open = Vec::new();
    for (plugin, origin, expected) in cases {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        let (status, answer, stream) =
            handshake(addr, &format!("/ws/{plugin}/o"), &headers).await?;
        assert_eq!(status, expected, "{plugin} from {origin:?}: {answer}");
        if status == 403 {
            assert!(answer.ends_with("origin not allowed\n"), "{answer}");
        }
        open.push(stream);
    }
    assert_eq!(
        metric(addr, "wasmroom_rejected_total", &["reason=\"origin\""]).await?,
        5.0
    );
    // A refused page never reached a consumer: on-connect ran once per accepted socket.
    for (plugin, accepted) in [("relay", 2.0), ("probe", 2.0), ("chat", 1.0)] {
        let calls = metric(
            addr,
            "wasmroom_guest_call_seconds_count",
            &[&format!("plugin=\"{plugin}\""), "export=\"on-connect\""],
        )
        .await?;
        assert_eq!(calls, accepted, "{plugin}");
    }

    // `/docs`: the same rule; CORS headers only for pages the plugin names.
    let named = request(
        addr,
        "GET",
        "/docs/probe/o",
        &[("origin", "https://a.example.org")],
    )
    .await?;
    assert_eq!(status_of(&named), 200, "{named}");
    assert!(
        named.contains("access-control-allow-origin: https://a.example.org\r\n"),
        "{named}"
    );
    let same = request(addr, "GET", "/docs/relay/o", &[("origin", &own)]).await?;
    assert!(!same.to_lowercase().contains("access-control-"), "{same}");
    let refused = request(
        addr,
        "PUT",
        "/docs/relay/o",
        &[("origin", "https://evil.example")],
    )
    .await?;
    assert_eq!(status_of(&refused), 403, "{refused}");
    let preflight = request(
        addr,
        "OPTIONS",
        "/docs/probe/o",
        &[
            ("origin", "https://a.example.org"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await?;
    assert_eq!(status_of(&preflight), 204, "{preflight}");
    assert!(
        preflight.contains("access-control-allow-methods:"),
        "{preflight}"
    );
    Ok(())
}

#[tokio::test]
async fn a_flooder_is_closed_while_its_neighbour_goes_on() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        &["probe"],
        1,
        "[limits]\nmax_message_bytes = 4096\n[plugin.probe]\nmax_messages_per_sec = 20\n",
    )?;
    let mut calm = server.connect(0, "/ws/probe/flood").await?;
    let mut flooder = server.connect(0, "/ws/probe/flood").await?;
    // 20 a second after a burst of 40: 200 at once break it.
    for _ in 0..200 {
        if flooder.send(Message::text("count")).await.is_err() {
            break;
        }
    }
    assert_eq!(
        expect_close(&mut flooder).await?,
        (1008, "rate limit exceeded".into())
    );
    send_text(&mut calm, "echo still here").await?;
    assert_eq!(recv_text(&mut calm).await?, "still here");
    let addr = server.addr(0);
    wait_for_metric(
        addr,
        "wasmroom_rate_limited_total",
        &["reason=\"messages\""],
        1.0,
    )
    .await?;

    // Bytes: 100 a second, after a burst of one largest message (4 KiB).
    let server = Server::start_with_config(
        &["probe"],
        1,
        "[limits]\nmax_message_bytes = 4096\n[plugin.probe]\nmax_bytes_per_sec = 100\n",
    )?;
    let mut calm = server.connect(0, "/ws/probe/bytes").await?;
    let mut heavy = server.connect(0, "/ws/probe/bytes").await?;
    let big = format!("echo {}", "x".repeat(3000));
    for _ in 0..3 {
        if heavy.send(Message::text(big.clone())).await.is_err() {
            break;
        }
    }
    assert_eq!(expect_close(&mut heavy).await?.0, 1008);
    send_text(&mut calm, "echo fine").await?;
    assert_eq!(recv_text(&mut calm).await?, "fine");
    let addr = server.addr(0);
    wait_for_metric(
        addr,
        "wasmroom_rate_limited_total",
        &["reason=\"bytes\""],
        1.0,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_sockets() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 2, &["--proxy-headers"])?;
    let mut held = Vec::new();
    for i in 0..256 {
        // Over both lanes: the count is the process's, not a lane's.
        let (status, answer, stream) = handshake(server.addr(i % 2), "/ws/relay/many", &[]).await?;
        assert_eq!(status, 101, "socket {i}: {answer}");
        held.push(stream);
    }
    let (status, answer, _) = handshake(server.addr(0), "/ws/relay/many", &[]).await?;
    assert_eq!(status, 429, "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    // Another client address (as the proxy reports it) has its own count.
    let (status, _, _other) = handshake(
        server.addr(1),
        "/ws/relay/many",
        &[("x-forwarded-for", "192.0.2.9")],
    )
    .await?;
    assert_eq!(status, 101);
    // One registry for the process: any lane's scrape shows every lane.
    let rejected = metric(
        server.addr(0),
        "wasmroom_rejected_total",
        &["reason=\"address_connections\""],
    )
    .await?;
    assert_eq!(rejected, 1.0);
    // A socket that ends frees its place.
    drop(held.pop());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, _, stream) = handshake(server.addr(0), "/ws/relay/many", &[]).await?;
        if status == 101 {
            held.push(stream);
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the freed place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_consumer_cannot_answer_with_statuses_that_are_not_answers() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let addr = server.addr(0);
    for (asked, sent) in [
        (0, 500),
        (101, 500),
        (199, 500),
        (600, 500),
        (200, 200),
        (404, 404),
        (599, 599),
    ] {
        let answer = request(addr, "GET", &format!("/docs/probe/s?status={asked}"), &[]).await?;
        assert_eq!(status_of(&answer), sent, "status {asked}: {answer}");
    }
    for (asked, sent) in [
        (0, 403),
        (101, 403),
        (199, 403),
        (200, 403),
        (600, 403),
        (401, 401),
        (429, 429),
    ] {
        let (status, answer, _) =
            handshake(addr, &format!("/ws/probe/r?reject={asked}&reason=no"), &[]).await?;
        assert_eq!(status, sent, "rejection {asked}: {answer}");
    }
    // Logged once per document, not once per answer.
    let corrected = |lines: Vec<String>, doc: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains("instead (logged once per document)")
                    && l.contains(&format!("doc={doc}"))
            })
            .count()
    };
    let mut server = server;
    server.wait_for_log("logged once per document")?;
    assert_eq!(corrected(server.log_lines(), "s"), 1);
    Ok(())
}

#[tokio::test]
async fn text_from_consumers_cannot_forge_a_log_line() -> anyhow::Result<()> {
    let mut server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/logs").await?;
    send_text(&mut ws, "log hello\r\nFORGED LOG LINE\u{1b}[31m red").await?;
    assert_eq!(recv_text(&mut ws).await?, "logged");
    let line = server.wait_for_log("hello\\r\\nFORGED LOG LINE\\x1b[31m red")?;
    assert!(line.contains("WARN"), "{line}");
    // The consumer's `open` traps with the same kind of text.
    let _ = refused(&server.url(0, "/ws/probe/trap-open")).await;
    // Its panic message reaches the log through its stderr, a line per line, escaped.
    server.wait_for_log("FORGED OPEN LINE\\x1b[2K")?;
    for line in server.log_lines() {
        assert!(
            !line.starts_with("FORGED") && !line.contains('\u{1b}') && !line.contains('\r'),
            "a forged or raw line: {line:?}"
        );
    }
    Ok(())
}

/// What a client must never see of a trap: wasmtime's text, a backtrace, the guest's
/// panic message or its source paths.
fn assert_plain(what: &str, text: &str) {
    for inner in [
        "wasm",
        "backtrace",
        "panicked",
        "secret",
        "lib.rs",
        "probe was asked",
    ] {
        assert!(
            !text.contains(inner),
            "{what}: the client saw {inner:?}: {text}"
        );
    }
}

/// `/plugins`' `last_error` of the probe.
async fn last_error(server: &Server) -> anyhow::Result<String> {
    let entry = plugin_entry(server, "probe").await?;
    Ok(entry["last_error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_panic_in_on_connect_refuses_with_a_plain_reason() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let (status, body) = refused(&server.url(0, "/ws/probe/c?panic=secret-at-connect")).await?;
    assert_eq!((status, body.trim()), (500, "consumer crashed"));
    assert_plain("on-connect", &body);
    // The operator reads the trap and what the guest said, not the backtrace.
    let error = last_error(&server).await?;
    assert!(
        error.starts_with("c: trapped in on-connect: wasm trap: ")
            && error.contains("secret-at-connect"),
        "{error}"
    );
    assert!(!error.contains("wasm function"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_panic_in_on_request_answers_a_plain_500() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let path = "/docs/probe/r?panic=secret-at-request";
    let (status, body) = http(server.addr(0), "GET", path, b"").await?;
    assert_eq!((status, body.trim()), (500, "consumer crashed"));
    assert_plain("on-request", &body);
    let error = last_error(&server).await?;
    assert!(
        error.starts_with("r: trapped in on-request: ") && error.contains("secret-at-request"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_panic_in_open_answers_a_plain_500() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let (status, body) = http(server.addr(0), "GET", "/docs/probe/trap-open", b"").await?;
    assert_eq!((status, body.trim()), (500, "consumer crashed"));
    assert_plain("open over HTTP", &body);
    let (status, body) = refused(&server.url(0, "/ws/probe/trap-open")).await?;
    assert_eq!((status, body.trim()), (500, "consumer crashed"));
    assert_plain("open over WebSocket", &body);
    let error = last_error(&server).await?;
    assert!(
        error.starts_with("trap-open: trapped in open: ")
            && error.contains("probe refuses to open"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_panic_in_on_message_closes_1011_and_the_log_has_the_guests_words() -> anyhow::Result<()>
{
    let mut server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/m").await?;
    send_text(&mut ws, "panic").await?;
    let (code, reason) = expect_close(&mut ws).await?;
    assert_eq!((code, reason.as_str()), (1011, "consumer crashed"));
    // Rust's panic message is the guest's stderr, not part of the trap.
    let error = last_error(&server).await?;
    assert!(
        error.starts_with("m: trapped in on-message: ")
            && error.contains("probe was asked to panic"),
        "{error}"
    );
    assert!(!error.contains("wasm function"), "{error}");
    // The log's ERROR line has it all: the guest's words next to the trap, and the
    // backtrace.
    let line = server.wait_for_log("consumer trapped in on-message")?;
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("probe was asked to panic"), "{line}");
    assert!(line.contains("wasm function"), "{line}");
    Ok(())
}
