//! `wasmroom replay`: a document as it was after one of its inputs, printed from the data
//! directory of a server that still runs on it (read only), and after `kill -9`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::Context;
use support::replay::replay;
use support::*;

/// A config file (kept until the test ends) holding `text`.
fn config_file(dir: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("wasmroom.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The chat lines of a replay's export, and its summary line.
fn lines(out: &Output) -> anyhow::Result<(Vec<String>, String)> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(out.status.success(), "replay failed: {stderr}");
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("stdout; {stderr}"))?;
    let texts = doc["messages"]
        .as_array()
        .context("no messages")?
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    let summary = stderr.lines().last().unwrap_or_default().to_owned();
    Ok((texts, summary))
}

/// Why a replay failed (it must have).
fn refusal(out: &Output) -> String {
    assert!(!out.status.success(), "replay succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

/// Connects `name` to chat document `doc` and reads its history.
async fn join(server: &Server, plugin: &str, doc: &str, name: &str) -> anyhow::Result<Ws> {
    let mut ws = server
        .connect(0, &format!("/ws/{plugin}/{doc}?name={name}"))
        .await?;
    assert_eq!(recv_json(&mut ws).await?["type"], "history");
    Ok(ws)
}

/// Sends `lines` from `from`, each once `to` has seen the one before (in journal mode:
/// once it is durable), so that each line is an input of its own (lines read together
/// reach a Rust consumer as one batch, one input).
async fn say(from: &mut Ws, to: &mut Ws, lines: &[String]) -> anyhow::Result<()> {
    for line in lines {
        send_text(from, line).await?;
        while recv_json(to).await?["type"] != "message" {}
    }
    Ok(())
}

/// The document's export at every input, while the server runs and after `kill -9`: the
/// lines it held there, exactly. Inputs: 1 opens the document, 2 and 3 connect ann and
/// bob, 4 to 13 are lines 0 to 9. The next checkpoint is an hour away: the lines are in
/// the journal only.
#[tokio::test]
async fn replay_shows_a_document_at_any_input_beside_its_server_and_after_kill_9()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = config_file(
        dir.path(),
        "checkpoint_secs = 3600\n[plugin.chat]\ndurability = \"journal\"\n",
    )?;
    let mut server = Server::start(&["chat"], 1, &["--config", config.to_str().expect("UTF-8")])?;
    let mut ann = join(&server, "chat", "history", "ann").await?;
    let mut bob = join(&server, "chat", "history", "bob").await?;
    say(&mut ann, &mut bob, &numbered(0..10)).await?;

    let (texts, summary) = lines(&replay(&server, &config, &["chat", "history"])?)?;
    assert_eq!(texts, numbered(0..10));
    // (A new document is saved at its first change, whatever `checkpoint_secs` says.)
    assert!(
        summary.contains("journal entries replayed, shown at input 13 (the last is 13)"),
        "{summary}"
    );
    let (texts, summary) = lines(&replay(
        &server,
        &config,
        &["chat", "history", "--until", "8"],
    )?)?;
    assert_eq!(texts, numbered(0..5), "inputs 4 to 8 are lines 0 to 4");
    assert!(summary.contains("(the last is 13)"), "{summary}");
    let (texts, _) = lines(&replay(
        &server,
        &config,
        &["chat", "history", "--until", "3"],
    )?)?;
    assert!(texts.is_empty(), "before the first line: {texts:?}");

    // The export is the consumer's answer to GET (which is input 14).
    let (status, live) = http(server.addr(0), "GET", "/docs/chat/history", b"").await?;
    assert_eq!(status, 200);
    let out = replay(&server, &config, &["chat", "history"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), live);

    let refused = refusal(&replay(
        &server,
        &config,
        &["chat", "history", "--until", "15"],
    )?);
    assert!(
        refused.contains("its journal ends at input 14"),
        "{refused}"
    );
    let refused = refusal(&replay(&server, &config, &["chat", "nowhere"])?);
    assert!(refused.contains("no such document"), "{refused}");
    let refused = refusal(&replay(&server, &config, &["nochat", "history"])?);
    assert!(refused.contains("unknown plugin 'nochat'"), "{refused}");

    server.kill9()?;
    let out = replay(&server, &config, &["chat", "history"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), live);
    let (texts, _) = lines(&replay(
        &server,
        &config,
        &["chat", "history", "--until", "10"],
    )?)?;
    assert_eq!(texts, numbered(0..7));
    // Without its snapshot the document is rebuilt from its journaled open (the
    // segments still hold every entry: none was sealed, so none was trimmed).
    std::fs::remove_file(server.data.path().join("chat").join("history.snap"))?;
    let out = replay(&server, &config, &["chat", "history"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), live);
    let (_, summary) = lines(&out)?;
    assert!(
        summary.contains("no snapshot, 14 journal entries replayed"),
        "{summary}"
    );
    Ok(())
}

/// After a checkpoint the journal before it is gone: an earlier `--until` is refused,
/// naming the earliest point, which shows the snapshot. A plugin in checkpoint mode has
/// only its snapshot to show, and says so.
#[tokio::test]
async fn replay_starts_at_the_snapshot_and_shows_checkpoint_mode_documents() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = config_file(
        dir.path(),
        "checkpoint_secs = 1\n[plugin.chat]\ndurability = \"journal\"\n",
    )?;
    // `talk` is the chat in checkpoint mode.
    let plugins = Server::plugins_dir(&["chat"])?;
    std::fs::copy(
        plugins.path().join("chat.wasm"),
        plugins.path().join("talk.wasm"),
    )?;
    let server = Server::start_in(plugins, 1, &["--config", config.to_str().expect("UTF-8")])?;
    let mut ann = join(&server, "chat", "trimmed", "ann").await?;
    let mut bob = join(&server, "chat", "trimmed", "bob").await?;
    say(&mut ann, &mut bob, &numbered(0..10)).await?;
    let mut cat = join(&server, "talk", "kept", "cat").await?;
    let mut dan = join(&server, "talk", "kept", "dan").await?;
    say(&mut cat, &mut dan, &numbered(0..5)).await?;

    // Wait for the checkpoint that covers every input (13).
    let deadline = Instant::now() + PATIENCE;
    let refused = loop {
        let out = replay(&server, &config, &["chat", "trimmed", "--until", "1"])?;
        if !out.status.success() {
            let refused = refusal(&out);
            if refused.contains("the earliest point is 13") {
                break refused;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no checkpoint: {out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused.contains("the journal before input 13 was trimmed by a checkpoint"),
        "{refused}"
    );
    let (texts, summary) = lines(&replay(
        &server,
        &config,
        &["chat", "trimmed", "--until", "13"],
    )?)?;
    assert_eq!(texts, numbered(0..10));
    assert!(
        summary.contains("snapshot after input 13") && summary.contains("0 journal entries"),
        "{summary}"
    );
    // What comes after the snapshot is replayed from the journal.
    say(&mut ann, &mut bob, &numbered(10..12)).await?;
    let (texts, _) = lines(&replay(&server, &config, &["chat", "trimmed"])?)?;
    assert_eq!(texts, numbered(0..12));

    // Checkpoint mode: the snapshot, once it holds the lines.
    let deadline = Instant::now() + PATIENCE;
    let summary = loop {
        let out = replay(&server, &config, &["talk", "kept"])?;
        if out.status.success() {
            let (texts, summary) = lines(&out)?;
            if texts == numbered(0..5) {
                break summary;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no checkpoint: {out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        summary.contains("checkpoint mode: no journal, this is its last snapshot"),
        "{summary}"
    );
    let refused = refusal(&replay(
        &server,
        &config,
        &["talk", "kept", "--until", "2"],
    )?);
    assert!(refused.contains("is in checkpoint mode"), "{refused}");
    Ok(())
}

/// The PostgreSQL store has no journal to read.
/// On the shared store, `wasmroom replay --store URL` reads the document's snapshot row
/// and journal rows without taking it, beside the host that serves it.
#[tokio::test]
async fn replay_reads_the_shared_store_beside_its_host() -> anyhow::Result<()> {
    let pg = support::postgres::Postgres::start()?;
    let dir = tempfile::tempdir()?;
    let config = config_file(
        dir.path(),
        "checkpoint_secs = 3600\n[plugin.chat]\ndurability = \"journal\"\n",
    )?;
    let config_arg = config.to_str().context("temp path")?;
    let server = Server::start(&["chat"], 1, &["--store", &pg.url, "--config", config_arg])?;
    let mut ann = join(&server, "chat", "shared", "ann").await?;
    let mut bob = join(&server, "chat", "shared", "bob").await?;
    say(&mut ann, &mut bob, &numbered(0..6)).await?;
    let out = Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .args(["--store", &pg.url, "--plugins"])
        .arg(server.plugins.path())
        .args(["chat", "shared"])
        .env_remove("WASMROOM_STORE")
        .output()?;
    let (texts, summary) = lines(&out)?;
    assert_eq!(texts, numbered(0..6), "{summary}");
    let (_, live) = http(server.addr(0), "GET", "/docs/chat/shared", b"").await?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), live);
    Ok(())
}
