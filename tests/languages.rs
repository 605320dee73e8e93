//! The chat consumer in four languages: `chat` (Rust, the reference), `js-chat`
//! (JavaScript on QuickJS), `py-chat` (CPython) and `c-chat` (C). The same checks run
//! against each, byte for byte where the protocol is JSON: history per document, joins and
//! leaves, relay, `GET`/`POST /docs/{plugin}/{doc}`, the snapshot format, and a hot reload
//! that keeps the state. A last test moves one live document through all four
//! implementations, which holds only if their snapshots are interchangeable.
//!
//! `cargo xtask plugins` builds all four (the non-Rust ones need npm, python3 with venv,
//! and clang-19 + wasi-libc; it says which it skipped). A consumer that was not built
//! fails its tests with a message saying so.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// How long a reload may take: compiling the 18 MB Python component with a debug build of
/// the host on a busy CI machine takes seconds, not milliseconds.
const RELOAD_PATIENCE: Duration = Duration::from_secs(180);

/// Fails clearly when `plugin` was not built.
fn require(plugin: &str) -> anyhow::Result<()> {
    let file = built_plugins_dir().join(format!("{plugin}.wasm"));
    anyhow::ensure!(
        file.is_file(),
        "{} was not built. `cargo xtask plugins` builds it; if it printed \
         \"skipping {plugin}: ...\", install what that line names (js-chat: Node.js with npm; \
         py-chat: python3 with venv; c-chat: clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc)",
        file.display()
    );
    Ok(())
}

/// The server's settings for these tests: a checkpoint every second (the snapshot check
/// reads the saved state), and keepalive pings far apart (a test that waits minutes for
/// a compilation does not read its sockets, so it would not answer pings).
const CONFIG: &str = "checkpoint_secs = 1\n\
                      [limits]\n\
                      ping_interval_ms = 600000\n\
                      ping_timeout_ms = 600000\n";

/// Starts a server, then deploys `plugins` into its plugins directory and waits until
/// each is loaded. (Deploying after the start lets a slow compilation, the Python
/// component's, take longer than the harness allows a start.)
async fn start(plugins: &[&str]) -> anyhow::Result<Server> {
    start_with(plugins, "").await
}

/// Like [`start`], with `extra` appended to the config.
async fn start_with(plugins: &[&str], extra: &str) -> anyhow::Result<Server> {
    start_configured(plugins, &format!("{CONFIG}{extra}")).await
}

/// Like [`start`], with `config` as the whole config.
async fn start_configured(plugins: &[&str], config: &str) -> anyhow::Result<Server> {
    for p in plugins {
        require(p)?;
    }
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(file.path(), config)?;
    let (_, config) = file.keep()?;
    let config = config.to_str().expect("temp paths are UTF-8").to_owned();
    let server = Server::start_in(tempfile::tempdir()?, 1, &["--config", &config])?;
    for p in plugins {
        deploy(
            &server,
            p,
            &std::fs::read(built_plugins_dir().join(format!("{p}.wasm")))?,
        )?;
    }
    for p in plugins {
        wait_for_reload(&server, p, &serde_json::Value::Null).await?;
    }
    Ok(server)
}

/// `s` as a JSON string, exactly as serde_json (the Rust chat) writes it.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Checks that `frame` is `{"type":"message","name":NAME,"text":TEXT,"at":<ms>}` exactly,
/// with a plausible time; returns the time.
fn check_message(frame: &str, name: &str, text: &str) -> anyhow::Result<u64> {
    let head = format!(
        r#"{{"type":"message","name":{},"text":{},"at":"#,
        json_str(name),
        json_str(text)
    );
    let at = frame
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|at| !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| anyhow::anyhow!("expected {head}<ms>}}, got {frame}"))?;
    let at: u64 = at.parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    anyhow::ensure!(
        at.abs_diff(now) < 600_000,
        "`at` is not the time: {at} (now {now})"
    );
    Ok(at)
}

fn history_texts(history: &serde_json::Value) -> Vec<String> {
    history["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|l| l["text"].as_str().unwrap_or("<not a string>").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn current_version(server: &Server, name: &str) -> anyhow::Result<serde_json::Value> {
    Ok(plugin_entry(server, name).await?["current"]["version"].clone())
}

/// Waits until `name` runs a version other than `old` and no document is left on an
/// older one.
async fn wait_for_reload(
    server: &Server,
    name: &str,
    old: &serde_json::Value,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RELOAD_PATIENCE;
    loop {
        let entry = plugin_entry(server, name).await?;
        let version = &entry["current"]["version"];
        let migrated = entry["previous"]
            .as_array()
            .is_none_or(|p| p.iter().all(|v| v["live_documents"] == 0));
        if version.is_string() && version != old && migrated {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no reload of {name} in time: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state the consumer saved for `plugin/document` at the latest checkpoint, once it
/// satisfies `ready`.
async fn saved_state(
    server: &Server,
    plugin: &str,
    document: &str,
    ready: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let file = server
        .data
        .path()
        .join(plugin)
        .join(format!("{document}.snap"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(bytes) = std::fs::read(&file) {
            let snapshot =
                wasmroom::store::decode(&bytes, plugin, document).map_err(anyhow::Error::msg)?;
            let state = String::from_utf8(snapshot.state)?;
            if ready(&state) {
                return Ok(state);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "saved state never ready: {state}"
            );
        }
        anyhow::ensure!(Instant::now() < deadline, "{} never saved", file.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saved states written by hand, as files in the data directory: what the Rust chat's
/// serde reads (any key order and whitespace, unknown fields, escapes) restores the same
/// document everywhere; what it refuses keeps the document from opening.
async fn restores_what_serde_reads(server: &Server, p: &str) -> anyhow::Result<()> {
    let dir = server.data.path().join(p);
    std::fs::create_dir_all(&dir)?;
    let save = |document: &str, state: &str| {
        let snapshot = wasmroom::store::Snapshot {
            plugin_version: "0".repeat(16),
            saved_at_ms: 0,
            timers: Vec::new(),
            state: state.as_bytes().to_vec(),
            continuity: None,
            connections: Vec::new(),
            sessions: Vec::new(),
            settings: None,
        };
        std::fs::write(
            dir.join(format!("{document}.snap")),
            wasmroom::store::encode(&snapshot, p, document),
        )
    };
    save(
        "by-hand",
        r#" {
          "names" : { "7" : "x\u00e9" },
          "unknown" : [1, {"a": null}, true, -1.5e3, "s\"]"],
          "history" : [
            { "at" : 1700000000000, "text" : "a \"b\" \ud83d\ude00 \u00e9\n\/", "extra" : {}, "name" : "ann" },
            {"name":"","text":"","at":0}
          ],
          "document" : "by-hand"
        } "#,
    )?;
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/{p}/by-hand"), b"").await?;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            format!(
                r#"{{"document":"by-hand","messages":[{{"name":"ann","text":{},"at":1700000000000}},{{"name":"","text":"","at":0}}]}}"#,
                json_str("a \"b\" \u{1F600} \u{e9}\n/")
            )
            .as_str()
        )
    );
    for (document, state) in [
        ("no-names", r#"{"document":"no-names","history":[]}"#),
        (
            "negative-at",
            r#"{"document":"negative-at","history":[{"name":"a","text":"b","at":-1}],"names":{}}"#,
        ),
        (
            "bad-id",
            r#"{"document":"bad-id","history":[],"names":{"x":"a"}}"#,
        ),
        ("not-json", "{\"document\":"),
    ] {
        save(document, state)?;
        let (status, body) =
            http(server.addr(0), "GET", &format!("/docs/{p}/{document}"), b"").await?;
        // The consumer's own reason is for the log only.
        assert_eq!(
            (status, body.trim()),
            (500, "the consumer refused to open the document"),
            "{document}"
        );
    }
    Ok(())
}

/// The protocol, the HTTP interface and the snapshot format, against the Rust chat's;
/// then a hot reload under the live documents.
async fn behaves_like_the_rust_chat(p: &str) -> anyhow::Result<()> {
    let server = start(&[p]).await?;
    restores_what_serde_reads(&server, p).await?;
    let room = format!("/ws/{p}/room");
    let mut ann = server.connect(0, &format!("{room}?name=ann")).await?;
    assert_eq!(
        recv_text(&mut ann).await?,
        r#"{"type":"history","messages":[]}"#
    );
    let mut bob = server.connect(0, &format!("{room}?name=bob")).await?;
    assert_eq!(
        recv_text(&mut bob).await?,
        r#"{"type":"history","messages":[]}"#
    );
    assert_eq!(
        recv_text(&mut ann).await?,
        r#"{"type":"join","name":"bob"}"#
    );
    let mut cid = server
        .connect(0, &format!("/ws/{p}/other?name=cid"))
        .await?;
    assert_eq!(
        recv_text(&mut cid).await?,
        r#"{"type":"history","messages":[]}"#
    );

    // Relay to the others, with serde_json's escaping of every awkward character.
    let tricky =
        "h\u{e9} \"quoted\" \\ back\nslash\t\u{1}\u{1f} \u{7f} \u{1F600} </script> \u{2028}";
    send_text(&mut ann, "hello").await?;
    let at1 = check_message(&recv_text(&mut bob).await?, "ann", "hello")?;
    send_text(&mut ann, tricky).await?;
    let at2 = check_message(&recv_text(&mut bob).await?, "ann", tricky)?;

    // A connection without a name is `guest-{id}`; it gets the history, the others its join.
    let mut guest = server.connect(0, &room).await?;
    let history: serde_json::Value = serde_json::from_str(&recv_text(&mut guest).await?)?;
    assert_eq!(history["type"], "history");
    assert_eq!(history_texts(&history), ["hello", tricky]);
    let join = recv_text(&mut ann).await?; // not an echo of ann's own lines
    let guest_name = join
        .strip_prefix(r#"{"type":"join","name":""#)
        .and_then(|r| r.strip_suffix(r#""}"#))
        .filter(|n| n.starts_with("guest-") && n[6..].bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| anyhow::anyhow!("not a guest join: {join}"))?
        .to_owned();
    let guest_id: u64 = guest_name[6..].parse()?;
    assert_eq!(recv_text(&mut bob).await?, join);

    // Binary frames are refused, to the sender only.
    bob.send(Message::binary(vec![0u8, 1, 2])).await?;
    assert_eq!(
        recv_text(&mut bob).await?,
        r#"{"type":"error","reason":"chat takes text messages only"}"#
    );
    // ann leaves: the others hear it (and nothing of bob's binary frame before it).
    ann.close(None).await?;
    for ws in [&mut bob, &mut guest] {
        assert_eq!(recv_text(ws).await?, r#"{"type":"leave","name":"ann"}"#);
    }

    // Names: the raw query value, 1 to 64 bytes.
    for bad in ["name=".to_owned(), format!("name={}", "x".repeat(65))] {
        let (status, body) = refused(&server.url(0, &format!("{room}?{bad}"))).await?;
        assert_eq!(
            (status, body.trim()),
            (400, "name must be 1 to 64 bytes"),
            "{bad}"
        );
    }
    let mut dan = server
        .connect(0, &format!("{room}?x=1&name=d%20an"))
        .await?;
    assert_eq!(
        history_texts(&recv_json(&mut dan).await?),
        ["hello", tricky]
    );
    for ws in [&mut bob, &mut guest] {
        assert_eq!(recv_text(ws).await?, r#"{"type":"join","name":"d%20an"}"#);
    }
    let long = "x".repeat(64);
    let mut x = server.connect(0, &format!("{room}?name={long}")).await?;
    recv_text(&mut x).await?;
    x.close(None).await?;
    for ws in [&mut bob, &mut guest, &mut dan] {
        assert_eq!(
            recv_text(ws).await?,
            format!(r#"{{"type":"join","name":"{long}"}}"#)
        );
        assert_eq!(
            recv_text(ws).await?,
            format!(r#"{{"type":"leave","name":"{long}"}}"#)
        );
    }

    // Documents are separate: `other` has its own history.
    // A second client of `other` shows when cid's line has been handled (no echo to the sender).
    let mut eve = server
        .connect(0, &format!("/ws/{p}/other?name=eve"))
        .await?;
    recv_text(&mut eve).await?; // history
    assert_eq!(
        recv_text(&mut cid).await?,
        r#"{"type":"join","name":"eve"}"#
    );
    send_text(&mut cid, "elsewhere").await?;
    check_message(&recv_text(&mut eve).await?, "cid", "elsewhere")?;
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/{p}/other"), b"").await?;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        (doc["document"].as_str(), history_texts(&doc)),
        (Some("other"), vec!["elsewhere".to_owned()])
    );

    // GET, byte for byte.
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/{p}/room"), b"").await?;
    let messages = format!(
        r#"[{{"name":"ann","text":"hello","at":{at1}}},{{"name":"ann","text":{},"at":{at2}}}]"#,
        json_str(tricky)
    );
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            format!(r#"{{"document":"room","messages":{messages}}}"#).as_str()
        )
    );
    // The document id is the decoded one; an HTTP request opens the document too.
    let (status, body) = http(
        server.addr(0),
        "GET",
        &format!("/docs/{p}/%C3%9Cbung%203/any/path"),
        b"",
    )
    .await?;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"document":"Übung 3","messages":[]}"#)
    );

    // POST adds a line from `server`, sent to everyone.
    let (status, body) = http(
        server.addr(0),
        "POST",
        &format!("/docs/{p}/room"),
        b"from the backend",
    )
    .await?;
    assert_eq!((status, body.as_str()), (201, r#"{"messages":3}"#));
    for ws in [&mut bob, &mut guest, &mut dan] {
        check_message(&recv_text(ws).await?, "server", "from the backend")?;
    }
    for (method, body, want) in [
        ("POST", &b""[..], (400, "send a non-empty UTF-8 body")),
        (
            "POST",
            &[0xed, 0xa0, 0x80][..],
            (400, "send a non-empty UTF-8 body"),
        ),
        ("PUT", &b"x"[..], (405, "use GET or POST")),
    ] {
        let (status, text) = http(server.addr(0), method, &format!("/docs/{p}/room"), body).await?;
        assert_eq!((status, text.trim()), want, "{method} {body:?}");
    }

    // The last 100 lines are kept.
    for i in 0..105 {
        send_text(&mut bob, &format!("line {i}")).await?;
    }
    for ws in [&mut guest, &mut dan] {
        for i in 0..105 {
            check_message(&recv_text(ws).await?, "bob", &format!("line {i}"))?;
        }
    }
    let (_, body) = http(server.addr(0), "GET", &format!("/docs/{p}/room"), b"").await?;
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    let texts = history_texts(&doc);
    assert_eq!(texts.len(), 100);
    assert_eq!(
        (texts[0].as_str(), texts[99].as_str()),
        ("line 5", "line 104")
    );
    let messages = body
        .strip_prefix(r#"{"document":"room","messages":"#)
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| anyhow::anyhow!("unexpected GET body {body}"))?
        .to_owned();

    // The saved state has the Rust chat's serde layout:
    // {"document":..,"history":[..],"names":{"<id>":name,..}}, ids ascending.
    let state = saved_state(&server, p, "room", |s| s.contains(r#""text":"line 104""#)).await?;
    let names = state
        .strip_prefix(&format!(
            r#"{{"document":"room","history":{messages},"names":{{"#
        ))
        .and_then(|s| s.strip_suffix("}}"))
        .ok_or_else(|| anyhow::anyhow!("snapshot not in the chat's layout: {state}"))?;
    let entries: Vec<(u64, &str)> = names
        .split(',')
        .map(|e| {
            let (id, name) = e.split_once(':').unwrap_or_default();
            (id.trim_matches('"').parse().unwrap_or(0), name)
        })
        .collect();
    assert_eq!(
        entries.iter().map(|e| e.1).collect::<Vec<_>>(),
        [r#""bob""#, json_str(&guest_name).as_str(), r#""d%20an""#],
        "{state}"
    );
    assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "ids ascending: {state}"
    );
    assert_eq!(entries[1].0, guest_id);

    // A new version takes over the live documents: the same component plus a custom
    // section, so a new version (the host keys versions by content hash) of the same code.
    let v1 = current_version(&server, p).await?;
    deploy(
        &server,
        p,
        &rebuilt(&built_plugins_dir().join(format!("{p}.wasm")))?,
    )?;
    wait_for_reload(&server, p, &v1).await?;
    // Same sockets, new instance: the history and who is who came through restore.
    let (_, after) = http(server.addr(0), "GET", &format!("/docs/{p}/room"), b"").await?;
    assert_eq!(after, body, "the history after the reload");
    send_text(&mut bob, "after the reload").await?;
    for ws in [&mut guest, &mut dan] {
        check_message(&recv_text(ws).await?, "bob", "after the reload")?;
    }
    guest.close(None).await?;
    for ws in [&mut bob, &mut dan] {
        assert_eq!(
            recv_text(ws).await?,
            format!(r#"{{"type":"leave","name":"{guest_name}"}}"#)
        );
    }
    let mut eve = server.connect(0, &format!("{room}?name=eve")).await?;
    let texts = history_texts(&recv_json(&mut eve).await?);
    assert_eq!(
        (texts.len(), texts[0].as_str(), texts[99].as_str()),
        (100, "line 6", "after the reload")
    );
    let (_, body) = http(server.addr(0), "GET", &format!("/docs/{p}/other"), b"").await?;
    assert_eq!(history_texts(&serde_json::from_str(&body)?), ["elsewhere"]);
    Ok(())
}

/// Journal mode in each language: after `kill -9`, the document rebuilt from its journal
/// is the one that died. Its export (`GET /docs/...`: every line with the time the
/// consumer gave it) is the live one's byte for byte, so the replay made every input
/// again from the clock it had, and the consumer's own code decided the same.
async fn replays_to_the_document_that_died(p: &str) -> anyhow::Result<()> {
    // No checkpoint before the kill: everything comes back from the journal.
    let config = format!(
        "checkpoint_secs = 3600\n[limits]\nping_interval_ms = 600000\nping_timeout_ms = 600000\n\
         [plugin.{p}]\ndurability = \"journal\"\n"
    );
    let mut server = start_configured(&[p], &config).await?;
    let room = format!("/ws/{p}/replayed");
    let mut ann = server.connect(0, &format!("{room}?name=ann")).await?;
    let mut bob = server.connect(0, &format!("{room}?name=bob")).await?;
    support::streaming::say_lines(&mut ann, &mut bob, 5).await?;
    let path = format!("/docs/{p}/replayed");
    let (_, before) = http(server.addr(0), "GET", &path, b"").await?;
    assert_eq!(history_texts(&serde_json::from_str(&before)?).len(), 5);
    server.kill9()?;
    let server = server.restart()?;
    wait_for_reload(&server, p, &serde_json::Value::Null).await?;
    let (_, after) = http(server.addr(0), "GET", &path, b"").await?;
    assert_eq!(
        after, before,
        "{p}: the replayed document differs from the live one"
    );
    let replayed = metric(
        server.addr(0),
        "wasmroom_journal_replayed_inputs_total",
        &[],
    )
    .await?;
    // The two joins and the lines: five inputs, or fewer where lines read together reach
    // the consumer as one batch (the Rust SDK takes batches).
    assert!(replayed >= 3.0, "{p}: {replayed} inputs replayed");
    Ok(())
}

macro_rules! for_each_language {
    ($($module:ident => $plugin:literal),* $(,)?) => {$(
        mod $module {
            #[tokio::test]
            async fn behaves_like_the_rust_chat() -> anyhow::Result<()> {
                super::behaves_like_the_rust_chat($plugin).await
            }

            #[tokio::test]
            async fn replays_to_the_document_that_died() -> anyhow::Result<()> {
                super::replays_to_the_document_that_died($plugin).await
            }
        }
    )*};
}

for_each_language! {
    rust => "chat",
    javascript => "js-chat",
    python => "py-chat",
    c => "c-chat",
}

/// With access tokens on, a chat takes the name from the token (the backend vouches for
/// it), not from `?name=`; `sub` stands in when there is no `name` claim.
async fn names_come_from_the_token(p: &str) -> anyhow::Result<()> {
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    let secret = "chat-token-secret-0123456789abcdef";
    let server = start_with(
        &[p],
        &format!("[plugin.{p}.auth]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n"),
    )
    .await?;
    let token = |claims: serde_json::Value| {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let exp = get_current_timestamp() + 60;
    let ann = token(
        serde_json::json!({"doc": "room", "aud": p, "name": "Ann Verified", "sub": "1", "exp": exp}),
    );
    let bob = token(serde_json::json!({"doc": "room", "aud": p, "sub": "bob-2", "exp": exp}));
    let mut first = server
        .connect(0, &format!("/ws/{p}/room?token={bob}"))
        .await?;
    recv_json(&mut first).await?; // history
    let _ann = server
        .connect(0, &format!("/ws/{p}/room?token={ann}&name=impostor"))
        .await?;
    assert_eq!(
        recv_json(&mut first).await?,
        serde_json::json!({"type": "join", "name": "Ann Verified"})
    );
    let mut ann = _ann;
    recv_json(&mut ann).await?; // history
    first.send(Message::text("hi")).await?;
    let line = recv_json(&mut ann).await?;
    assert_eq!(
        (line["name"].as_str(), line["text"].as_str()),
        (Some("bob-2"), Some("hi"))
    );
    Ok(())
}

macro_rules! names_from_tokens {
    ($($module:ident => $plugin:literal),* $(,)?) => {$(
        mod $module {
            #[tokio::test]
            async fn names_come_from_the_token() -> anyhow::Result<()> {
                crate::names_come_from_the_token($plugin).await
            }
        }
    )*};
}

// The C chat has no JSON parser for the claims: it keeps `?name=`.
mod tokens {
    names_from_tokens! {
        rust => "chat",
        javascript => "js-chat",
        python => "py-chat",
    }
}

/// One live document, served as `chat`, moves Rust → JavaScript → Python → C → Rust by hot
/// reloads: each restores the snapshot of the one before.
#[tokio::test]
async fn a_document_moves_through_all_four_languages() -> anyhow::Result<()> {
    // Loaded under their own names first, so that deploying their bytes as `chat.wasm`
    // finds them compiled (the artifact cache is keyed by content).
    let server = start(&["chat", "js-chat", "py-chat", "c-chat"]).await?;
    let mut ann = server.connect(0, "/ws/chat/moving?name=ann").await?;
    recv_text(&mut ann).await?;
    let mut bob = server.connect(0, "/ws/chat/moving?name=bob").await?;
    recv_text(&mut bob).await?;
    recv_text(&mut ann).await?; // bob joined
    let mut lines = Vec::new();
    for next in ["js-chat", "py-chat", "c-chat", "chat"] {
        let line = format!("before moving to {next}");
        send_text(&mut ann, &line).await?;
        check_message(&recv_text(&mut bob).await?, "ann", &line)?;
        lines.push(line);
        let old = current_version(&server, "chat").await?;
        deploy(
            &server,
            "chat",
            &std::fs::read(built_plugins_dir().join(format!("{next}.wasm")))?,
        )?;
        wait_for_reload(&server, "chat", &old).await?;
        // Rust and C set a few KiB of initial memory and get it copied; the JavaScript and
        // Python runtimes' images are mapped. The document crosses engines each time.
        let memory = plugin_entry(&server, "chat").await?["current"]["memory"].clone();
        let expected = if next.starts_with("js") || next.starts_with("py") {
            "mapped"
        } else {
            "copied"
        };
        assert_eq!(memory, expected, "on {next}");
        let (_, body) = http(server.addr(0), "GET", "/docs/chat/moving", b"").await?;
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(doc["document"], "moving", "on {next}");
        assert_eq!(history_texts(&doc), lines, "on {next}");
    }
    bob.close(None).await?;
    assert_eq!(
        recv_text(&mut ann).await?,
        r#"{"type":"leave","name":"bob"}"#
    );
    Ok(())
}

/// A consumer on a kit that overrides only `onMessage`/`on_message` (tests/plugins/kits):
/// its one object per document keeps its state from call to call and across connections;
/// every other hook is the kit's default: connections accepted, `GET` answered 404 (not
/// a trap), an empty saved state restored and a non-empty one refused.
async fn kit_defaults(p: &str) -> anyhow::Result<()> {
    let server = start(&[p]).await?;
    let mut ann = server.connect(0, &format!("/ws/{p}/room")).await?;
    send_text(&mut ann, "a").await?;
    assert_eq!(recv_text(&mut ann).await?, "1: text a");
    ann.send(Message::binary(vec![0u8, 1, 2])).await?;
    assert_eq!(recv_text(&mut ann).await?, "2: binary 3");
    let mut bob = server.connect(0, &format!("/ws/{p}/room")).await?;
    send_text(&mut bob, "\u{e9}").await?;
    assert_eq!(recv_text(&mut bob).await?, "3: text \u{e9}");
    let mut other = server.connect(0, &format!("/ws/{p}/other")).await?;
    send_text(&mut other, "x").await?;
    assert_eq!(recv_text(&mut other).await?, "1: text x");

    let (status, body) = http(server.addr(0), "GET", &format!("/docs/{p}/room"), b"").await?;
    assert_eq!(
        (status, body.trim()),
        (404, "this consumer has no HTTP interface")
    );
    let entry = plugin_entry(&server, p).await?;
    assert!(entry["last_error"].is_null(), "{entry}");

    // Saved states: an empty one (what the default snapshot gives) opens the document, a
    // non-empty one is refused rather than dropped.
    let dir = server.data.path().join(p);
    std::fs::create_dir_all(&dir)?;
    for (document, state) in [("empty", &b""[..]), ("full", &b"state"[..])] {
        let snapshot = wasmroom::store::Snapshot {
            plugin_version: "0".repeat(16),
            saved_at_ms: 0,
            timers: Vec::new(),
            state: state.to_vec(),
            continuity: None,
            connections: Vec::new(),
            sessions: Vec::new(),
            settings: None,
        };
        std::fs::write(
            dir.join(format!("{document}.snap")),
            wasmroom::store::encode(&snapshot, p, document),
        )?;
    }
    let (status, _) = http(server.addr(0), "GET", &format!("/docs/{p}/empty"), b"").await?;
    assert_eq!(status, 404);
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/{p}/full"), b"").await?;
    assert_eq!(
        (status, body.trim()),
        (500, "the consumer refused to open the document")
    );
    Ok(())
}

macro_rules! kit_defaults {
    ($($module:ident => $plugin:literal),* $(,)?) => {$(
        mod $module {
            #[tokio::test]
            async fn kit_defaults() -> anyhow::Result<()> {
                crate::kit_defaults($plugin).await
            }
        }
    )*};
}

mod kits {
    kit_defaults! {
        javascript => "js-defaults",
        python => "py-defaults",
    }
}

/// `wasmroom check` calls every hook on a trial document: a JavaScript consumer without
/// `onRequest` (componentize-qjs still exports `on-request`, which traps) is refused,
/// with the guest's own words; the kit's consumers pass.
#[test]
fn check_refuses_a_consumer_whose_export_traps() -> anyhow::Result<()> {
    let check = |plugin: &str| -> anyhow::Result<std::process::Output> {
        require(plugin)?;
        Ok(std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
            .arg("check")
            .arg(built_plugins_dir().join(format!("{plugin}.wasm")))
            .output()?)
    };
    let refused = check("js-no-request")?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    let verdict = stderr.lines().last().unwrap_or_default();
    assert!(
        verdict.contains("fails its trial run: on-request: traps")
            && verdict.contains("function 'onRequest' not found"),
        "{stderr}"
    );
    for good in ["js-defaults", "js-chat"] {
        let out = check(good)?;
        assert!(
            out.status.success(),
            "{good}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("passed its trial run"));
    }
    Ok(())
}
