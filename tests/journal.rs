//! The input journal (journal mode), against the real binary.
//!
//! With the tests' memory journal (`WASMROOM_TEST_JOURNAL=memory:DELAY_MS[:FAIL_EVERY]`):
//! nothing an input caused leaves the host before the input's record is durable, and a
//! batch that could not be made durable takes its documents, and what they caused, with
//! it. With the file journal (the default on the file store): nothing another client saw
//! is lost to `kill -9`, and a consumer that traps keeps every input before the trap.

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

/// A server whose `plugin` journals on the file journal, with `more` config; no
/// checkpoint for an hour, so only the journal can keep what happens.
fn file_journaled(plugins: &[&str], journaled: &str, more: &str) -> anyhow::Result<Server> {
    Server::start_with_config(
        plugins,
        1,
        &format!("checkpoint_secs = 3600\n[plugin.{journaled}]\ndurability = \"journal\"\n{more}"),
    )
}

/// Every line another client saw is in the document after `kill -9` and a restart, in
/// the order it was sent, once. Twenty times, the kill coming at another point of a
/// stream of lines each time. (Checkpoints are an hour apart: only the journal keeps
/// them.)
#[tokio::test]
async fn every_line_another_client_saw_survives_kill_9() -> anyhow::Result<()> {
    use support::streaming::Stream;
    let more = "[plugin.chat.settings]\nhistory = \"100000\"\n";
    for run in 0..20 {
        let mut server = file_journaled(&["chat"], "chat", more)?;
        let mut writer = server.connect(0, "/ws/chat/kill?name=writer").await?;
        assert_eq!(recv_json(&mut writer).await?["type"], "history");
        let mut reader = server.connect(0, "/ws/chat/kill?name=reader").await?;
        assert_eq!(recv_json(&mut reader).await?["type"], "history");
        let stream = Stream::start(writer, "line ", Duration::from_millis(2));
        let wanted = 20 + run * 13;
        let mut seen = Vec::new();
        while seen.len() < wanted {
            let m = recv_json(&mut reader).await?;
            if m["type"] == "message" {
                seen.push(m["text"].as_str().unwrap_or_default().to_owned());
            }
        }
        server.kill9()?;
        // What else reached the reader before the process died was seen too.
        while let Ok(m) = recv_json(&mut reader).await {
            if m["type"] == "message" {
                seen.push(m["text"].as_str().unwrap_or_default().to_owned());
            }
        }
        let streamed = stream.finished().await?;
        let server = server.restart()?;
        let (status, body) = http(server.addr(0), "GET", "/docs/chat/kill", b"").await?;
        anyhow::ensure!(status == 200, "run {run}: GET: {status} {body}");
        let kept = support::streaming::chat_texts(&body)?;
        let expected: Vec<String> = (0..kept.len()).map(|i| format!("line {i}")).collect();
        assert_eq!(kept, expected, "run {run}: lines kept in order, once each");
        assert!(
            kept.len() >= seen.len(),
            "run {run}: the reader saw {} lines, {} kept (the writer sent {})",
            seen.len(),
            kept.len(),
            streamed.sent
        );
    }
    Ok(())
}

/// A consumer that traps on a message, a connection or a request keeps its document and
/// every other socket: the document is rebuilt in place from its checkpoint and journal
/// without the input that trapped (never journaled), only that input's sender is refused,
/// and what comes next applies, also after a `kill -9` (the journal has no gap where the
/// refused input was).
#[tokio::test]
async fn a_consumer_that_traps_keeps_its_document_and_its_other_sockets() -> anyhow::Result<()> {
    // The probe keeps its notes in memory only (its snapshot is empty): only a replay of
    // its inputs brings them back.
    let mut server = file_journaled(&["probe"], "probe", "")?;
    let mut a = server.connect(0, "/ws/probe/trap").await?;
    let mut b = server.connect(0, "/ws/probe/trap").await?;
    send_text(&mut a, "note one").await?;
    send_text(&mut b, "note two").await?;
    send_text(&mut a, "log logged-once").await?;
    assert_eq!(recv_text(&mut a).await?, "logged");
    send_text(&mut a, "notes").await?;
    assert_eq!(recv_text(&mut a).await?, "one,two");

    send_text(&mut b, "panic").await?;
    let (code, reason) = expect_close(&mut b).await?;
    assert_eq!(
        (code, reason.as_str()),
        (
            1011,
            "the consumer failed on this input; it was not applied"
        )
    );
    drop(b);
    send_text(&mut a, "notes").await?;
    assert_eq!(
        recv_text(&mut a).await?,
        "one,two",
        "a kept its socket and the document its state"
    );
    send_text(&mut a, "note three").await?;

    // A connection and a request that trap are refused; the document goes on.
    let refused = server.connect(0, "/ws/probe/trap?panic=no").await;
    assert!(
        refused.is_err(),
        "a connection whose on-connect trapped is refused"
    );
    let (status, body) = http(server.addr(0), "GET", "/docs/probe/trap?panic=no", b"").await?;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        "the consumer failed on this input; it was not applied\n"
    );
    send_text(&mut a, "notes").await?;
    assert_eq!(recv_text(&mut a).await?, "one,two,three");
    // b's socket ends once its close handshake is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send_text(&mut a, "departed").await?;
        let departed = recv_text(&mut a).await?;
        if !departed.is_empty() {
            assert_eq!(departed, "2:1011", "only b left");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "b never left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A replay does not log again what the consumer logged.
    let logged = |server: &Server| {
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("logged-once"))
            .count()
    };
    assert_eq!(logged(&server), 1, "three rebuilds replayed the log input");

    // The journal goes on from the rebuilt document without a gap.
    server.kill9()?;
    let server = server.restart()?;
    let mut c = server.connect(0, "/ws/probe/trap").await?;
    send_text(&mut c, "notes").await?;
    assert_eq!(
        recv_text(&mut c).await?,
        "one,two,three",
        "the notes came back"
    );
    send_text(&mut c, "departed").await?;
    assert_eq!(recv_text(&mut c).await?, "2:1011,1:1006");
    assert_eq!(logged(&server), 0, "the reopening replayed the log input");
    send_text(&mut c, "id").await?;
    // Ids go on after every one the consumer saw (3, refused when its `on-connect`
    // trapped, never reached the journal).
    assert_eq!(recv_text(&mut c).await?, "3");
    Ok(())
}

/// A batch (a read's messages in one `on-messages` call, Rust SDK) that traps is one
/// input: it is refused whole, only its sender hears of it, and the document goes on.
#[tokio::test]
async fn a_batch_that_traps_is_refused_whole_and_the_document_goes_on() -> anyhow::Result<()> {
    use futures_util::SinkExt;
    let server = file_journaled(&["probe"], "probe", "")?;
    let mut a = server.connect(0, "/ws/probe/batch-trap").await?;
    let mut b = server.connect(0, "/ws/probe/batch-trap").await?;
    send_text(&mut a, "note one").await?;
    for text in ["note two", "panic", "note three"] {
        b.feed(Message::text(text)).await?;
    }
    b.flush().await?;
    let (code, reason) = expect_close(&mut b).await?;
    assert_eq!(
        (code, reason.as_str()),
        (
            1011,
            "the consumer failed on this input; it was not applied"
        )
    );
    send_text(&mut a, "notes").await?;
    assert_eq!(
        recv_text(&mut a).await?,
        "one",
        "the batch was refused whole"
    );
    let kept = ["plugin=\"probe\"", "outcome=\"kept\""];
    let rebuilds = metric(server.addr(0), "wasmroom_journal_rebuilds_total", &kept).await?;
    assert_eq!(rebuilds, 1.0);
    Ok(())
}

/// A rebuild is bounded: a document that keeps trapping is rebuilt a few times a minute,
/// then crashes as in checkpoint mode (every socket closed with 1011), and reopens from
/// its journal.
#[tokio::test]
async fn a_document_that_keeps_trapping_crashes_after_a_few_rebuilds() -> anyhow::Result<()> {
    let server = file_journaled(&["probe"], "probe", "")?;
    let mut a = server.connect(0, "/ws/probe/loop").await?;
    send_text(&mut a, "note kept").await?;
    for _ in 0..3 {
        let mut b = server.connect(0, "/ws/probe/loop").await?;
        send_text(&mut b, "panic").await?;
        assert_eq!(expect_close(&mut b).await?.0, 1011);
    }
    send_text(&mut a, "notes").await?;
    assert_eq!(recv_text(&mut a).await?, "kept");
    send_text(&mut a, "panic").await?;
    assert_eq!(
        expect_close(&mut a).await?,
        (1011, "consumer crashed".to_owned())
    );
    let mut c = server.connect(0, "/ws/probe/loop").await?;
    send_text(&mut c, "notes").await?;
    assert_eq!(recv_text(&mut c).await?, "kept");
    let kept = ["plugin=\"probe\"", "outcome=\"kept\""];
    let rebuilds = metric(server.addr(0), "wasmroom_journal_rebuilds_total", &kept).await?;
    assert_eq!(rebuilds, 3.0);
    Ok(())
}

/// A document rebuilt from its journal after `kill -9` is the one that died: its inputs
/// replayed from the same clock and random streams, it holds what its guest saw of time
/// and randomness then (the probe keeps them in memory only: its snapshot is empty), and
/// the chat's lines carry the times they had.
#[tokio::test]
async fn a_document_rebuilt_after_kill_9_is_the_one_that_died() -> anyhow::Result<()> {
    let mut server = file_journaled(
        &["probe", "chat"],
        "probe",
        "[plugin.chat]\ndurability = \"journal\"\n",
    )?;
    let mut probe = server.connect(0, "/ws/probe/same").await?;
    for _ in 0..3 {
        send_text(&mut probe, "note-observed").await?;
    }
    send_text(&mut probe, "notes").await?;
    let before = recv_text(&mut probe).await?;
    let mut ann = server.connect(0, "/ws/chat/same?name=ann").await?;
    let mut bob = server.connect(0, "/ws/chat/same?name=bob").await?;
    support::streaming::say_lines(&mut ann, &mut bob, 5).await?;
    let (_, chat_before) = http(server.addr(0), "GET", "/docs/chat/same", b"").await?;
    server.kill9()?;
    let server = server.restart()?;
    let mut probe = server.connect(0, "/ws/probe/same").await?;
    send_text(&mut probe, "notes").await?;
    assert_eq!(recv_text(&mut probe).await?, before);
    let (_, chat_after) = http(server.addr(0), "GET", "/docs/chat/same", b"").await?;
    assert_eq!(chat_after, chat_before);
    Ok(())
}

/// The messages of one read are one input: one record, journaled once the call returns,
/// that a restart after `kill -9` replays as the same call, from the same clock and
/// random stream (the probe keeps what it observed in memory only).
#[tokio::test]
async fn a_batch_of_messages_is_one_record_and_replays_as_one_call() -> anyhow::Result<()> {
    use futures_util::SinkExt;
    let mut server = file_journaled(&["probe"], "probe", "")?;
    let addr = server.addr(0);
    let mut ws = server.connect(0, "/ws/probe/batched").await?;
    // An output leaves only once its record is durable: counted by then.
    send_text(&mut ws, "id").await?;
    recv_text(&mut ws).await?;
    let records = metric(addr, "wasmroom_journal_records_total", &[]).await?;
    for text in ["note one", "note-observed", "note two", "batch"] {
        ws.feed(Message::text(text)).await?;
    }
    ws.flush().await?;
    assert_eq!(recv_text(&mut ws).await?, "batch 4");
    let after = metric(addr, "wasmroom_journal_records_total", &[]).await?;
    assert_eq!(after - records, 1.0, "four messages, one record");
    send_text(&mut ws, "notes").await?;
    let before = recv_text(&mut ws).await?;
    assert!(
        before.starts_with("one,") && before.ends_with(",two"),
        "{before}"
    );
    server.kill9()?;
    let server = server.restart()?;
    let mut ws = server.connect(0, "/ws/probe/batched").await?;
    send_text(&mut ws, "notes").await?;
    assert_eq!(
        recv_text(&mut ws).await?,
        before,
        "the same notes, the same draws"
    );
    let replayed = metric(
        server.addr(0),
        "wasmroom_guest_call_seconds_count",
        &["export=\"on-messages\""],
    )
    .await?;
    assert_eq!(replayed, 1.0, "replayed as one call");
    Ok(())
}

/// A journal file cut in the middle of its last record (a write the process died in)
/// recovers to the last whole record: the document opens with every input before it,
/// the log says how many bytes were ignored, and what the document journals next lands
/// after the cut, where a second restart finds it.
#[tokio::test]
async fn a_torn_journal_tail_recovers_to_the_last_whole_record() -> anyhow::Result<()> {
    let mut server = file_journaled(&["chat"], "chat", "")?;
    let mut writer = server.connect(0, "/ws/chat/torn?name=w").await?;
    assert_eq!(recv_json(&mut writer).await?["type"], "history");
    let mut reader = server.connect(0, "/ws/chat/torn?name=r").await?;
    assert_eq!(recv_json(&mut reader).await?["type"], "history");
    for line in ["one", "two", "three"] {
        send_text(&mut writer, line).await?;
        assert_eq!(recv_json(&mut reader).await?["text"], line);
    }
    server.kill9()?;
    // The lane's last segment ends with the record of "three": cut 5 bytes into it.
    let lane = server.data.path().join("journal").join("lane-0");
    let mut segments: Vec<_> = std::fs::read_dir(&lane)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let len = std::fs::metadata(last)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)?
        .set_len(len - 5)?;

    let mut server = server.restart()?;
    let torn = server
        .log_lines()
        .iter()
        .any(|l| l.contains("torn write") && l.contains("bytes ignored"));
    assert!(torn, "{:?}", server.log_lines());
    let (status, body) = http(server.addr(0), "GET", "/docs/chat/torn", b"").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(support::streaming::chat_texts(&body)?, ["one", "two"]);
    // The journal goes on after the cut.
    let mut writer = server.connect(0, "/ws/chat/torn?name=w").await?;
    assert_eq!(recv_json(&mut writer).await?["type"], "history");
    let mut reader = server.connect(0, "/ws/chat/torn?name=r").await?;
    assert_eq!(recv_json(&mut reader).await?["type"], "history");
    send_text(&mut writer, "four").await?;
    assert_eq!(recv_json(&mut reader).await?["text"], "four");
    server.kill9()?;
    let server = server.restart()?;
    let (_, body) = http(server.addr(0), "GET", "/docs/chat/torn", b"").await?;
    assert_eq!(
        support::streaming::chat_texts(&body)?,
        ["one", "two", "four"]
    );
    Ok(())
}
