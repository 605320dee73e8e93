//! Journal mode for the other bundled stateful consumers (tests/journal.rs has the chat):
//! every edit another client saw of a `textdoc` or `yjs` document is in it after `kill -9`
//! and a restart, in order, once. Checkpoints are an hour apart, so only the journal can
//! keep them.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::streaming::Stream;
use support::*;

/// A server whose `plugin` journals on the file journal, with no checkpoint for an hour.
fn journaled(plugin: &str) -> anyhow::Result<Server> {
    Server::start_with_config(
        &[plugin],
        1,
        &format!("checkpoint_secs = 3600\n[plugin.{plugin}]\ndurability = \"journal\"\n"),
    )
}

/// The textdoc edit that makes version `n + 1`: `"{n};"`.
fn edit(n: usize) -> String {
    format!("{n};")
}

/// The text after versions 1 to `v`: each edit once, in order.
fn edits_up_to(v: usize) -> String {
    (0..v).map(edit).collect()
}

/// A `steps` message of textdoc as (version, inserted text); anything else is `None`.
fn confirmed_edit(m: &Value) -> anyhow::Result<Option<(usize, String)>> {
    if m["type"] != "steps" {
        return Ok(None);
    }
    let v = m["v"].as_u64().ok_or_else(|| anyhow::anyhow!("{m}"))? as usize;
    let text = m["steps"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Some((v, text)))
}

/// A writer streams edits to a textdoc document, each appending `"{n};"` at the version
/// it makes (the writer is the only editor, so edit n is made against version n and
/// becomes version n + 1 without waiting for its confirmation); a reader records every
/// version it is sent. Twenty times, `kill -9` at another point of the stream: after the
/// restart the text holds every edit the reader saw, in order, once each, at a version
/// at least the reader's last.
#[tokio::test]
async fn every_textdoc_edit_another_client_saw_survives_kill_9() -> anyhow::Result<()> {
    for run in 0..20 {
        let mut server = journaled("textdoc")?;
        let mut writer = server.connect(0, "/ws/textdoc/kill").await?;
        assert_eq!(recv_json(&mut writer).await?["v"], 0);
        let mut reader = server.connect(0, "/ws/textdoc/kill").await?;
        assert_eq!(recv_json(&mut reader).await?["v"], 0);
        // Positions count chars; the edits are ASCII.
        let mut end = 0;
        let stream = Stream::start_with(writer, 0, Duration::from_millis(2), move |n| {
            let step = json!({"op": "insert", "pos": end, "text": edit(n)});
            end += edit(n).len();
            json!({"type": "diff", "v": n, "rid": n, "steps": [step]}).to_string()
        });
        let wanted = 20 + run * 13;
        let mut seen = Vec::new();
        while seen.len() < wanted {
            if let Some(step) = confirmed_edit(&recv_json(&mut reader).await?)? {
                seen.push(step);
            }
        }
        server.kill9()?;
        // What else reached the reader before the process died was seen too.
        while let Ok(m) = recv_json(&mut reader).await {
            if let Some(step) = confirmed_edit(&m)? {
                seen.push(step);
            }
        }
        let streamed = stream.finished().await?;
        let expected: Vec<(usize, String)> = (0..seen.len()).map(|n| (n + 1, edit(n))).collect();
        assert_eq!(
            seen, expected,
            "run {run}: the reader saw each version once"
        );

        let server = server.restart()?;
        let (status, body) = http(server.addr(0), "GET", "/docs/textdoc/kill", b"").await?;
        anyhow::ensure!(status == 200, "run {run}: GET: {status} {body}");
        let doc: Value = serde_json::from_str(&body)?;
        let v = doc["v"].as_u64().unwrap_or_default() as usize;
        let text = doc["text"].as_str().unwrap_or_default();
        assert_eq!(
            text,
            edits_up_to(v),
            "run {run}: the edits of versions 1 to {v}, in order, once each"
        );
        assert!(
            v >= seen.len(),
            "run {run}: the reader saw version {}, the document is at {v} (the writer sent {})",
            seen.len(),
            streamed.sent
        );
    }
    Ok(())
}

/// `items` as the Node scenarios print them (a JSON array of strings).
fn items(summary: &str) -> anyhow::Result<Vec<String>> {
    serde_json::from_str(summary).map_err(|e| anyhow::anyhow!("{e}: {summary}"))
}

/// `item 0` up to `item {n - 1}`.
fn numbered_items(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("item {i}")).collect()
}

/// With unmodified `yjs` + `y-websocket` clients (tests/yjs/scenarios.mjs): a writer
/// pushes numbered items into a `Y.Array`, one update every 2 ms; once a reader has seen
/// N of them (N varying between runs), the server gets `kill -9`; after the restart a
/// fresh client's array holds every item the reader saw, in order, once each. Twenty
/// runs (each starts two Node processes: about a second a run).
#[test]
fn every_yjs_item_another_client_saw_survives_kill_9() -> anyhow::Result<()> {
    use support::yjs::run;
    for (run_no, kill_after) in (0..20).map(|i| 10 + 17 * i).enumerate() {
        let server = journaled("yjs")?;
        let params = json!({ "killAfter": kill_after });
        let seen = items(&run(&server, "kill-stream", "kill", &params, |_| {
            server.signal("KILL")
        })?)?;
        assert!(seen.len() >= kill_after, "run {run_no}: {seen:?}");
        assert_eq!(
            seen,
            numbered_items(seen.len()),
            "run {run_no}: what the reader saw"
        );

        let server = server.restart()?;
        let kept = items(&run(&server, "kill-check", "kill", &json!({}), |why| {
            anyhow::bail!("kill-check paused ({why})")
        })?)?;
        assert_eq!(
            kept,
            numbered_items(kept.len()),
            "run {run_no}: items kept in order, once each"
        );
        assert!(
            kept.len() >= seen.len(),
            "run {run_no}: the reader saw {} items, {} kept",
            seen.len(),
            kept.len()
        );
    }
    Ok(())
}
