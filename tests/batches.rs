//! A connection's messages of one read in one guest call (`on-messages`, WIT 0.1.2),
//! against the real binary: a Rust consumer gets them in one call without a change of
//! its own, a consumer built against 0.1.0 still gets one call per message, and a
//! consumer that says it handled fewer without closing the connection has it closed.
//! (A consumer that closes the sender in the middle of a batch: `tests/limits.rs`; a
//! session's numbers within a batch: `tests/sessions.rs`; a batch journaled and
//! replayed: `tests/journal.rs`.)
//!
//! Messages written by the client in one write are read by the host in one read: a few
//! dozen bytes on loopback arrive together.

mod support;

use futures_util::SinkExt;
use support::tokens::fixture;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// How many `export` calls the plugin made, as the metrics count them.
async fn calls(server: &Server, plugin: &str, export: &str) -> anyhow::Result<f64> {
    metric(
        server.addr(0),
        "wasmroom_guest_call_seconds_count",
        &[
            &format!("plugin=\"{plugin}\""),
            &format!("export=\"{export}\""),
        ],
    )
    .await
}

/// Writes every text of `texts` as a message of its own, all in one write.
async fn one_write(ws: &mut Ws, texts: &[&str]) -> anyhow::Result<()> {
    for text in texts {
        ws.feed(Message::text(*text)).await?;
    }
    ws.flush().await?;
    Ok(())
}

#[tokio::test]
async fn a_read_of_many_messages_reaches_a_rust_consumer_in_one_call() -> anyhow::Result<()> {
    // The relay is written with `on_message` only: the SDK gives it `on-messages`.
    let server = Server::start(&["relay"], 1, &[])?;
    let mut a = server.connect(0, "/ws/relay/batch").await?;
    let mut b = server.connect(0, "/ws/relay/batch").await?;
    let texts = ["m0", "m1", "m2", "m3", "m4", "m5"];
    one_write(&mut a, &texts).await?;
    for text in texts {
        assert_eq!(recv_text(&mut b).await?, text, "in order, each once");
    }
    assert_eq!(calls(&server, "relay", "on-messages").await?, 1.0);
    assert_eq!(calls(&server, "relay", "on-message").await?, 0.0);
    let received = metric(server.addr(0), "wasmroom_messages_received_total", &[]).await?;
    assert_eq!(received, 6.0, "counted per message");
    // A message alone in its read is one `on-message` call, as before.
    a.send(Message::text("alone")).await?;
    assert_eq!(recv_text(&mut b).await?, "alone");
    assert_eq!(calls(&server, "relay", "on-message").await?, 1.0);

    // The consumer sees the batch as one call: the probe says how many its call held.
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/batch").await?;
    one_write(&mut ws, &["note a", "note b", "batch", "notes"]).await?;
    assert_eq!(recv_text(&mut ws).await?, "batch 4");
    assert_eq!(recv_text(&mut ws).await?, "a,b");
    send_text(&mut ws, "batch").await?;
    assert_eq!(recv_text(&mut ws).await?, "batch 1");
    Ok(())
}

#[tokio::test]
async fn a_consumer_built_against_0_1_0_gets_one_call_per_message() -> anyhow::Result<()> {
    let dir = Server::plugins_dir(&[])?;
    std::fs::copy(fixture("relay_v0_1_0.wasm"), dir.path().join("relay.wasm"))?;
    let server = Server::start_in(dir, 1, &[])?;
    let mut a = server.connect(0, "/ws/relay/old").await?;
    let mut b = server.connect(0, "/ws/relay/old").await?;
    let texts = ["o0", "o1", "o2", "o3"];
    one_write(&mut a, &texts).await?;
    for text in texts {
        assert_eq!(recv_text(&mut b).await?, text);
    }
    assert_eq!(calls(&server, "relay", "on-message").await?, 4.0);
    assert_eq!(calls(&server, "relay", "on-messages").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn a_consumer_that_drops_part_of_a_batch_without_closing_is_closed() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/drop").await?;
    let mut other = server.connect(0, "/ws/probe/drop").await?;
    // The probe handles `note kept` and `drop-rest`, says it handled two, and does not
    // close the connection: the rest was read but never applied, so the client's stream
    // has a hole, and the host ends it.
    one_write(
        &mut ws,
        &["note kept", "drop-rest", "note lost", "note lost too"],
    )
    .await?;
    assert_eq!(recv_text(&mut ws).await?, "unknown command: drop-rest");
    assert_eq!(expect_close(&mut ws).await?.0, 1011);
    send_text(&mut other, "notes").await?;
    assert_eq!(recv_text(&mut other).await?, "kept");
    let unapplied = metric(
        server.addr(0),
        "wasmroom_messages_unapplied_total",
        &["reason=\"closing\""],
    )
    .await?;
    assert_eq!(unapplied, 2.0);
    Ok(())
}
