//! The foundation, end to end: the real binary on free ports, real WebSocket clients.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn relay_delivers_to_the_others_in_order_and_keeps_frame_types() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 1, &[])?;
    let mut a = server.connect(0, "/ws/relay/doc-1").await?;
    let mut b = server.connect(0, "/ws/relay/doc-1").await?;

    a.send(Message::text("hello")).await?;
    assert_eq!(recv(&mut b).await?, Message::text("hello"));
    b.send(Message::binary(vec![0u8, 159, 255])).await?;
    assert_eq!(recv(&mut a).await?, Message::binary(vec![0u8, 159, 255]));

    for i in 0..20 {
        a.send(Message::text(format!("m{i}"))).await?;
    }
    for i in 0..20 {
        assert_eq!(recv_text(&mut b).await?, format!("m{i}"));
    }
    // b's marker reaches a; had a received its own 20 messages, they would come first.
    b.send(Message::text("marker")).await?;
    assert_eq!(recv_text(&mut a).await?, "marker");
    Ok(())
}

#[tokio::test]
async fn documents_are_isolated_and_chat_history_is_per_document() -> anyhow::Result<()> {
    let server = Server::start(&["chat", "relay"], 1, &[])?;
    let mut a1 = server.connect(0, "/ws/chat/a?name=ann").await?;
    assert_eq!(recv_json(&mut a1).await?["messages"], serde_json::json!([]));
    let mut a2 = server.connect(0, "/ws/chat/a?name=bob").await?;
    assert_eq!(recv_json(&mut a2).await?["type"], "history");
    assert_eq!(
        recv_json(&mut a1).await?,
        serde_json::json!({"type": "join", "name": "bob"})
    );
    let mut b1 = server.connect(0, "/ws/chat/b?name=cid").await?;
    assert_eq!(recv_json(&mut b1).await?["messages"], serde_json::json!([]));
    let mut b2 = server.connect(0, "/ws/chat/b?name=eve").await?;
    assert_eq!(recv_json(&mut b2).await?["messages"], serde_json::json!([]));
    assert_eq!(recv_json(&mut b1).await?["type"], "join");

    send_text(&mut a1, "in a").await?;
    let got = recv_json(&mut a2).await?;
    assert_eq!(
        (
            got["type"].as_str(),
            got["name"].as_str(),
            got["text"].as_str()
        ),
        (Some("message"), Some("ann"), Some("in a"))
    );
    send_text(&mut b1, "in b").await?;
    // Only `b` sees it (a2's next message below is ann's leave, not this line).
    assert_eq!(recv_json(&mut b2).await?["text"], "in b");

    // ann leaves; bob stays: the history of `a` stays in its instance.
    a1.close(None).await?;
    assert_eq!(
        recv_json(&mut a2).await?,
        serde_json::json!({"type": "leave", "name": "ann"})
    );
    let mut a3 = server.connect(0, "/ws/chat/a?name=dan").await?;
    let history = recv_json(&mut a3).await?;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["in a"]);

    let (status, body) = http(server.addr(0), "GET", "/docs/chat/b", b"").await?;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(doc["document"], "b");
    assert_eq!(doc["messages"][0]["text"], "in b");
    assert_eq!(doc["messages"].as_array().unwrap().len(), 1);

    // Same document name, other plugin: another document.
    let mut r1 = server.connect(0, "/ws/relay/a").await?;
    let mut r2 = server.connect(0, "/ws/relay/a").await?;
    send_text(&mut r1, "relay only").await?;
    assert_eq!(recv_text(&mut r2).await?, "relay only");
    send_text(&mut a3, "chat only").await?;
    assert_eq!(recv_json(&mut a2).await?["type"], "join");
    assert_eq!(recv_json(&mut a2).await?["text"], "chat only");
    assert!(nothing_within(&mut r2, Duration::from_millis(200)).await);
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_upgrade() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 1, &[])?;
    let (status, body) = refused(&server.url(0, "/ws/nope/doc")).await?;
    assert_eq!(status, 404);
    assert!(body.contains("no plugin named 'nope'"), "{body}");

    let too_long = "x".repeat(257);
    for bad in [
        "/ws/relay/a%2Fb",
        "/ws/relay/%00",
        "/ws/relay/%FF",
        &format!("/ws/relay/{too_long}"),
    ] {
        let (status, body) = refused(&server.url(0, bad)).await?;
        assert_eq!(status, 400, "{bad}");
        assert!(body.starts_with("invalid document id"), "{body}");
    }
    let (status, _) = refused(&server.url(0, "/elsewhere")).await?;
    assert_eq!(status, 404);

    // Plain HTTP on a WebSocket route: 426 Upgrade Required.
    let (status, _) = http(server.addr(0), "GET", "/ws/relay/doc", b"").await?;
    assert_eq!(status, 426);
    let (status, body) = http(server.addr(0), "GET", "/healthz", b"").await?;
    assert_eq!((status, body.trim()), (200, "ok"));
    // A percent-encoded id is decoded: both spellings reach one document.
    let mut a = server.connect(0, "/ws/relay/%C3%9Cbung%203").await?;
    let mut b = server
        .connect(0, "/ws/relay/Übung 3".replace(' ', "%20").as_str())
        .await?;
    send_text(&mut a, "same doc").await?;
    assert_eq!(recv_text(&mut b).await?, "same doc");
    Ok(())
}

#[tokio::test]
async fn four_lanes_serve_documents_at_the_same_time() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 4, &[])?;
    assert_eq!(server.addrs.len(), 4);
    let mut pairs = Vec::new();
    for lane in 0..4 {
        let path = format!("/ws/relay/lane-doc-{lane}");
        pairs.push((
            server.connect(lane, &path).await?,
            server.connect(lane, &path).await?,
        ));
    }
    // Every lane has a message in flight before any is read.
    for (lane, (a, _)) in pairs.iter_mut().enumerate() {
        send_text(a, &format!("from lane {lane}")).await?;
    }
    for (lane, (_, b)) in pairs.iter_mut().enumerate() {
        assert_eq!(recv_text(b).await?, format!("from lane {lane}"));
    }
    Ok(())
}

#[tokio::test]
async fn a_consumer_can_reject_and_choose_a_subprotocol() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let (status, body) =
        refused(&server.url(0, "/ws/probe/d?reject=451&reason=not%20here")).await?;
    assert_eq!((status, body.trim()), (451, "not here"));

    let mut request = server.url(0, "/ws/probe/d").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "other, probe.v1".parse()?);
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "probe.v1"
    );
    send_text(&mut ws, "count").await?;
    assert_eq!(
        recv_text(&mut ws).await?,
        "1",
        "the rejected connection is not counted"
    );
    Ok(())
}

#[tokio::test]
async fn timers_fire_and_cancelled_timers_do_not() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/t").await?;
    send_text(&mut ws, "timers").await?;
    assert_eq!(recv_text(&mut ws).await?, "timers set");
    // Timer 3 (45 ms, cancelled) was due between 1 (30 ms) and 2 (60 ms): had it fired,
    // it would arrive between them.
    assert_eq!(recv_text(&mut ws).await?, "timer 1");
    assert_eq!(recv_text(&mut ws).await?, "timer 2");
    send_text(&mut ws, "echo after").await?;
    assert_eq!(recv_text(&mut ws).await?, "after");
    Ok(())
}

#[tokio::test]
async fn on_disconnect_gets_the_code_of_the_side_that_closed() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut watcher = server.connect(0, "/ws/probe/codes").await?;
    // The client closes: its code.
    let mut client = server.connect(0, "/ws/probe/codes").await?;
    client
        .close(Some(CloseFrame {
            code: CloseCode::from(4100),
            reason: "client".into(),
        }))
        .await?;
    // The consumer closes and the client answers.
    let mut answering = server.connect(0, "/ws/probe/codes").await?;
    send_text(&mut answering, "close-me 4200").await?;
    assert_eq!(expect_close(&mut answering).await?.0, 4200);
    // The consumer closes and the client never answers (it does not even read): once the
    // server stops waiting for the answer, the consumer still learns its own code.
    let mut silent = server.connect(0, "/ws/probe/codes").await?;
    send_text(&mut silent, "close-me 4300").await?;

    let deadline = std::time::Instant::now() + PATIENCE;
    let codes = loop {
        send_text(&mut watcher, "departed").await?;
        let departed = recv_text(&mut watcher).await?;
        let mut codes: Vec<String> = departed
            .split(',')
            .filter_map(|d| d.split_once(':'))
            .map(|(_, code)| code.to_owned())
            .collect();
        if codes.len() == 3 {
            codes.sort();
            break codes;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "departed so far: {departed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(codes, ["4100", "4200", "4300"]);
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn a_reply_to_the_last_message_goes_out_before_a_half_closed_socket_ends()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&["probe"], 1, &[])?;
    // A client that sends its last message and ends its stream at once, without a close
    // frame: the server ends the connection (1006), but only after the consumer's reply
    // to that message went out.
    let mut stream = raw_upgrade(server.addr(0), "/ws/probe/half-closed").await?;
    stream.write_all(&client_frame(true, 1, b"count")).await?;
    stream.shutdown().await?;
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await??;
    assert_eq!(
        got, b"\x81\x011",
        "the reply `1` (one connection), then the end"
    );
    Ok(())
}

#[tokio::test]
async fn http_requests_reach_the_document() -> anyhow::Result<()> {
    let server = Server::start(&["relay", "chat"], 1, &[])?;
    let mut a = server.connect(0, "/ws/relay/pushed").await?;
    let mut b = server.connect(0, "/ws/relay/pushed").await?;
    let (status, body) = http(
        server.addr(0),
        "POST",
        "/docs/relay/pushed",
        b"from the backend",
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)?["delivered"],
        2
    );
    assert_eq!(recv_text(&mut a).await?, "from the backend");
    assert_eq!(recv_text(&mut b).await?, "from the backend");

    let (status, _) = http(server.addr(0), "POST", "/docs/chat/c", b"hello from HTTP").await?;
    assert_eq!(status, 201);
    let (_, body) = http(server.addr(0), "GET", "/docs/chat/c", b"").await?;
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(doc["messages"][0]["text"], "hello from HTTP");
    assert_eq!(doc["messages"][0]["name"], "server");
    let (status, _) = http(server.addr(0), "GET", "/docs/nope/c", b"").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn a_trap_ends_only_its_own_document() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut other = server.connect(0, "/ws/probe/healthy").await?;
    for (doc, command) in [("spinner", "spin"), ("panicker", "panic"), ("hog", "grow")] {
        let path = format!("/ws/probe/{doc}");
        let mut victim = server.connect(0, &path).await?;
        let mut bystander = server.connect(0, &path).await?;
        send_text(&mut victim, command).await?;
        // The healthy document on the same lane keeps answering.
        send_text(&mut other, "echo still here").await?;
        assert_eq!(recv_text(&mut other).await?, "still here");
        let (code, reason) = expect_close(&mut victim).await?;
        assert_eq!(
            (code, reason.as_str()),
            (1011, "consumer crashed"),
            "{command}"
        );
        assert_eq!(expect_close(&mut bystander).await?.0, 1011, "{command}");
        // The next connection gets a fresh instance.
        let mut again = server.connect(0, &path).await?;
        send_text(&mut again, "count").await?;
        assert_eq!(recv_text(&mut again).await?, "1", "{command}");
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1012_and_exits_0() -> anyhow::Result<()> {
    let mut server = Server::start(&["relay"], 2, &[])?;
    let mut a = server.connect(0, "/ws/relay/x").await?;
    let mut b = server.connect(1, "/ws/relay/y").await?;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    // 1012 "service restart": the documents were saved, clients should reconnect.
    assert_eq!(expect_close(&mut a).await?.0, 1012);
    assert_eq!(expect_close(&mut b).await?.0, 1012);
    drop((a, b));
    let (_server, status) = status.await?;
    assert!(status?.success());
    Ok(())
}

#[tokio::test]
async fn check_says_whether_a_file_is_a_consumer() -> anyhow::Result<()> {
    let check = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
            .arg("check")
            .arg(file)
            .output()
    };
    let good = check(&built_plugins_dir().join("chat.wasm"))?;
    assert!(good.status.success());
    assert!(String::from_utf8_lossy(&good.stdout).contains("ok: plugin 'chat'"));

    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm")?;
    let bad = check(&junk)?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a valid WebAssembly component"));
    Ok(())
}

/// `wasmroom check --data DIR` says what it compiles and leaves the compiled component
/// where `serve --data DIR` looks, so the server loads it without compiling.
#[tokio::test]
async fn check_fills_the_compiled_cache_serve_reads() -> anyhow::Result<()> {
    let mut server = Server::start(&[], 1, &[])?;
    let relay = built_plugins_dir().join("relay.wasm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .arg("check")
        .arg("--data")
        .arg(server.data.path())
        .arg(&relay)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("compiling relay ("), "{stderr}");
    deploy(&server, "relay", &std::fs::read(&relay)?)?;
    wait_for_new_version(&server, "relay", &serde_json::Value::Null, 0).await?;
    // The server logged it before `/plugins` showed it; the test reads its log on a
    // thread of its own, which may not have got there yet.
    let loaded = server.wait_for_log("relay.wasm in")?;
    assert!(loaded.contains("loaded"), "{loaded}");
    let lines = server.log_lines();
    assert!(
        !lines.iter().any(|l| l.contains("compiling relay")),
        "{lines:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn readyz_answers_while_serving() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 1, &[])?;
    let (status, body) = http(server.addr(0), "GET", "/readyz", b"").await?;
    assert_eq!((status, body.trim()), (200, "ready"));
    Ok(())
}

#[tokio::test]
async fn static_folder_is_served_beside_the_routes() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = tempfile::tempdir()?;
    std::fs::write(site.path().join("index.html"), "<h1>demo</h1>")?;
    std::fs::create_dir(site.path().join("assets"))?;
    std::fs::write(site.path().join("assets/app.js"), "console.log(1)")?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let server = Server::start(&["relay"], 1, &["--static", dir])?;
    let addr = server.addr(0);
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw.to_ascii_lowercase())
    };
    let index = get("/").await?;
    assert!(index.starts_with("http/1.1 200"), "{index}");
    assert!(index.contains("content-type: text/html"), "{index}");
    assert!(index.ends_with("<h1>demo</h1>"));
    let js = get("/assets/app.js").await?;
    assert!(
        js.contains("content-type: text/javascript") || js.contains("application/javascript"),
        "{js}"
    );
    assert!(get("/../../etc/passwd").await?.starts_with("http/1.1 404"));
    assert!(get("/assets/missing.js").await?.starts_with("http/1.1 404"));
    // The routes still win over the folder.
    assert!(get("/healthz").await?.trim_end().ends_with("ok"));
    let mut a = server.connect(0, "/ws/relay/d").await?;
    let mut b = server.connect(0, "/ws/relay/d").await?;
    send_text(&mut a, "hi").await?;
    assert_eq!(recv_text(&mut b).await?, "hi");
    Ok(())
}
