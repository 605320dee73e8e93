//! The input journal's output gate (journal mode), against the real binary with the
//! tests' memory journal (`WASMROOM_TEST_JOURNAL=memory:DELAY_MS[:FAIL_EVERY]`): nothing
//! an input caused leaves the host before the input's record is durable, and a batch
//! that could not be made durable takes its documents, and what they caused, with it.
//! The file and PostgreSQL journals are later stages (see ARCHITECTURE.md).

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Every commit of the memory journal takes this long.
const COMMIT: Duration = Duration::from_millis(300);

fn journaled(plugin: &str, journal: &str) -> anyhow::Result<Server> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        file.path(),
        format!("[plugin.{plugin}]\ndurability = \"journal\"\n"),
    )?;
    let (_, path) = file.keep()?;
    Server::start_with_env(
        &[plugin],
        1,
        &["--config", path.to_str().expect("temp paths are UTF-8")],
        &[("WASMROOM_TEST_JOURNAL", journal)],
    )
}

#[tokio::test]
async fn what_a_message_causes_leaves_only_once_its_record_is_durable() -> anyhow::Result<()> {
    let server = journaled("relay", &format!("memory:{}", COMMIT.as_millis()))?;
    let mut a = server.connect(0, "/ws/relay/gate").await?;
    let mut b = server.connect(0, "/ws/relay/gate").await?;
    let sent = Instant::now();
    send_text(&mut a, "hello").await?;
    assert_eq!(recv_text(&mut b).await?, "hello");
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(
        sent.elapsed() >= COMMIT,
        "delivered after {:?}, before its commit",
        sent.elapsed()
    );
    let addr = server.addr(0);
    let commits = metric(addr, "wasmroom_journal_commits_total", &["outcome=\"ok\""]).await?;
    let records = metric(addr, "wasmroom_journal_records_total", &[]).await?;
    // Two connects and the message, each waited for.
    assert!(
        commits >= 2.0 && records >= 3.0,
        "{commits} commits, {records} records"
    );
    Ok(())
}

#[tokio::test]
async fn an_http_answer_and_an_accepted_upgrade_wait_for_their_records() -> anyhow::Result<()> {
    let server = journaled("chat", &format!("memory:{}", COMMIT.as_millis()))?;
    let asked = Instant::now();
    let (status, _) = http(server.addr(0), "POST", "/docs/chat/http", b"a line").await?;
    assert_eq!(status, 201);
    assert!(
        asked.elapsed() >= COMMIT,
        "answered after {:?}",
        asked.elapsed()
    );
    let asked = Instant::now();
    let mut ws = server.connect(0, "/ws/chat/http?name=ann").await?;
    assert!(
        asked.elapsed() >= COMMIT,
        "upgraded after {:?}",
        asked.elapsed()
    );
    let history = recv_json(&mut ws).await?;
    assert!(history.to_string().contains("a line"), "{history}");
    Ok(())
}

#[tokio::test]
async fn a_batch_that_cannot_be_made_durable_takes_its_document_and_output_along()
-> anyhow::Result<()> {
    // Commits 1 and 2 (the two connects) succeed, commit 3 (the message) fails.
    let server = journaled("relay", "memory:0:3")?;
    let mut a = server.connect(0, "/ws/relay/failing").await?;
    let mut b = server.connect(0, "/ws/relay/failing").await?;
    send_text(&mut a, "never seen").await?;
    // What the message caused never leaves: the next thing b hears is the close.
    match recv(&mut b).await? {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1012);
            assert!(frame.reason.contains("journal"), "{}", frame.reason);
        }
        other => anyhow::bail!("b got {other:?} before its close"),
    }
    assert_eq!(expect_close(&mut a).await?.0, 1012);
    let failed = metric(
        server.addr(0),
        "wasmroom_journal_commits_total",
        &["outcome=\"failed\""],
    )
    .await?;
    assert_eq!(failed, 1.0);
    Ok(())
}

#[test]
fn journal_mode_without_a_journal_store_refuses_to_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wasmroom.toml");
    std::fs::write(&config, "[plugin.chat]\ndurability = \"journal\"\n")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args(["serve", "--port", "0", "--plugins"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env_remove("WASMROOM_TEST_JOURNAL")
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin 'chat' asks for durability = \"journal\""),
        "{stderr}"
    );
    Ok(())
}
