//! Webhooks against a real HTTP receiver standing in for the application's backend: every
//! event once and signed, a backend down then back with a bounded queue, a hanging backend
//! while messages flow.

mod support;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One POST the receiver got: its headers (names lower-case) and body.
type Post = (Vec<(String, String)>, Vec<u8>);

/// An HTTP server standing in for the application's backend: it records every POST
/// (headers and body) and answers 200, or never answers when `hang` is set.
struct Receiver {
    addr: std::net::SocketAddr,
    posts: tokio::sync::mpsc::UnboundedReceiver<Post>,
}

impl Receiver {
    async fn start(addr: &str, hang: bool) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, posts) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = serve_posts(stream, tx, hang).await;
                });
            }
        });
        Ok(Receiver { addr, posts })
    }

    /// The next POST as (event JSON, whether its signature verifies under `secret`).
    async fn next(&mut self, secret: &str) -> anyhow::Result<(Value, bool)> {
        let (headers, body) = tokio::time::timeout(PATIENCE, self.posts.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("receiver stopped"))?;
        let signature = headers
            .iter()
            .find(|(n, _)| n == "x-wasmroom-signature")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let expected = format!("sha256={}", hmac_hex(secret.as_bytes(), &body));
        Ok((serde_json::from_slice(&body)?, signature == expected))
    }
}

/// Reads HTTP/1.1 requests (kept alive) and answers each.
async fn serve_posts(
    mut stream: tokio::net::TcpStream,
    tx: tokio::sync::mpsc::UnboundedSender<Post>,
    hang: bool,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "body cut short");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[end..end + length].to_vec();
        buf.drain(..end + length);
        if hang {
            // Never answers: the host's request must time out on its own.
            std::future::pending::<()>().await;
        }
        let _ = tx.send((headers, body));
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const HOOK_SECRET: &str = "webhook-secret-0123456789";

fn webhook_config(plugin: &str, url: &str, extra: &str) -> String {
    format!(
        "idle_grace_secs = 1\ncheckpoint_secs = 1\n[plugin.{plugin}.webhook]\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\n{extra}\n"
    )
}

#[tokio::test]
async fn every_webhook_event_arrives_once_and_signed() -> anyhow::Result<()> {
    let mut receiver = Receiver::start("127.0.0.1:0", false).await?;
    let url = format!("http://{}/wasmroom", receiver.addr);
    let server = Server::start_with_config(&["textdoc"], 1, &webhook_config("textdoc", &url, ""))?;
    let mut ws = server.connect(0, "/ws/textdoc/minutes").await?;
    assert_eq!(recv_json(&mut ws).await?["type"], "doc");
    send_text(
        &mut ws,
        &json!({"type": "diff", "v": 0, "rid": 1, "steps": [{"op": "insert", "pos": 0, "text": "Agenda"}]}).to_string(),
    )
    .await?;
    assert_eq!(recv_json(&mut ws).await?["type"], "confirm");
    // The checkpoint (1 s) saves it; then the client leaves and the document closes.
    let mut seen = Vec::new();
    let mut connection = None;
    loop {
        let (event, signed) = receiver.next(HOOK_SECRET).await?;
        assert!(signed, "bad signature on {event}");
        assert_eq!(
            (event["plugin"].as_str(), event["document"].as_str()),
            (Some("textdoc"), Some("minutes"))
        );
        let kind = event["event"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "connected" => connection = event["connection"].as_u64(),
            "saved" => {
                // The consumer's own export: textdoc's `GET` answer.
                assert_eq!(event["export"]["source"], "on-request", "{event}");
                let body: Value = serde_json::from_str(event["export"]["body"].as_str().unwrap())?;
                assert_eq!(body, json!({"v": 1, "text": "Agenda"}));
                ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "done".into(),
                }))
                .await?;
            }
            "disconnected" => {
                assert_eq!(event["connection"].as_u64(), connection);
                assert_eq!(event["code"], 1000);
            }
            _ => {}
        }
        seen.push((event["id"].as_str().unwrap().to_owned(), kind.clone()));
        if kind == "closed" {
            break;
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["opened", "connected", "saved", "disconnected", "closed"],
        "{seen:?}"
    );
    let mut ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), seen.len(), "every event once");
    // The host counts a delivery once the receiver's answer is back, which can be just
    // after the receiver has handed the event to this test.
    let delivered = ["outcome=\"delivered\""];
    wait_for_metric(
        server.addr(0),
        "wasmroom_webhook_events_total",
        &delivered,
        5.0,
    )
    .await?;
    assert_eq!(
        metric(server.addr(0), "wasmroom_webhook_events_total", &delivered).await?,
        5.0
    );
    Ok(())
}

#[tokio::test]
async fn a_backend_that_was_down_gets_the_newest_events_within_the_bound() -> anyhow::Result<()> {
    // A port nobody listens on yet.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let url = format!("http://{addr}/hook");
    let config = webhook_config("probe", &url, "events = [\"connected\"]\nmax_pending = 5");
    let server = Server::start_with_config(&["probe"], 1, &config)?;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let mut ws = server.connect(0, "/ws/probe/busy").await?;
        // `whoami`-free: the probe echoes, which proves the socket is up.
        send_text(&mut ws, "echo up").await?;
        recv_text(&mut ws).await?;
        ids.push(ws);
    }
    let events = |outcome: &'static str| {
        let addr = server.addr(0);
        async move {
            metric(
                addr,
                "wasmroom_webhook_events_total",
                &[&format!("outcome=\"{outcome}\"")],
            )
            .await
        }
    };
    wait_for_metric(
        server.addr(0),
        "wasmroom_webhook_events_total",
        &["outcome=\"queued\""],
        8.0,
    )
    .await?;
    // Down for over ten seconds: six attempts, 0.2 s apart and doubling, failed.
    wait_for_metric(
        server.addr(0),
        "wasmroom_webhook_events_total",
        &["outcome=\"retried\""],
        6.0,
    )
    .await?;
    assert_eq!(events("dropped").await?, 3.0, "the oldest three made room");
    // The backend comes back: the five newest arrive, in order, and nothing else.
    let mut receiver = Receiver::start(&addr.to_string(), false).await?;
    let mut connections = Vec::new();
    for _ in 0..5 {
        let (event, signed) = receiver.next(HOOK_SECRET).await?;
        assert!(signed);
        connections.push(event["connection"].as_u64().unwrap());
    }
    assert!(
        connections.windows(2).all(|w| w[0] < w[1]),
        "{connections:?}"
    );
    wait_for_metric(
        server.addr(0),
        "wasmroom_webhook_events_total",
        &["outcome=\"delivered\""],
        5.0,
    )
    .await?;
    assert!(
        nothing_within_receiver(&mut receiver).await,
        "more than the five newest arrived"
    );
    drop(ids);
    Ok(())
}

async fn nothing_within_receiver(receiver: &mut Receiver) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(500), receiver.posts.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn a_hanging_backend_never_slows_the_messages() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", true).await?;
    let url = format!("http://{}/hook", receiver.addr);
    let config = webhook_config("relay", &url, "timeout_ms = 60000");
    let server = Server::start_with_config(&["relay"], 1, &config)?;
    let mut a = server.connect(0, "/ws/relay/talk").await?;
    let mut b = server.connect(0, "/ws/relay/talk").await?;
    // The first event's POST now hangs for a minute; every message still flows.
    for i in 0..200 {
        a.send(Message::text(format!("m{i}"))).await?;
        assert_eq!(recv_text(&mut b).await?, format!("m{i}"));
    }
    assert_eq!(
        metric(
            server.addr(0),
            "wasmroom_webhook_events_total",
            &["outcome=\"delivered\""]
        )
        .await?,
        0.0
    );
    Ok(())
}
