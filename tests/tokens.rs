//! What an access token opens and what a consumer sees of it, against the real binary: no
//! document id holds a `*` (the document claim's pattern), a token opens the plugin it was
//! minted for only (its `aud`, the plugin's name by default; `check_audience = false`
//! as before), and neither `on-connect` nor `on-request` sees the token, wherever it
//! came from, while `on-request` gets its claims in `x-wasmroom-claims`, which no client
//! can forge.

mod support;

use serde_json::{Value, json};
use support::tokens::*;
use support::*;

#[tokio::test]
async fn a_document_id_never_holds_a_star_which_tokens_read_as_a_pattern() -> anyhow::Result<()> {
    let server = start()?;
    // A token for every document: what a backend mints for a room a user named `*`.
    let every = eddsa(&json!({"doc": "*", "aud": "chat", "exp": in_a_minute()}));
    let reason = "invalid document id: contains '*', which access tokens read as a pattern";
    for path in [
        "/docs/chat/*",
        "/docs/chat/%2A",
        "/docs/chat/acme-%2a/history",
    ] {
        let (status, body) =
            http(server.addr(0), "GET", &format!("{path}?token={every}"), b"").await?;
        assert_eq!((status, body.trim_end()), (400, reason), "{path}");
    }
    for path in ["/ws/chat/acme-*", "/ws/chat/%2A"] {
        let (status, body) = refused(&server.url(0, &format!("{path}?token={every}"))).await?;
        assert_eq!((status, body.trim_end()), (400, reason), "{path}");
    }
    // The token still opens ids without one.
    server
        .connect(0, &format!("/ws/chat/acme-1?token={every}"))
        .await?;
    Ok(())
}

/// Three plugins that share one HS256 secret, each expecting its own name as `aud`, or,
/// with `check_audience = false` (the opt-out for backends that do not mint `aud` yet),
/// none.
fn start_sharing_a_secret(check_audience: bool) -> anyhow::Result<Server> {
    let opt_out = if check_audience {
        ""
    } else {
        "check_audience = false\n"
    };
    let config: String = ["textdoc", "chat", "yjs"]
        .iter()
        .map(|p| {
            format!("[plugin.{p}.auth]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n{opt_out}\n")
        })
        .collect();
    Server::start_with_config(&["textdoc", "chat", "yjs"], 1, &config)
}

#[tokio::test]
async fn a_token_opens_documents_of_the_plugin_it_was_minted_for_only() -> anyhow::Result<()> {
    let server = start_sharing_a_secret(true)?;
    let for_textdoc = hs256(&json!({"doc": "shared", "aud": "textdoc", "exp": in_a_minute()}));
    let mut ws = server
        .connect(0, &format!("/ws/textdoc/shared?token={for_textdoc}"))
        .await?;
    assert_eq!(recv_json(&mut ws).await?["type"], "doc");
    let (status, _) = http(
        server.addr(0),
        "GET",
        &format!("/docs/textdoc/shared?token={for_textdoc}"),
        b"",
    )
    .await?;
    assert_eq!(status, 200);
    for other in ["chat", "yjs"] {
        let expected = format!("invalid access token: wrong audience (aud must be \"{other}\")");
        let path = format!("/ws/{other}/shared?token={for_textdoc}");
        let (status, body) = refused(&server.url(0, &path)).await?;
        assert_eq!(
            (status, body.trim_end()),
            (401, expected.as_str()),
            "{path}"
        );
        let path = format!("/docs/{other}/shared?token={for_textdoc}");
        let (status, body) = http(server.addr(0), "GET", &path, b"").await?;
        assert_eq!(
            (status, body.trim_end()),
            (401, expected.as_str()),
            "{path}"
        );
    }
    // A token without `aud`, as backends minted them before, opens nothing.
    let unaddressed = hs256(&json!({"doc": "shared", "exp": in_a_minute()}));
    let (status, body) =
        refused(&server.url(0, &format!("/ws/textdoc/shared?token={unaddressed}"))).await?;
    assert_eq!(
        (status, body.trim_end()),
        (
            401,
            "invalid access token: wrong audience (aud must be \"textdoc\")"
        )
    );
    // Several audiences: each plugin named opens.
    let both = hs256(&json!({"doc": "shared", "aud": ["textdoc", "chat"], "exp": in_a_minute()}));
    server
        .connect(0, &format!("/ws/chat/shared?token={both}"))
        .await?;

    // With `check_audience = false`, tokens are taken as before, whatever their `aud`.
    let server = start_sharing_a_secret(false)?;
    for plugin in ["textdoc", "chat", "yjs"] {
        for token in [&for_textdoc, &unaddressed] {
            server
                .connect(0, &format!("/ws/{plugin}/shared?token={token}"))
                .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_consumer_never_sees_the_token_and_on_request_gets_the_claims() -> anyhow::Result<()> {
    let server = start()?;
    let claims = json!({"sub": "7", "doc": "notes", "aud": "wasmroom-tests", "role": "editor", "exp": in_a_minute()});
    let token = hs256(&claims);
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; session_token={token}; lang=en");
    let protocols = format!("probe.v1, wasmroom.token.{token}");
    let forged = r#"{"role":"admin"}"#;
    // Every source at once: whichever the host read, none may reach the consumer.
    let headers = [
        ("authorization", bearer.as_str()),
        ("cookie", cookie.as_str()),
        ("x-wasmroom-claims", forged),
    ];
    let query = format!("?a=1&token={token}&b=%20two");

    let mut with_protocols = headers.to_vec();
    with_protocols.push(("sec-websocket-protocol", &protocols));
    let path = format!("/ws/probe/notes{query}");
    let mut ws = connect_with(&server, &path, &with_protocols).await?;
    let seen = ask(&mut ws, "connect-info").await?;
    assert!(!seen.contains(&token), "on-connect saw the token: {seen}");
    let seen: Value = serde_json::from_str(&seen)?;
    assert_eq!(seen["path"], "/ws/probe/notes");
    assert_eq!(seen["query"], "a=1&b=%20two");
    assert_eq!(seen["subprotocols"], json!(["probe.v1"]));
    let header = |seen: &Value, name: &str| -> Vec<String> {
        seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(header(&seen, "authorization"), Vec::<String>::new());
    assert_eq!(header(&seen, "cookie"), ["theme=dark; lang=en"]);
    assert_eq!(header(&seen, "sec-websocket-protocol"), ["probe.v1"]);
    assert_eq!(header(&seen, "x-wasmroom-claims"), Vec::<String>::new());
    // The claims come the host's way, from the token it verified.
    assert_eq!(claims_seen(&mut ws).await?, claims);

    let (status, seen) = http_with(
        server.addr(0),
        "POST",
        &format!("/docs/probe/notes/echo{query}"),
        &headers,
        b"body",
    )
    .await?;
    assert_eq!(status, 200, "{seen}");
    assert!(!seen.contains(&token), "on-request saw the token: {seen}");
    let seen: Value = serde_json::from_str(&seen)?;
    assert_eq!(seen["path"], "/docs/probe/notes/echo");
    assert_eq!(seen["query"], "a=1&b=%20two");
    assert_eq!(header(&seen, "authorization"), Vec::<String>::new());
    assert_eq!(header(&seen, "cookie"), ["theme=dark; lang=en"]);
    let passed = header(&seen, "x-wasmroom-claims");
    assert_eq!(passed.len(), 1, "{seen}");
    assert_eq!(serde_json::from_str::<Value>(&passed[0])?, claims);

    // A plugin that takes no tokens keeps them all (its consumer may check them itself),
    // but a client still cannot hand it claims.
    let server = Server::start(&["probe"], 1, &[])?;
    let (status, seen) = http_with(
        server.addr(0),
        "GET",
        "/docs/probe/notes/echo?token=theirs",
        &[
            ("authorization", "Bearer theirs"),
            ("x-wasmroom-claims", forged),
        ],
        b"",
    )
    .await?;
    assert_eq!(status, 200, "{seen}");
    let seen: Value = serde_json::from_str(&seen)?;
    assert_eq!(seen["query"], "token=theirs");
    assert_eq!(header(&seen, "authorization"), ["Bearer theirs"]);
    assert_eq!(header(&seen, "x-wasmroom-claims"), Vec::<String>::new());
    let mut ws = server.connect(0, "/ws/probe/notes?token=theirs").await?;
    let seen: Value = serde_json::from_str(&ask(&mut ws, "connect-info").await?)?;
    assert_eq!(seen["query"], "token=theirs");
    Ok(())
}
