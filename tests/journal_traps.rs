//! Journal mode: a timer or a departure whose call traps is dropped, not the document.
//! Nobody can be refused such an input, so it is journaled as dropped (`TimerDropped`,
//! `Detach`) and the document rebuilt in place from its checkpoint and journal, which
//! leave it out without calling the consumer: every socket stays, and the input is not
//! made again by that rebuild nor by the replay after `kill -9`. In checkpoint mode the
//! document still crashes. (A message, a connection or a request that traps:
//! `tests/journal.rs`.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::*;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The probe in journal mode on the file journal; no checkpoint for an hour, so only the
/// journal keeps what happens (the probe's snapshot is empty anyway). Returns the config
/// file too, for `wasmroom replay`.
fn journaled_probe(dir: &Path) -> anyhow::Result<(Server, PathBuf)> {
    let config = dir.join("wasmroom.toml");
    std::fs::write(
        &config,
        "checkpoint_secs = 3600\n[plugin.probe]\ndurability = \"journal\"\n",
    )?;
    let path = config.to_str().expect("temp paths are UTF-8");
    Ok((Server::start(&["probe"], 1, &["--config", path])?, config))
}

/// `wasmroom replay probe DOCUMENT` on `server`'s directories (read only).
fn replay(server: &Server, config: &Path, document: &str) -> anyhow::Result<Output> {
    support::replay::replay(server, config, &["probe", document])
}

/// The probe's counter `name` (summed over its labels) matching `labels`.
async fn probe_metric(server: &Server, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
    let mut all = vec!["plugin=\"probe\""];
    all.extend_from_slice(labels);
    metric(server.addr(0), name, &all).await
}

const DROPPED: &str = "wasmroom_journal_dropped_inputs_total";
const TRAPS: &str = "wasmroom_traps_total";
const REBUILDS: &str = "wasmroom_journal_rebuilds_total";

/// A timer whose `on-timer` traps is dropped: the document keeps its state and both
/// sockets, and the timer fires neither again in the rebuilt document nor after `kill -9`
/// in the replayed one (the probe's poisoned timer would trap each time).
#[tokio::test]
async fn a_timer_that_traps_is_dropped_and_the_document_keeps_its_sockets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut server, config) = journaled_probe(dir.path())?;
    let mut a = server.connect(0, "/ws/probe/timer").await?;
    let mut b = server.connect(0, "/ws/probe/timer").await?;
    send_text(&mut a, "note one").await?;
    send_text(&mut b, "note two").await?;
    send_text(&mut a, "poison-timer 50").await?;
    assert_eq!(recv_text(&mut a).await?, "poisoned timer set");
    send_text(&mut a, "later 400").await?;
    assert_eq!(recv_text(&mut a).await?, "later set");
    // The poisoned timer (13) fires first and traps. Timer 9 was set after it and is due
    // later, also as the rebuild's replay sets both again: had timer 13 still been
    // pending in the rebuilt document, it would have fired (and trapped) before.
    assert_eq!(recv_text(&mut a).await?, "timer 9", "a kept its socket");
    assert_eq!(recv_text(&mut b).await?, "timer 9", "b kept its socket");
    assert_eq!(probe_metric(&server, TRAPS, &[]).await?, 1.0);
    assert_eq!(
        probe_metric(&server, DROPPED, &["input=\"timer\""]).await?,
        1.0
    );
    assert_eq!(
        probe_metric(&server, REBUILDS, &["outcome=\"kept\""]).await?,
        1.0
    );
    // The dropped timer is logged (the test reads the log on a thread of its own).
    server.wait_for_log("timer 13, which is dropped")?;
    send_text(&mut b, "notes").await?;
    assert_eq!(
        recv_text(&mut b).await?,
        "one,two",
        "the document kept its state"
    );
    send_text(&mut a, "note three").await?;
    // An answer leaves once its input is durable: so is the note before it.
    send_text(&mut a, "notes").await?;
    assert_eq!(recv_text(&mut a).await?, "one,two,three");

    server.kill9()?;
    let out = replay(&server, &config, "timer")?;
    assert!(
        out.status.success(),
        "wasmroom replay reads the dropped timer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = server.restart()?;
    let mut c = server.connect(0, "/ws/probe/timer").await?;
    send_text(&mut c, "notes").await?;
    assert_eq!(recv_text(&mut c).await?, "one,two,three");
    send_text(&mut c, "departed").await?;
    assert_eq!(recv_text(&mut c).await?, "1:1006,2:1006");
    // The replay set timer 13 again before it met the record that drops it: pending
    // still, it would be due before this timer 9, set after the reopen.
    send_text(&mut c, "later 200").await?;
    assert_eq!(recv_text(&mut c).await?, "later set");
    assert_eq!(recv_text(&mut c).await?, "timer 9");
    assert_eq!(probe_metric(&server, TRAPS, &[]).await?, 0.0);
    assert_eq!(probe_metric(&server, DROPPED, &[]).await?, 0.0);
    Ok(())
}

/// A departure whose `on-disconnect` traps is dropped: the connection is gone from what
/// the consumer sees, the document keeps its state and its other sockets. After
/// `kill -9`, the reopen's replay leaves that departure out without calling it, and a
/// connection cut by the kill whose departure traps there is dropped there, once (each
/// trap counts: a departure called again would count twice).
#[tokio::test]
async fn a_departure_that_traps_is_dropped_and_the_document_keeps_its_sockets() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (mut server, config) = journaled_probe(dir.path())?;
    let mut a = server.connect(0, "/ws/probe/leave").await?;
    let mut b = server.connect(0, "/ws/probe/leave").await?;
    let mut d = server.connect(0, "/ws/probe/leave").await?;
    send_text(&mut a, "note one").await?;
    for ws in [&mut b, &mut d] {
        send_text(ws, "poison-leave").await?;
        assert_eq!(recv_text(ws).await?, "leaving will trap");
    }
    b.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await?;
    wait_for_metric(server.addr(0), TRAPS, &["plugin=\"probe\""], 1.0).await?;
    send_text(&mut a, "notes").await?;
    assert_eq!(recv_text(&mut a).await?, "one", "a kept its socket");
    send_text(&mut a, "count").await?;
    assert_eq!(recv_text(&mut a).await?, "2", "b is gone: a and d are left");
    send_text(&mut a, "departed").await?;
    assert_eq!(
        recv_text(&mut a).await?,
        "",
        "b's departure was never applied"
    );
    send_text(&mut d, "id").await?;
    assert_eq!(recv_text(&mut d).await?, "3", "d kept its socket");
    let departure = ["input=\"departure\""];
    assert_eq!(probe_metric(&server, DROPPED, &departure).await?, 1.0);
    assert_eq!(
        probe_metric(&server, REBUILDS, &["outcome=\"kept\""]).await?,
        1.0
    );

    // d is cut by the kill; its departure traps as the document reopens.
    server.kill9()?;
    let out = replay(&server, &config, "leave")?;
    assert!(
        out.status.success(),
        "wasmroom replay reads the dropped departure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = server.restart()?;
    let mut c = server.connect(0, "/ws/probe/leave").await?;
    send_text(&mut c, "notes").await?;
    assert_eq!(recv_text(&mut c).await?, "one");
    send_text(&mut c, "departed").await?;
    assert_eq!(
        recv_text(&mut c).await?,
        "1:1006",
        "a was cut; b and d dropped"
    );
    send_text(&mut c, "count").await?;
    assert_eq!(recv_text(&mut c).await?, "1");
    assert_eq!(probe_metric(&server, DROPPED, &departure).await?, 1.0);
    assert_eq!(probe_metric(&server, TRAPS, &[]).await?, 1.0);
    assert_eq!(
        probe_metric(&server, REBUILDS, &["outcome=\"kept\""]).await?,
        1.0
    );
    Ok(())
}

/// In checkpoint mode there is no journal to drop a timer or a departure from: either
/// trapping still crashes its document (1011 to every socket).
#[tokio::test]
async fn in_checkpoint_mode_a_timer_or_departure_that_traps_crashes_the_document()
-> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let crashed = (1011, "consumer crashed".to_owned());
    let mut a = server.connect(0, "/ws/probe/timer").await?;
    let mut b = server.connect(0, "/ws/probe/timer").await?;
    send_text(&mut a, "poison-timer 1").await?;
    assert_eq!(recv_text(&mut a).await?, "poisoned timer set");
    assert_eq!(expect_close(&mut a).await?, crashed);
    assert_eq!(expect_close(&mut b).await?, crashed);

    let mut a = server.connect(0, "/ws/probe/leave").await?;
    let mut b = server.connect(0, "/ws/probe/leave").await?;
    send_text(&mut b, "poison-leave").await?;
    assert_eq!(recv_text(&mut b).await?, "leaving will trap");
    b.close(None).await?;
    assert_eq!(expect_close(&mut a).await?, crashed);
    assert_eq!(probe_metric(&server, DROPPED, &[]).await?, 0.0);
    Ok(())
}
