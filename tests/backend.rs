//! The application's backend, against the real binary: access tokens checked before any
//! guest code runs (HS256 and EdDSA, every way a client can send one, every reason to
//! refuse), claims and settings reaching the consumer, a viewer's edits refused by
//! `textdoc` (over HTTP too), settings re-read on SIGHUP, and a consumer built against
//! WIT 0.1.0 still loading and relaying. What a token opens and what a consumer sees of
//! it: `tests/tokens.rs`; webhooks: `tests/webhooks.rs`.

mod support;

use std::path::PathBuf;

use futures_util::SinkExt;
use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use support::tokens::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Opens a WebSocket offering `protocols`; the socket and the subprotocol the server chose.
async fn offering(server: &Server, protocols: &str) -> anyhow::Result<(Ws, Option<String>)> {
    let mut request = server.url(0, "/ws/probe/notes").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocols.parse()?);
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    Ok((ws, chosen))
}

#[tokio::test]
async fn a_valid_token_opens_its_document_and_its_claims_reach_the_consumer() -> anyhow::Result<()>
{
    let server = start()?;
    let claims = json!({"sub": "42", "doc": "notes", "aud": "wasmroom-tests", "role": "editor", "exp": in_a_minute()});
    let token = hs256(&claims);

    // `?token=`.
    let mut ws = server
        .connect(0, &format!("/ws/probe/notes?token={token}"))
        .await?;
    let seen: Value = serde_json::from_str(&ask(&mut ws, "claims").await?)?;
    assert_eq!(seen, claims);
    // `Authorization: Bearer`.
    let bearer = format!("Bearer {token}");
    let mut ws = connect_with(&server, "/ws/probe/notes", &[("authorization", &bearer)]).await?;
    assert_eq!(claims_seen(&mut ws).await?, claims);
    // The configured cookie.
    let cookie = format!("theme=dark; session_token={token}");
    let mut ws = connect_with(&server, "/ws/probe/notes", &[("cookie", &cookie)]).await?;
    assert_eq!(claims_seen(&mut ws).await?, claims);
    // A subprotocol (what a browser can set): the consumer does not see it, and the
    // answer names it when the consumer chose none.
    let protocol = format!("wasmroom.token.{token}");
    let (mut ws, chosen) = offering(&server, &protocol).await?;
    assert_eq!(chosen.as_deref(), Some(protocol.as_str()));
    assert_eq!(ask(&mut ws, "subprotocols").await?, "");
    assert_eq!(claims_seen(&mut ws).await?, claims);
    // Beside a real subprotocol, the consumer chooses that one.
    let both = format!("probe.v1, {protocol}");
    let (mut ws, chosen) = offering(&server, &both).await?;
    assert_eq!(chosen.as_deref(), Some("probe.v1"));
    assert_eq!(ask(&mut ws, "subprotocols").await?, "probe.v1");

    // A pattern opens every document it names, and HTTP takes the same token.
    let project =
        hs256(&json!({"doc": "project-7-*", "aud": "wasmroom-tests", "exp": in_a_minute()}));
    server
        .connect(0, &format!("/ws/probe/project-7-draft?token={project}"))
        .await?;
    let (status, body) = http(
        server.addr(0),
        "GET",
        &format!("/docs/probe/project-7-draft?token={project}"),
        b"",
    )
    .await?;
    assert_eq!((status, body.as_str()), (200, "probe project-7-draft"));

    // EdDSA for `chat`.
    let chat = eddsa(&json!({"doc": "room", "aud": "chat", "exp": in_a_minute()}));
    let mut ws = server
        .connect(0, &format!("/ws/chat/room?token={chat}"))
        .await?;
    ws.send(Message::text("hello")).await?;
    // RS256 for `relay`; an EdDSA token is refused there.
    let relay = rs256(&json!({"doc": "*", "aud": "relay", "exp": in_a_minute()}));
    server
        .connect(0, &format!("/ws/relay/any?token={relay}"))
        .await?;
    let other = eddsa(&json!({"doc": "*", "aud": "relay", "exp": in_a_minute()}));
    let refusal = refused(&server.url(0, &format!("/ws/relay/any?token={other}"))).await?;
    assert_eq!(
        (refusal.0, refusal.1.trim_end()),
        (401, "invalid access token: algorithm not accepted")
    );
    Ok(())
}

#[tokio::test]
async fn every_bad_token_gets_401_with_its_reason_and_reaches_no_guest() -> anyhow::Result<()> {
    let server = start()?;
    let now = get_current_timestamp();
    let good = json!({"doc": "notes", "aud": "wasmroom-tests", "exp": now + 60});
    let with = |patch: Value| {
        let mut c = good.clone();
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c
    };
    let forged = encode(
        &Header::default(),
        &good,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!").unwrap(),
    )?;
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        hs256(&good).split('.').nth(1).unwrap()
    );
    let cases = [
        (String::new(), "access token required"),
        (
            hs256(&with(json!({"exp": now - 120}))),
            "invalid access token: expired",
        ),
        (
            hs256(&with(json!({"nbf": now + 120}))),
            "invalid access token: not yet valid (nbf)",
        ),
        (
            hs256(&with(json!({"aud": "someone-else"}))),
            "invalid access token: wrong audience (aud must be \"wasmroom-tests\")",
        ),
        (
            hs256(&json!({"doc": "notes", "exp": now + 60})),
            "invalid access token: wrong audience (aud must be \"wasmroom-tests\")",
        ),
        (
            hs256(&with(json!({"doc": "other"}))),
            "access token is not for this document",
        ),
        (forged, "invalid access token: bad signature"),
        (eddsa(&good), "invalid access token: algorithm not accepted"),
        (none, "invalid access token: malformed"),
        ("garbage".to_owned(), "invalid access token: malformed"),
    ];
    for (token, reason) in &cases {
        let query = if token.is_empty() {
            String::new()
        } else {
            format!("?token={token}")
        };
        let (status, body) = refused(&server.url(0, &format!("/ws/probe/notes{query}"))).await?;
        assert_eq!((status, body.trim_end()), (401, *reason), "token {token:?}");
        let (status, body) = http(
            server.addr(0),
            "GET",
            &format!("/docs/probe/notes{query}"),
            b"",
        )
        .await?;
        assert_eq!(
            (status, body.trim_end()),
            (401, *reason),
            "HTTP, token {token:?}"
        );
    }
    assert_eq!(
        metric(
            server.addr(0),
            "wasmroom_rejected_total",
            &["reason=\"token\""]
        )
        .await?,
        2.0 * cases.len() as f64
    );
    // Nothing was opened: no guest call of any kind ran.
    assert_eq!(
        metric(
            server.addr(0),
            "wasmroom_guest_call_seconds_count",
            &["plugin=\"probe\""]
        )
        .await?,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn a_viewer_reads_textdoc_but_its_edits_are_refused() -> anyhow::Result<()> {
    let server = start()?;
    let token = |role: &str| {
        hs256(&json!({"doc": "essay", "aud": "textdoc", "role": role, "exp": in_a_minute()}))
    };
    let mut editor = server
        .connect(0, &format!("/ws/textdoc/essay?token={}", token("editor")))
        .await?;
    let mut viewer = server
        .connect(0, &format!("/ws/textdoc/essay?token={}", token("viewer")))
        .await?;
    assert_eq!(recv_json(&mut editor).await?["type"], "doc");
    assert_eq!(recv_json(&mut viewer).await?["type"], "doc");

    let diff = |rid: u64, v: u64, text: &str| {
        json!({"type": "diff", "v": v, "rid": rid, "steps": [{"op": "insert", "pos": 0, "text": text}]}).to_string()
    };
    send_text(&mut viewer, &diff(1, 0, "vandalism")).await?;
    let answer = recv_json(&mut viewer).await?;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["rid"], 1);
    assert!(
        answer["reason"].as_str().unwrap().starts_with("read-only"),
        "{answer}"
    );

    send_text(&mut editor, &diff(2, 0, "Hello")).await?;
    assert_eq!(
        recv_json(&mut editor).await?,
        json!({"type": "confirm", "rid": 2, "v": 1})
    );
    // The viewer still follows every change.
    let steps = recv_json(&mut viewer).await?;
    assert_eq!(
        (steps["type"].as_str(), steps["v"].as_u64()),
        (Some("steps"), Some(1))
    );
    let (_, body) = http(
        server.addr(0),
        "GET",
        &format!("/docs/textdoc/essay?token={}", token("viewer")),
        b"",
    )
    .await?;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"v": 1, "text": "Hello"})
    );
    // Nor can a viewer write over HTTP; an editor's token (a backend's) can.
    let put = |role: &str| format!("/docs/textdoc/essay?token={}", token(role));
    let (status, body) = http(server.addr(0), "PUT", &put("viewer"), b"vandalism").await?;
    assert_eq!(
        (status, body.as_str()),
        (403, "read-only: this request's token is a viewer's")
    );
    let (status, body) = http(server.addr(0), "PUT", &put("editor"), b"Hello, world").await?;
    assert_eq!((status, body.as_str()), (200, r#"{"v":2}"#));
    let steps = recv_json(&mut viewer).await?;
    assert_eq!(steps["v"], 2, "{steps}");
    Ok(())
}

#[tokio::test]
async fn settings_reach_the_consumer_and_change_on_sighup() -> anyhow::Result<()> {
    let mut server = start()?;
    let token = hs256(&json!({"doc": "s", "aud": "wasmroom-tests", "exp": in_a_minute()}));
    let mut ws = server
        .connect(0, &format!("/ws/probe/s?token={token}"))
        .await?;
    assert_eq!(ask(&mut ws, "setting greeting").await?, "hello");
    assert_eq!(
        ask(&mut ws, "setting from_env").await?,
        "from the environment"
    );
    assert_eq!(ask(&mut ws, "setting missing").await?, "none");

    // Rewrite the config file and send SIGHUP: the live document sees the new value.
    let path = config_path(&server)?;
    let text =
        std::fs::read_to_string(&path)?.replace("greeting = \"hello\"", "greeting = \"bonjour\"");
    std::fs::write(&path, text)?;
    server.signal("HUP")?;
    server.wait_for_log("access tokens and plugin settings read again")?;
    assert_eq!(ask(&mut ws, "setting greeting").await?, "bonjour");

    // A broken file changes nothing.
    let text = std::fs::read_to_string(&path)?.replace(
        "greeting = \"bonjour\"",
        "greeting = \"${WASMROOM_TEST_SURELY_UNSET}\"",
    );
    std::fs::write(&path, text)?;
    server.signal("HUP")?;
    server.wait_for_log("config not reloaded")?;
    assert_eq!(ask(&mut ws, "setting greeting").await?, "bonjour");
    Ok(())
}

/// The config file the server was started with.
fn config_path(server: &Server) -> anyhow::Result<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid()))?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("started with --config");
    Ok(PathBuf::from(&args[at + 1]))
}

#[tokio::test]
async fn a_consumer_built_against_wit_0_1_0_still_loads_and_relays() -> anyhow::Result<()> {
    // Built from `wit/consumer.wit` at 0.1.0 and kept as it was.
    let dir = Server::plugins_dir(&[])?;
    std::fs::copy(fixture("relay_v0_1_0.wasm"), dir.path().join("relay.wasm"))?;
    let server = Server::start_in(dir, 1, &[])?;
    let mut a = server.connect(0, "/ws/relay/old").await?;
    let mut b = server.connect(0, "/ws/relay/old").await?;
    a.send(Message::text("from a 0.1.0 consumer")).await?;
    assert_eq!(recv_text(&mut b).await?, "from a 0.1.0 consumer");
    let (status, plugins) = http(server.addr(0), "GET", "/plugins", b"").await?;
    assert_eq!(status, 200, "{plugins}");
    Ok(())
}
