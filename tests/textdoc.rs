//! The `textdoc` consumer end to end: central-authority collaborative editing with
//! versions, rebasing and refetching, over the real binary and real WebSocket clients.

mod support;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn ins(pos: u64, text: &str) -> Value {
    json!({"op": "insert", "pos": pos, "text": text})
}

fn del(pos: u64, len: u64) -> Value {
    json!({"op": "delete", "pos": pos, "len": len})
}

async fn send_diff(ws: &mut Ws, v: u64, rid: u64, steps: Value) -> anyhow::Result<()> {
    let diff = json!({"type": "diff", "v": v, "rid": rid, "steps": steps});
    send_text(ws, &diff.to_string()).await
}

/// `GET /docs/textdoc/{doc}` as (version, text).
async fn fetch(server: &Server, doc: &str) -> anyhow::Result<(u64, String)> {
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/textdoc/{doc}"), b"").await?;
    anyhow::ensure!(status == 200, "GET {doc}: {status} {body}");
    let doc: Value = serde_json::from_str(&body)?;
    Ok((
        doc["v"].as_u64().unwrap(),
        doc["text"].as_str().unwrap().to_owned(),
    ))
}

/// What a client keeps: the confirmed version and text, as a prosemirror-collab client
/// would (positions in chars).
struct Replica {
    v: u64,
    text: Vec<char>,
}

impl Replica {
    /// From the `doc` message a client gets when it connects.
    async fn join(ws: &mut Ws) -> anyhow::Result<Replica> {
        let doc = recv_json(ws).await?;
        anyhow::ensure!(doc["type"] == "doc", "expected the document, got {doc}");
        Ok(Replica {
            v: doc["v"].as_u64().unwrap(),
            text: doc["text"].as_str().unwrap().chars().collect(),
        })
    }

    fn apply(&mut self, v: u64, steps: &Value) {
        assert_eq!(v, self.v + 1, "versions arrive in order, without gaps");
        for step in steps.as_array().unwrap() {
            let pos = step["pos"].as_u64().unwrap() as usize;
            match step["op"].as_str().unwrap() {
                "insert" => {
                    let new = step["text"].as_str().unwrap().chars();
                    self.text.splice(pos..pos, new);
                }
                "delete" => {
                    let len = step["len"].as_u64().unwrap() as usize;
                    self.text.drain(pos..pos + len);
                }
                op => panic!("unknown op {op}"),
            }
        }
        self.v = v;
    }

    fn text(&self) -> String {
        self.text.iter().collect()
    }
}

/// Maps a position through steps made by someone else (an insert at the same position
/// goes first, as the server ordered it).
fn map_pos(mut pos: u64, steps: &Value) -> u64 {
    for step in steps.as_array().unwrap() {
        let at = step["pos"].as_u64().unwrap();
        match step["op"].as_str().unwrap() {
            "insert" if at <= pos => pos += step["text"].as_str().unwrap().chars().count() as u64,
            "delete" if at < pos => pos -= step["len"].as_u64().unwrap().min(pos - at),
            _ => {}
        }
    }
    pos
}

#[tokio::test]
async fn a_client_gets_the_text_and_version_on_connect() -> anyhow::Result<()> {
    let server = Server::start(&["textdoc"], 1, &[])?;
    let mut a = server.connect(0, "/ws/textdoc/intro").await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "doc", "v": 0, "text": ""})
    );
    // A backend sets the initial text, only if nobody has edited yet.
    let put = |v: &str| format!("/docs/textdoc/intro?v={v}");
    let (status, body) = http(server.addr(0), "PUT", &put("0"), "Grüße 🎉".as_bytes()).await?;
    assert_eq!((status, body.as_str()), (200, r#"{"v":1}"#));
    let (status, body) = http(server.addr(0), "PUT", &put("0"), b"too late").await?;
    assert_eq!(status, 409, "{body}");
    // The connected client gets it as an ordinary diff.
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "steps", "v": 1, "steps": [ins(0, "Grüße 🎉")]})
    );
    let mut b = server.connect(0, "/ws/textdoc/intro").await?;
    assert_eq!(
        recv_json(&mut b).await?,
        json!({"type": "doc", "v": 1, "text": "Grüße 🎉"})
    );
    assert_eq!(fetch(&server, "intro").await?, (1, "Grüße 🎉".to_owned()));
    let (status, _) = http(server.addr(0), "DELETE", "/docs/textdoc/intro", b"").await?;
    assert_eq!(status, 405);
    Ok(())
}

#[tokio::test]
async fn a_diff_at_the_current_version_is_confirmed_to_the_sender_and_sent_to_the_others()
-> anyhow::Result<()> {
    let server = Server::start(&["textdoc"], 1, &[])?;
    let mut a = server.connect(0, "/ws/textdoc/live").await?;
    let mut b = server.connect(0, "/ws/textdoc/live").await?;
    let mut ra = Replica::join(&mut a).await?;
    let mut rb = Replica::join(&mut b).await?;

    // Positions count chars: "é" and "🎉" are one each.
    let steps = json!([ins(0, "héllo 🎉!"), del(6, 1)]);
    send_diff(&mut a, 0, 1, steps.clone()).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "confirm", "rid": 1, "v": 1})
    );
    ra.apply(1, &steps);
    let got = recv_json(&mut b).await?;
    assert_eq!(got, json!({"type": "steps", "v": 1, "steps": steps}));
    rb.apply(1, &got["steps"]);

    let steps = json!([ins(5, ", world")]);
    send_diff(&mut b, 1, 1, steps.clone()).await?;
    assert_eq!(
        recv_json(&mut b).await?,
        json!({"type": "confirm", "rid": 1, "v": 2})
    );
    rb.apply(2, &steps);
    // a's next message is b's diff: had a been sent its own diff back, that would come
    // first.
    let got = recv_json(&mut a).await?;
    assert_eq!(got, json!({"type": "steps", "v": 2, "steps": steps}));
    ra.apply(2, &got["steps"]);

    assert_eq!(ra.text(), "héllo, world !");
    assert_eq!(rb.text(), ra.text());
    assert_eq!(fetch(&server, "live").await?, (2, ra.text()));
    Ok(())
}

#[tokio::test]
async fn a_stale_diff_gets_the_missing_steps_and_succeeds_after_rebasing() -> anyhow::Result<()> {
    let server = Server::start(&["textdoc"], 1, &[])?;
    let (status, _) = http(server.addr(0), "PUT", "/docs/textdoc/race", b"hello").await?;
    assert_eq!(status, 200);
    let mut a = server.connect(0, "/ws/textdoc/race").await?;
    let mut b = server.connect(0, "/ws/textdoc/race").await?;
    let mut ra = Replica::join(&mut a).await?;
    let mut rb = Replica::join(&mut b).await?;
    assert_eq!((ra.v, ra.text()), (1, "hello".to_owned()));

    // Both edit version 1; a's diff reaches the server first.
    let a_steps = json!([del(0, 1), ins(0, "J")]);
    send_diff(&mut a, 1, 10, a_steps.clone()).await?;
    assert_eq!(recv_json(&mut a).await?["v"], 2);
    ra.apply(2, &a_steps);
    let b_pos = 5; // after "hello"
    send_diff(&mut b, 1, 20, json!([ins(b_pos, " world")])).await?;

    // b first gets a's steps (sent before its diff was handled), then the answer to
    // its own diff: behind, with everything it missed, nothing applied.
    let steps = recv_json(&mut b).await?;
    assert_eq!(steps["type"], "steps");
    let behind = recv_json(&mut b).await?;
    assert_eq!(
        behind,
        json!({"type": "behind", "rid": 20, "v": 2, "diffs": [{"v": 2, "steps": a_steps}]})
    );
    // The client skips what it has already applied, rebases and retries.
    rb.apply(2, &steps["steps"]);
    let rebased = json!([ins(map_pos(b_pos, &a_steps), " world")]);
    send_diff(&mut b, rb.v, 21, rebased.clone()).await?;
    assert_eq!(
        recv_json(&mut b).await?,
        json!({"type": "confirm", "rid": 21, "v": 3})
    );
    rb.apply(3, &rebased);
    let got = recv_json(&mut a).await?;
    assert_eq!(got["v"], 3);
    ra.apply(3, &got["steps"]);

    assert_eq!(ra.text(), "Jello world");
    assert_eq!(rb.text(), ra.text());
    assert_eq!(fetch(&server, "race").await?, (3, ra.text()));
    Ok(())
}

#[tokio::test]
async fn a_diff_ahead_of_the_server_or_older_than_the_history_must_refetch() -> anyhow::Result<()> {
    let server = Server::start(&["textdoc"], 1, &[])?;
    let mut a = server.connect(0, "/ws/textdoc/far").await?;
    Replica::join(&mut a).await?;

    send_diff(&mut a, 3, 1, json!([ins(0, "x")])).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "refetch", "rid": 1, "v": 0, "text": ""})
    );

    // Version 1: 1000 steps, the whole history. Version 2 pushes it out.
    let many: Vec<Value> = (0..1000).map(|_| ins(0, "a")).collect();
    send_diff(&mut a, 0, 2, Value::Array(many)).await?;
    assert_eq!(recv_json(&mut a).await?["type"], "confirm");
    send_diff(&mut a, 1, 3, json!([ins(0, "b")])).await?;
    assert_eq!(recv_json(&mut a).await?["type"], "confirm");

    // Version 0 would need version 1's steps, which are gone.
    send_diff(&mut a, 0, 4, json!([ins(0, "c")])).await?;
    let expected_text = format!("b{}", "a".repeat(1000));
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "refetch", "rid": 4, "v": 2, "text": expected_text})
    );
    // Version 1 needs only version 2: still there.
    send_diff(&mut a, 1, 5, json!([ins(0, "c")])).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "behind", "rid": 5, "v": 2, "diffs": [{"v": 2, "steps": [ins(0, "b")]}]})
    );
    assert_eq!(fetch(&server, "far").await?, (2, expected_text));
    Ok(())
}

#[tokio::test]
async fn invalid_messages_get_an_error_and_change_nothing() -> anyhow::Result<()> {
    let server = Server::start(&["textdoc"], 1, &[])?;
    let (status, _) = http(server.addr(0), "PUT", "/docs/textdoc/strict", b"abcd").await?;
    assert_eq!(status, 200);
    let mut a = server.connect(0, "/ws/textdoc/strict").await?;
    let mut b = server.connect(0, "/ws/textdoc/strict").await?;
    Replica::join(&mut a).await?;
    let mut rb = Replica::join(&mut b).await?;

    let diff = |rid: u64, steps: Value| json!({"type": "diff", "v": 1, "rid": rid, "steps": steps});
    let cases = [
        // Steps 0 to 2 are valid, step 3 is out of range after them: none applies.
        (
            diff(1, json!([ins(4, "e"), del(0, 1), ins(0, "A"), del(4, 2)])),
            json!(1),
            "steps[3]: delete of 2 chars at 4 reaches beyond the end",
        ),
        (
            diff(2, json!([ins(5, "x")])),
            json!(2),
            "steps[0]: insert at 5 is beyond",
        ),
        (
            diff(3, json!([{"op": "move", "pos": 0}])),
            json!(3),
            "unknown variant `move`",
        ),
        (diff(4, json!([ins(0, "")])), json!(4), "non-empty text"),
        (
            json!({"type": "cursor", "rid": 5}),
            json!(5),
            "unknown message type \"cursor\"",
        ),
    ];
    for (msg, rid, needle) in cases {
        send_text(&mut a, &msg.to_string()).await?;
        let got = recv_json(&mut a).await?;
        assert_eq!(
            (&got["type"], &got["rid"]),
            (&json!("error"), &rid),
            "{got}"
        );
        let reason = got["reason"].as_str().unwrap();
        assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
    }
    send_text(&mut a, "{\"type\": \"diff\",").await?;
    let got = recv_json(&mut a).await?;
    assert_eq!((&got["type"], &got["rid"]), (&json!("error"), &Value::Null));
    assert!(
        got["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );
    a.send(Message::binary(b"abcd".to_vec())).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "error", "rid": null, "reason": "textdoc takes JSON text messages only"})
    );

    assert_eq!(fetch(&server, "strict").await?, (1, "abcd".to_owned()));
    // b heard nothing of the refused diffs: its next message is the next valid one.
    send_diff(&mut a, 1, 6, json!([ins(4, "e")])).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "confirm", "rid": 6, "v": 2})
    );
    let got = recv_json(&mut b).await?;
    assert_eq!(
        got,
        json!({"type": "steps", "v": 2, "steps": [ins(4, "e")]})
    );
    rb.apply(2, &got["steps"]);
    assert_eq!(fetch(&server, "strict").await?, (2, rb.text()));
    Ok(())
}

#[tokio::test]
async fn text_version_and_history_survive_a_restart() -> anyhow::Result<()> {
    // A checkpoint interval far away: only the shutdown save can keep the state.
    let mut server = Server::start(&["textdoc"], 1, &["--checkpoint", "3600"])?;
    let mut a = server.connect(0, "/ws/textdoc/kept").await?;
    Replica::join(&mut a).await?;
    send_diff(&mut a, 0, 1, json!([ins(0, "one")])).await?;
    assert_eq!(recv_json(&mut a).await?["v"], 1);
    send_diff(&mut a, 1, 2, json!([ins(3, " two")])).await?;
    assert_eq!(recv_json(&mut a).await?["v"], 2);

    let stopping = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    assert_eq!(expect_close(&mut a).await?.0, 1012);
    let (server, status) = stopping.await?;
    assert!(status?.success());
    let server = server.restart()?;

    assert_eq!(fetch(&server, "kept").await?, (2, "one two".to_owned()));
    let mut a = server.connect(0, "/ws/textdoc/kept").await?;
    let ra = Replica::join(&mut a).await?;
    assert_eq!((ra.v, ra.text()), (2, "one two".to_owned()));
    // The history came back too: a client still at version 1 can rebase.
    send_diff(&mut a, 1, 3, json!([ins(0, ">")])).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "behind", "rid": 3, "v": 2, "diffs": [{"v": 2, "steps": [ins(3, " two")]}]})
    );
    Ok(())
}

#[tokio::test]
async fn a_hot_reload_keeps_text_version_history_and_sockets() -> anyhow::Result<()> {
    let server = Server::start(&["textdoc"], 1, &[])?;
    let mut a = server.connect(0, "/ws/textdoc/reloaded").await?;
    let mut b = server.connect(0, "/ws/textdoc/reloaded").await?;
    Replica::join(&mut a).await?;
    Replica::join(&mut b).await?;
    for (v, rid, steps) in [
        (0, 1, json!([ins(0, "one")])),
        (1, 2, json!([ins(3, " two")])),
    ] {
        send_diff(&mut a, v, rid, steps.clone()).await?;
        assert_eq!(
            recv_json(&mut a).await?,
            json!({"type": "confirm", "rid": rid, "v": v + 1})
        );
        assert_eq!(
            recv_json(&mut b).await?,
            json!({"type": "steps", "v": v + 1, "steps": steps})
        );
    }

    let old = plugin_entry(&server, "textdoc").await?["current"]["version"].clone();
    deploy(
        &server,
        "textdoc",
        &rebuilt(&built_plugins_dir().join("textdoc.wasm"))?,
    )?;
    wait_for_new_version(&server, "textdoc", &old, 1).await?;

    // The same sockets go on at the same version, on the new instance.
    send_diff(&mut b, 2, 1, json!([ins(0, ">")])).await?;
    assert_eq!(
        recv_json(&mut b).await?,
        json!({"type": "confirm", "rid": 1, "v": 3})
    );
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "steps", "v": 3, "steps": [ins(0, ">")]})
    );
    // The history came across too: a client still at version 1 can rebase.
    send_diff(&mut a, 1, 3, json!([ins(0, "x")])).await?;
    assert_eq!(
        recv_json(&mut a).await?,
        json!({"type": "behind", "rid": 3, "v": 3, "diffs": [
            {"v": 2, "steps": [ins(3, " two")]},
            {"v": 3, "steps": [ins(0, ">")]},
        ]})
    );
    assert_eq!(
        fetch(&server, "reloaded").await?,
        (3, ">one two".to_owned())
    );
    Ok(())
}
