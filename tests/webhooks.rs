//! Webhooks against the real binary and a real HTTP receiver standing in for the
//! application's backend: every event once and signed; a backend down then back gets the
//! newest events within the count bound and the byte budget, and one `saved` per document
//! (its newest); a hanging backend never slows the messages; an event the backend refuses
//! for good (413) or redirects (302, not followed) is dropped, counted, and does not hold
//! up the next ones.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::receiver::{Answer, OK, Receiver, Request, ok};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const HOOK_SECRET: &str = "webhook-secret-0123456789";

fn webhook_config(plugin: &str, url: &str, extra: &str) -> String {
    format!(
        "idle_grace_secs = 1\ncheckpoint_secs = 1\n[plugin.{plugin}.webhook]\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\n{extra}\n"
    )
}

#[tokio::test]
async fn every_webhook_event_arrives_once_and_signed() -> anyhow::Result<()> {
    let mut receiver = Receiver::start("127.0.0.1:0", ok).await?;
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
    let mut receiver = Receiver::start(&addr.to_string(), ok).await?;
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
    tokio::time::timeout(Duration::from_millis(500), receiver.requests.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn a_hanging_backend_never_slows_the_messages() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", |_| None).await?;
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

/// A port nobody listens on yet.
async fn unused_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?)
}

/// `wasmroom_webhook_events_total` of `outcome`.
async fn events(server: &Server, outcome: &str) -> anyhow::Result<f64> {
    metric(
        server.addr(0),
        "wasmroom_webhook_events_total",
        &[&format!("outcome=\"{outcome}\"")],
    )
    .await
}

/// Waits until `outcome` counts at least `value` events.
async fn wait_for_events(server: &Server, outcome: &str, value: f64) -> anyhow::Result<()> {
    wait_for_metric(
        server.addr(0),
        "wasmroom_webhook_events_total",
        &[&format!("outcome=\"{outcome}\"")],
        value,
    )
    .await
}

async fn queued_bytes(server: &Server) -> anyhow::Result<f64> {
    metric(server.addr(0), "wasmroom_webhook_queued_bytes", &[]).await
}

/// Inserts `text` at `pos` of a `textdoc` at version `v`, confirmed.
async fn insert(ws: &mut Ws, v: u64, pos: u64, text: &str) -> anyhow::Result<()> {
    send_text(
        ws,
        &json!({"type": "diff", "v": v, "rid": v + 1, "steps": [{"op": "insert", "pos": pos, "text": text}]})
            .to_string(),
    )
    .await?;
    let reply = recv_json(ws).await?;
    anyhow::ensure!(reply["type"] == "confirm", "{reply}");
    Ok(())
}

/// The text of a `saved` event's export (textdoc's `{"v":..,"text":..}`).
fn saved_text(event: &Value) -> anyhow::Result<String> {
    let export: Value = serde_json::from_str(
        event["export"]["body"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no export in {event}"))?,
    )?;
    Ok(export["text"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_backend_that_was_down_gets_the_newest_exports_within_the_byte_budget()
-> anyhow::Result<()> {
    // Exports of 100 kB each: two fit in the budget, three do not.
    const TEXT_BYTES: usize = 100_000;
    const BUDGET: usize = 250_000;
    let addr = unused_addr().await?;
    let url = format!("http://{addr}/hook");
    let extra = format!("events = [\"saved\"]\nmax_pending_bytes = {BUDGET}");
    let server =
        Server::start_with_config(&["textdoc"], 1, &webhook_config("textdoc", &url, &extra))?;
    let letters = ["a", "b", "c", "d", "e"];
    let mut sockets = Vec::new();
    for (i, letter) in letters.iter().enumerate() {
        let mut ws = server.connect(0, &format!("/ws/textdoc/big{i}")).await?;
        assert_eq!(recv_json(&mut ws).await?["type"], "doc");
        insert(&mut ws, 0, 0, &letter.repeat(TEXT_BYTES)).await?;
        // Its checkpoint (1 s) queues its export.
        wait_for_events(&server, "queued", (i + 1) as f64).await?;
        let held = queued_bytes(&server).await?;
        assert!(
            held > 0.0 && held <= BUDGET as f64,
            "{held} bytes queued after {} exports",
            i + 1
        );
        sockets.push(ws);
    }
    assert_eq!(
        events(&server, "dropped").await?,
        3.0,
        "the three oldest made room"
    );
    // The backend comes back: the two newest exports arrive, whole, and nothing else.
    let mut receiver = Receiver::start(&addr.to_string(), ok).await?;
    for i in [3, 4] {
        let (event, signed) = receiver.next(HOOK_SECRET).await?;
        assert!(signed);
        assert_eq!(event["document"], format!("big{i}"));
        assert_eq!(saved_text(&event)?, letters[i].repeat(TEXT_BYTES));
    }
    wait_for_events(&server, "delivered", 2.0).await?;
    assert!(
        nothing_within_receiver(&mut receiver).await,
        "a dropped export arrived"
    );
    assert_eq!(queued_bytes(&server).await?, 0.0);
    drop(sockets);
    Ok(())
}

#[tokio::test]
async fn many_saves_while_the_backend_is_down_arrive_as_the_newest_one() -> anyhow::Result<()> {
    let addr = unused_addr().await?;
    let url = format!("http://{addr}/hook");
    let server = Server::start_with_config(&["textdoc"], 1, &webhook_config("textdoc", &url, ""))?;
    let mut ws = server.connect(0, "/ws/textdoc/notes").await?;
    assert_eq!(recv_json(&mut ws).await?["type"], "doc");
    // `opened` is in flight (retried), `connected` waits: the saves queue behind them.
    wait_for_events(&server, "queued", 2.0).await?;
    for (k, digit) in ["1", "2", "3", "4"].into_iter().enumerate() {
        insert(&mut ws, k as u64, k as u64, digit).await?;
        wait_for_events(&server, "queued", (3 + k) as f64).await?;
    }
    assert_eq!(events(&server, "replaced").await?, 3.0);
    let mut receiver = Receiver::start(&addr.to_string(), ok).await?;
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let (event, signed) = receiver.next(HOOK_SECRET).await?;
        assert!(signed);
        if event["event"] == "saved" {
            assert_eq!(saved_text(&event)?, "1234", "the newest state");
        }
        kinds.push(event["event"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(kinds, ["opened", "connected", "saved"]);
    assert!(
        nothing_within_receiver(&mut receiver).await,
        "an older save arrived too"
    );
    wait_for_events(&server, "delivered", 3.0).await?;
    Ok(())
}

/// A `textdoc` session (opened, connected, one edit saved, the client gone, closed)
/// against a receiver answering as `answer` says; returns every request it got, up to
/// `closed`.
async fn a_session_against(answer: Answer) -> anyhow::Result<(Server, Vec<Request>)> {
    let mut receiver = Receiver::start("127.0.0.1:0", answer).await?;
    let url = format!("http://{}/hook", receiver.addr);
    let server = Server::start_with_config(&["textdoc"], 1, &webhook_config("textdoc", &url, ""))?;
    let mut ws = server.connect(0, "/ws/textdoc/minutes").await?;
    assert_eq!(recv_json(&mut ws).await?["type"], "doc");
    insert(&mut ws, 0, 0, "Agenda").await?;
    let mut got = Vec::new();
    let mut open = true;
    // A refused event retried for ever would keep the requests coming: a deadline.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let request = receiver.next_request().await?;
            let event = request.event();
            got.push(request);
            match event.as_deref() {
                Some("saved") if open => {
                    open = false;
                    ws.close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "done".into(),
                    }))
                    .await?;
                }
                Some("closed") => return anyhow::Ok(()),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no `closed` within {PATIENCE:?}; got {got:?}"))??;
    Ok((server, got))
}

#[tokio::test]
async fn an_event_the_backend_refuses_is_dropped_and_the_next_ones_arrive() -> anyhow::Result<()> {
    let (server, got) = a_session_against(|request| {
        Some(if request.event().as_deref() == Some("saved") {
            "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"
        } else {
            OK
        })
    })
    .await?;
    let kinds: Vec<String> = got.iter().filter_map(Request::event).collect();
    // The 413 is sent once, not retried, and holds nothing up.
    assert_eq!(
        kinds,
        ["opened", "connected", "saved", "disconnected", "closed"]
    );
    wait_for_events(&server, "delivered", 4.0).await?;
    assert_eq!(
        [
            events(&server, "delivered").await?,
            events(&server, "rejected").await?,
            events(&server, "retried").await?,
        ],
        [4.0, 1.0, 0.0]
    );
    Ok(())
}

#[tokio::test]
async fn a_redirect_is_not_followed_nor_counted_delivered() -> anyhow::Result<()> {
    let (server, got) = a_session_against(|request| {
        Some(
            if request.method == "POST" && request.event().as_deref() == Some("saved") {
                "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n"
            } else {
                OK
            },
        )
    })
    .await?;
    let seen: Vec<(&str, &str, String)> = got
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.event().unwrap_or_default(),
            )
        })
        .collect();
    // No GET of /elsewhere: the saved event was refused, the next ones went on.
    let expected: Vec<(&str, &str, String)> =
        ["opened", "connected", "saved", "disconnected", "closed"]
            .into_iter()
            .map(|kind| ("POST", "/hook", kind.to_owned()))
            .collect();
    assert_eq!(seen, expected);
    wait_for_events(&server, "delivered", 4.0).await?;
    assert_eq!(
        [
            events(&server, "delivered").await?,
            events(&server, "rejected").await?,
        ],
        [4.0, 1.0]
    );
    Ok(())
}
