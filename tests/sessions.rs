//! Sessions (`wasmroom.session.v1`, docs/sessions.md) against the real binary: the wire
//! format spoken by a raw client (numbers, acknowledgements, resume with `last=N`, the
//! grace running out), and the official JavaScript client through a TCP proxy that cuts
//! its connections.

#[path = "sessions/exchange.rs"]
mod exchange;
mod support;

use std::time::Duration;

use exchange::{Exchange, Seen};
use support::fault_proxy::FaultProxy;
use support::session_client::*;
use support::*;

#[tokio::test]
async fn a_cut_session_resumes_with_what_it_missed_and_nothing_twice() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = session_socket(&server, "/ws/probe/resume?x=1").await?;
    let (id, resumed) = hello(&mut ws).await?;
    assert!(!resumed);
    // The consumer sees plain messages, and neither the session's subprotocol nor its
    // parameters.
    send_data(&mut ws, 1, "connect-info").await?;
    let data = until_ack(&mut ws, 1).await?;
    let info: serde_json::Value = serde_json::from_str(&data[0].1)?;
    assert_eq!(data[0].0, 1);
    assert_eq!(info["query"], "x=1");
    assert_eq!(info["subprotocols"], serde_json::json!([]));
    send_data(&mut ws, 2, "id").await?;
    send_data(&mut ws, 3, "note once").await?;
    send_data(&mut ws, 4, "echo missed").await?;
    let data = until_ack(&mut ws, 4).await?;
    let connection: u64 = data[0].1.parse()?;
    assert_eq!(
        data,
        [(2, connection.to_string()), (3, "missed".to_owned())]
    );
    cut(ws);

    // The client says it got only message 1 from the host, and resends 2..4 as if their
    // acknowledgement had been lost.
    let mut ws = session_socket(
        &server,
        &format!("/ws/probe/resume?x=1&session={id}&last=1"),
    )
    .await?;
    assert_eq!(hello(&mut ws).await?, (id.clone(), true));
    assert_eq!(
        next(&mut ws).await?,
        FromHost::Data(2, connection.to_string())
    );
    assert_eq!(next(&mut ws).await?, FromHost::Data(3, "missed".to_owned()));
    send_data(&mut ws, 2, "id").await?;
    send_data(&mut ws, 3, "note once").await?;
    send_data(&mut ws, 4, "echo missed").await?;
    send_data(&mut ws, 5, "notes").await?;
    send_data(&mut ws, 6, "id").await?;
    let data = until_ack(&mut ws, 6).await?;
    // Resent messages were applied once; the connection is the same one.
    assert_eq!(data, [(4, "once".to_owned()), (5, connection.to_string())]);
    // Counted as one socket, not one per resume.
    let sockets = metric(server.addr(0), "wasmroom_websockets", &[]).await?;
    assert_eq!(sockets, 1.0);
    // The consumer saw one connection and no disconnect.
    send_data(&mut ws, 7, "count").await?;
    assert_eq!(until_ack(&mut ws, 7).await?, [(6, "1".to_owned())]);
    assert_eq!(ask(&server, "resume", "departed").await?, "");

    // Resuming from before what the client acknowledged cannot be served: a new session.
    send_text(&mut ws, "!ack 6").await?;
    send_data(&mut ws, 8, "echo sync").await?;
    assert_eq!(until_ack(&mut ws, 8).await?, [(7, "sync".to_owned())]);
    cut(ws);
    let mut ws = session_socket(&server, &format!("/ws/probe/resume?session={id}&last=2")).await?;
    let (new_id, resumed) = hello(&mut ws).await?;
    assert!(
        !resumed,
        "a resume from before the acknowledged messages was served"
    );
    assert_ne!(new_id, id);
    send_data(&mut ws, 1, "id").await?;
    let data = until_ack(&mut ws, 1).await?;
    assert_ne!(
        data,
        [(1, connection.to_string())],
        "a new session is a new connection"
    );
    Ok(())
}

#[tokio::test]
async fn a_resume_takes_over_from_a_socket_the_host_still_serves() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let proxy = FaultProxy::start(server.addr(0))?;
    let url = format!("ws://{}/ws/probe/takeover", proxy.addr());
    let mut old = session_socket_at(&url).await?;
    let (id, _) = hello(&mut old).await?;
    send_data(&mut old, 1, "id").await?;
    let connection = until_ack(&mut old, 1).await?[0].1.clone();
    // The link goes dead without a word: the host still serves the old socket.
    proxy.stall(support::fault_proxy::Direction::Both);
    let mut ws =
        session_socket(&server, &format!("/ws/probe/takeover?session={id}&last=1")).await?;
    assert_eq!(hello(&mut ws).await?, (id, true));
    send_data(&mut ws, 2, "id").await?;
    assert_eq!(until_ack(&mut ws, 2).await?, [(2, connection)]);
    send_data(&mut ws, 3, "count").await?;
    assert_eq!(until_ack(&mut ws, 3).await?, [(3, "1".to_owned())]);
    drop(old);
    Ok(())
}

#[tokio::test]
async fn a_session_not_resumed_within_its_grace_ends() -> anyhow::Result<()> {
    let server = Server::start_with_config(&["probe"], 1, "session_grace_ms = 300\n")?;
    let mut ws = session_socket(&server, "/ws/probe/grace").await?;
    let (id, _) = hello(&mut ws).await?;
    send_data(&mut ws, 1, "id").await?;
    let connection = until_ack(&mut ws, 1).await?[0].1.clone();
    cut(ws);
    // The consumer hears of it once the grace has run out, with 1006.
    let departed = format!("{connection}:1006");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // (Each question is a connection of its own, which departs too: `id:1000`.)
    while !ask(&server, "grace", "departed")
        .await?
        .split(',')
        .any(|d| d == departed)
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never departed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the session is gone: a resume gets a new one.
    let mut ws = session_socket(&server, &format!("/ws/probe/grace?session={id}&last=1")).await?;
    let (new_id, resumed) = hello(&mut ws).await?;
    assert!(!resumed);
    assert_ne!(new_id, id);
    Ok(())
}

#[tokio::test]
async fn a_session_frame_out_of_sequence_closes_with_1002() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = session_socket(&server, "/ws/probe/gap").await?;
    hello(&mut ws).await?;
    send_data(&mut ws, 2, "id").await?;
    assert_eq!(expect_close(&mut ws).await?.0, 1002);
    let mut ws = session_socket(&server, "/ws/probe/gap").await?;
    hello(&mut ws).await?;
    send_text(&mut ws, "no number").await?;
    assert_eq!(expect_close(&mut ws).await?.0, 1002);
    // A plain client is untouched.
    assert_eq!(ask(&server, "gap", "echo plain").await?, "plain");
    Ok(())
}

/// Messages each Node client sends the other.
const EXCHANGED: usize = 100;
/// How many times the proxy cuts every connection while they do.
const CUTS: usize = 20;

#[tokio::test]
async fn two_js_clients_lose_and_repeat_nothing_across_twenty_cuts() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let proxy = FaultProxy::start(server.addr(0))?;
    let url = format!("ws://{}/ws/probe/exchange", proxy.addr());
    let mut exchange = Exchange::start(&url, EXCHANGED, 0)?;
    // The cuts follow the clients' progress: one every `step` messages received.
    let step = 2 * EXCHANGED / (CUTS + 1);
    for cut in 1..=CUTS {
        exchange
            .until("the next cut", |s| s.progress >= cut * step)
            .await?;
        cut_mid_stream(&proxy)?;
    }
    exchange.finish(EXCHANGED).await?;
    assert!(
        proxy.counters().cut >= CUTS as u64,
        "the proxy cut {} connections",
        proxy.counters().cut
    );
    // The consumer saw one connection per client (and this question's), not one per
    // socket.
    assert_eq!(ask(&server, "exchange", "connects").await?, "3");
    Ok(())
}

/// What the probe's `restore` tells every connection after a hot reload.
const RESTORED: &str = "restored with 2 connection(s)";

#[tokio::test]
async fn sessions_survive_hot_reloads_and_cuts_around_them() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let proxy = FaultProxy::start(server.addr(0))?;
    let url = format!("ws://{}/ws/probe/reloaded", proxy.addr());
    let probe = built_plugins_dir().join("probe.wasm");
    // Each new version says `restored` once to each room.
    let mut exchange = Exchange::start(&url, EXCHANGED, 2)?;
    let restored = |n: usize| move |s: &Seen| s.others.iter().all(|o| o.len() >= n);

    exchange.until("some traffic", |s| s.progress >= 20).await?;
    cut_mid_stream(&proxy)?;
    // A reload while the messages flow, and a cut right after the new file lands.
    exchange.until("more traffic", |s| s.progress >= 40).await?;
    let v1 = plugin_entry(&server, "probe").await?["current"]["version"].clone();
    deploy(&server, "probe", &rebuilt_as(&probe, "v2")?)?;
    cut_mid_stream(&proxy)?;
    let v2 = wait_for_new_version(&server, "probe", &v1, 1).await?["current"]["version"].clone();
    exchange.until("the first restore", restored(1)).await?;
    cut_mid_stream(&proxy)?;

    // A reload while both sessions are parked: both cut, and no way back until it is done.
    exchange
        .until("traffic on v2", |s| s.progress >= 120)
        .await?;
    let first = proxy.wait_for(|c| c.open && c.downstream_bytes > 0, PATIENCE)?;
    proxy.wait_for(
        |c| c.open && c.downstream_bytes > 0 && c.id != first.id,
        PATIENCE,
    )?;
    proxy.refuse(true);
    proxy.cut();
    deploy(&server, "probe", &rebuilt_as(&probe, "v3")?)?;
    wait_for_new_version(&server, "probe", &v2, 1).await?;
    proxy.refuse(false);
    exchange.until("the second restore", restored(2)).await?;
    cut_mid_stream(&proxy)?;

    let result = exchange.finish(EXCHANGED).await?;
    // Each new version saw both sessions' connections, and each room heard so once.
    assert_eq!(
        result["others"],
        serde_json::json!([[RESTORED, RESTORED], [RESTORED, RESTORED]])
    );
    // No `on-connect` since the last reload but this question's: every cut after it was
    // resumed (a session lost would have been a new connection, and a `reset`).
    assert_eq!(ask(&server, "reloaded", "connects").await?, "1");
    Ok(())
}

/// A session on a journaled probe, with the tests' memory journal.
fn journaled(journal: &str) -> anyhow::Result<Server> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(file.path(), "[plugin.probe]\ndurability = \"journal\"\n")?;
    let (_, path) = file.keep()?;
    Server::start_with_env(
        &["probe"],
        1,
        &["--config", path.to_str().expect("temp paths are UTF-8")],
        &[("WASMROOM_TEST_JOURNAL", journal)],
    )
}

#[tokio::test]
async fn in_journal_mode_an_ack_leaves_once_the_message_is_durable() -> anyhow::Result<()> {
    const COMMIT: Duration = Duration::from_millis(300);
    let server = journaled(&format!("memory:{}", COMMIT.as_millis()))?;
    let mut ws = session_socket(&server, "/ws/probe/durable").await?;
    hello(&mut ws).await?;
    let sent = std::time::Instant::now();
    send_data(&mut ws, 1, "note kept").await?;
    assert_eq!(next(&mut ws).await?, FromHost::Ack(1));
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(
        sent.elapsed() >= COMMIT,
        "acknowledged after {:?}, before its commit",
        sent.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_message_whose_record_fails_is_never_acknowledged() -> anyhow::Result<()> {
    // Commit 1 (the connect) succeeds, commit 2 (the message) fails.
    let server = journaled("memory:0:2")?;
    let mut ws = session_socket(&server, "/ws/probe/failing").await?;
    hello(&mut ws).await?;
    send_data(&mut ws, 1, "note lost").await?;
    // The next thing the client hears is the close, not an acknowledgement.
    match recv(&mut ws).await? {
        tokio_tungstenite::tungstenite::Message::Close(Some(close)) => {
            assert_eq!(u16::from(close.code), 1012)
        }
        other => anyhow::bail!("expected the close, got {other:?}"),
    }
    Ok(())
}

/// Numbered messages of one read reach the consumer in one call (the probe says how
/// many its call held), each once: a resend of one waiting in the batch is dropped, and
/// the read is acknowledged once, up to its last message.
#[tokio::test]
async fn numbered_messages_of_one_read_are_one_call_and_one_acknowledgement() -> anyhow::Result<()>
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = session_socket(&server, "/ws/probe/batched").await?;
    hello(&mut ws).await?;
    for frame in ["1:note a", "2:note b", "2:note b", "3:batch", "4:notes"] {
        ws.feed(Message::text(frame)).await?;
    }
    ws.flush().await?;
    let mut heard = Vec::new();
    loop {
        match next(&mut ws).await? {
            FromHost::Ack(n) => {
                assert_eq!(n, 4, "one acknowledgement, of the last, after {heard:?}");
                break;
            }
            FromHost::Data(n, text) => heard.push((n, text)),
        }
    }
    assert_eq!(
        heard,
        [(1, "batch 4".to_owned()), (2, "a,b".to_owned())],
        "one call of four messages, the resend dropped"
    );
    Ok(())
}
