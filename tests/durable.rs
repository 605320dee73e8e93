//! Durable documents: nothing is lost across SIGTERM, kill -9, eviction or failing saves.

mod support;

use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The chat history of `doc` over HTTP, as texts.
async fn history(server: &Server, doc: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/chat/{doc}"), b"").await?;
    anyhow::ensure!(status == 200, "GET history: {status} {body}");
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    Ok(doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect())
}

/// Sends `count` chat lines from `from` and waits until `to` has seen them all.
async fn chat(from: &mut Ws, to: &mut Ws, count: usize) -> anyhow::Result<()> {
    for i in 0..count {
        send_text(from, &format!("line {i}")).await?;
    }
    let mut seen = 0;
    while seen < count {
        if recv_json(to).await?["type"] == "message" {
            seen += 1;
        }
    }
    Ok(())
}

fn lines(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("line {i}")).collect()
}

/// Every line a client sent before it saw the server's close is in the document after a
/// SIGTERM: the host asks every socket to close and keeps applying what each client sent
/// until its own close frame (TCP delivers it first), then saves. Twenty times, the
/// SIGTERM coming at another point of a stream of ~500 lines a second each time.
#[tokio::test]
async fn every_line_sent_before_the_close_survives_sigterm() -> anyhow::Result<()> {
    use support::streaming::{Stream, all_kept};
    // Only the shutdown's save can keep the lines; the chat keeps all of them.
    let config = "checkpoint_secs = 3600\n[plugin.chat.settings]\nhistory = \"100000\"\n";
    for run in 0..20 {
        let mut server = Server::start_with_config(&["chat"], 1, config)?;
        let mut ws = server.connect(0, "/ws/chat/stream?name=writer").await?;
        assert_eq!(recv_json(&mut ws).await?["type"], "history");
        let stream = Stream::start(ws, "line ", std::time::Duration::from_millis(2));
        stream.sent_at_least(20 + run * 13).await?;
        let stopping = tokio::task::spawn_blocking(move || {
            let status = server.terminate();
            (server, status)
        });
        let streamed = stream.finished().await?;
        let (server, status) = stopping.await?;
        assert!(status?.success());
        let (code, reason) = streamed.close.clone().unwrap_or_default();
        assert_eq!(code, 1012, "run {run}: {streamed:?}");
        assert_eq!(reason, "server restarting");
        let server = server.restart()?;
        let texts = history(&server, "stream").await?;
        all_kept(&texts, "line ", streamed.sent).map_err(|e| anyhow::anyhow!("run {run}: {e}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn chat_history_survives_sigterm_and_clients_see_1012() -> anyhow::Result<()> {
    // A checkpoint interval far away: only the shutdown save can keep the history.
    let mut server = Server::start(&["chat"], 1, &["--checkpoint", "3600"])?;
    let mut a = server.connect(0, "/ws/chat/kept?name=ann").await?;
    let mut b = server.connect(0, "/ws/chat/kept?name=bob").await?;
    chat(&mut a, &mut b, 50).await?;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    assert_eq!(expect_close(&mut a).await?.0, 1012);
    assert_eq!(expect_close(&mut b).await?.0, 1012);
    let (server, status) = stopping.await?;
    assert!(status?.success());

    // The compiled plugin was cached in the data directory: the restart loads it
    // instead of compiling again.
    let cached = std::fs::read_dir(server.data.path().join(".compiled"))?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(cached, 1);
    let server = server.restart()?;
    assert_eq!(history(&server, "kept").await?, lines(50));
    Ok(())
}

#[tokio::test]
async fn kill_9_loses_nothing_that_was_checkpointed() -> anyhow::Result<()> {
    let mut server = Server::start(&["chat"], 1, &["--checkpoint", "1"])?;
    let mut a = server.connect(0, "/ws/chat/crashy").await?;
    let mut b = server.connect(0, "/ws/chat/crashy").await?;
    chat(&mut a, &mut b, 20).await?;
    // The checkpoint has happened once the lane reports nothing unsaved.
    server.wait_for_stats(0, |s| s["unsaved"] == 0).await?;
    server.kill9()?;
    let server = server.restart()?;
    assert_eq!(history(&server, "crashy").await?, lines(20));
    Ok(())
}

#[tokio::test]
async fn an_idle_document_is_saved_dropped_and_comes_back() -> anyhow::Result<()> {
    let mut server = Server::start(&["chat"], 1, &["--idle-grace", "1", "--checkpoint", "3600"])?;
    let mut a = server.connect(0, "/ws/chat/idle").await?;
    let mut b = server.connect(0, "/ws/chat/idle").await?;
    chat(&mut a, &mut b, 3).await?;
    assert_eq!(
        server.wait_for_stats(0, |s| s["documents"] == 1).await?["unsaved"],
        1
    );
    drop((a, b));
    // The instance is gone: the lane holds no document any more.
    server.wait_for_stats(0, |s| s["documents"] == 0).await?;
    server.wait_for_log("saved and dropped")?;
    assert_eq!(history(&server, "idle").await?, lines(3));
    Ok(())
}

#[tokio::test]
async fn a_timer_set_before_sigterm_fires_after_the_restart() -> anyhow::Result<()> {
    let mut server = Server::start(&["probe"], 1, &[])?;
    // The timer must still be pending when SIGTERM saves it. A machine too slow for that
    // makes an attempt say nothing (the timer fired before the close); then the next
    // attempt gives the shutdown twice the time.
    for (attempt, delay_ms) in [2_000u64, 4_000, 8_000, 16_000].into_iter().enumerate() {
        let doc = format!("/ws/probe/alarm-{attempt}");
        let mut ws = server.connect(0, &doc).await?;
        send_text(&mut ws, &format!("later {delay_ms}")).await?;
        assert_eq!(recv_text(&mut ws).await?, "later set");
        server = tokio::task::spawn_blocking(move || server.terminate().map(|_| server)).await??;
        let fired_first = match recv(&mut ws).await? {
            Message::Text(t) => t == "timer 9",
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1012));
                false
            }
            other => anyhow::bail!("unexpected {other:?}"),
        };
        server = server.restart()?;
        if fired_first {
            eprintln!("the timer fired before the shutdown ({delay_ms} ms); retrying");
            continue;
        }
        let mut ws = server.connect(0, &doc).await?;
        assert_eq!(recv_text(&mut ws).await?, "timer 9");
        return Ok(());
    }
    anyhow::bail!("the shutdown never came before a 16 s timer")
}

/// `chattr +i` on a directory for as long as the guard lives.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(dir: &std::path::Path) -> anyhow::Result<Immutable> {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "chattr +i {} failed: this test needs a filesystem with the immutable attribute (ext4, xfs, btrfs)",
            dir.display()
        );
        Ok(Immutable(dir.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn failing_saves_keep_the_document_until_they_succeed() -> anyhow::Result<()> {
    let mut server = Server::start(&["chat"], 1, &["--idle-grace", "1", "--checkpoint", "1"])?;
    // The tests run as root, for whom permissions do not stop writes; the immutable
    // attribute does (reads still work, as on a read-only mount).
    let dir = server.data.path().join("chat");
    std::fs::create_dir_all(&dir)?;
    let read_only = Immutable::set(&dir)?;
    let mut a = server.connect(0, "/ws/chat/stubborn").await?;
    let mut b = server.connect(0, "/ws/chat/stubborn").await?;
    chat(&mut a, &mut b, 5).await?;
    drop((a, b));
    server
        .wait_for_stats(0, |s| s["failed_saves"].as_u64() >= Some(2))
        .await?;
    server.wait_for_log("save failed")?;
    // Idle for longer than its grace, but unsaved: still in memory, history intact.
    assert_eq!(server.wait_for_stats(0, |_| true).await?["documents"], 1);
    assert_eq!(history(&server, "stubborn").await?, lines(5));

    drop(read_only);
    server.wait_for_stats(0, |s| s["unsaved"] == 0).await?;
    server.kill9()?;
    let server = server.restart()?;
    assert_eq!(history(&server, "stubborn").await?, lines(5));
    Ok(())
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_and_left_untouched() -> anyhow::Result<()> {
    let mut server = Server::start(&["chat"], 1, &[])?;
    let (status, _) = http(server.addr(0), "POST", "/docs/chat/broken", b"precious").await?;
    assert_eq!(status, 201);
    server = tokio::task::spawn_blocking(move || server.terminate().map(|_| server)).await??;
    let file = server.data.path().join("chat").join("broken.snap");
    let mut bytes = std::fs::read(&file)?;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&file, &bytes)?;

    let mut server = server.restart()?;
    let mut ws = server.connect(0, "/ws/chat/broken").await?;
    let (code, reason) = expect_close(&mut ws).await?;
    assert_eq!(code, 1011);
    assert!(reason.contains("saved state unreadable"), "{reason}");
    let (status, body) = http(server.addr(0), "GET", "/docs/chat/broken", b"").await?;
    assert_eq!(
        (status, body.trim()),
        (500, "saved state unreadable; see the server log")
    );
    // The file is named to the operator, never to a client.
    let line = server.wait_for_log("refusing to open")?;
    assert!(
        line.contains("broken.snap"),
        "the log names the file: {line}"
    );
    assert_eq!(std::fs::read(&file)?, bytes, "the file is left as it was");
    Ok(())
}
