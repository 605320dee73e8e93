//! The yjs plugin against unmodified npm clients (`yjs` + `y-websocket`, pinned in
//! tests/yjs/package-lock.json): the scenarios live in tests/yjs/scenarios.mjs, run by
//! Node against the real binary (`support::yjs`). Needs `npm ci --prefix tests/yjs` once.

mod support;

use anyhow::bail;
use support::yjs::run;
use support::*;

/// Runs `scenario` on `document` with the Node driver; fails with its output unless it
/// reports success.
fn scenario(server: &Server, scenario: &str, document: &str) -> anyhow::Result<()> {
    scenario_with_pauses(server, scenario, document, |why| {
        bail!("scenario {scenario} paused ({why}) but this test has nothing to do there")
    })
}

/// Runs `scenario` like [`scenario`]; when the script pauses (prints `pause: WHY`),
/// `act(WHY)` runs before the script is told to go on.
fn scenario_with_pauses(
    server: &Server,
    scenario: &str,
    document: &str,
    act: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    run(server, scenario, document, &serde_json::json!({}), act).map(drop)
}

#[test]
fn a_viewer_follows_the_document_but_its_edits_are_refused() -> anyhow::Result<()> {
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    let secret = "yjs-token-secret-0123456789abcdefgh";
    let server = Server::start_with_config(
        &["yjs"],
        1,
        &format!("[plugin.yjs.auth]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n"),
    )?;
    let token = |role: &str| {
        let claims = serde_json::json!({"doc": "shared", "aud": "yjs", "role": role, "exp": get_current_timestamp() + 120});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let tokens = serde_json::json!({"editor": token("editor"), "viewer": token("viewer")});
    run(
        &server,
        "viewer",
        "shared",
        &serde_json::json!({ "tokens": tokens }),
        |why| bail!("the viewer scenario paused ({why})"),
    )
    .map(drop)
}

#[test]
fn two_clients_converge() -> anyhow::Result<()> {
    let server = Server::start(&["yjs"], 1, &[])?;
    scenario(&server, "converge", "pair")
}

#[test]
fn awareness_appears_and_is_removed_when_a_socket_dies_or_a_client_leaves() -> anyhow::Result<()> {
    let server = Server::start(&["yjs"], 1, &[])?;
    scenario(&server, "awareness", "presence")
}

#[test]
fn a_late_joiner_gets_the_state_from_the_server_alone_and_its_offline_edit_spreads()
-> anyhow::Result<()> {
    let server = Server::start(&["yjs"], 1, &[])?;
    scenario(&server, "late-joiner", "late")
}

/// Runs blocking work (Node, process control) off the test's runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

#[tokio::test]
async fn the_document_survives_a_restart_and_kill_9_after_a_checkpoint() -> anyhow::Result<()> {
    let server = Server::start(&["yjs"], 1, &["--checkpoint", "1"])?;
    let server = blocking(move || {
        scenario(&server, "restart-write", "kept")?;
        let mut server = server;
        anyhow::ensure!(server.terminate()?.success(), "wasmroom failed on SIGTERM");
        let file = server.data.path().join("yjs").join("kept.snap");
        anyhow::ensure!(file.is_file(), "no snapshot at {}", file.display());
        let server = server.restart()?;
        scenario(&server, "restart-check", "kept")?;
        Ok(server)
    })
    .await?;
    // Phase 2's edit is in memory; once a checkpoint has saved it, kill -9 loses nothing.
    server.wait_for_stats(0, |s| s["unsaved"] == 0).await?;
    blocking(move || {
        let mut server = server;
        server.kill9()?;
        let server = server.restart()?;
        scenario(&server, "restart-final", "kept")
    })
    .await
}

#[tokio::test]
async fn a_hot_reload_keeps_the_document_and_its_sockets() -> anyhow::Result<()> {
    let server = Server::start(&["yjs"], 1, &[])?;
    let old = plugin_entry(&server, "yjs").await?["current"]["version"].clone();
    blocking(move || {
        scenario_with_pauses(&server, "reload", "reloaded", |_| {
            deploy(
                &server,
                "yjs",
                &rebuilt(&built_plugins_dir().join("yjs.wasm"))?,
            )?;
            // This thread is off the test's runtime: a small one of its own for the wait.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(wait_for_new_version(&server, "yjs", &old, 1))?;
            Ok(())
        })
    })
    .await
}

#[tokio::test]
async fn a_frame_that_is_not_y_websocket_closes_its_connection_with_4400() -> anyhow::Result<()> {
    let server = Server::start(&["yjs"], 1, &[])?;
    for bad in [
        tokio_tungstenite::tungstenite::Message::text("hello"),
        tokio_tungstenite::tungstenite::Message::binary(vec![0u8, 1, 200]),
    ] {
        let mut ws = server.connect(0, "/ws/yjs/garbage").await?;
        // The greeting: sync step 1 with the empty document's state vector.
        match recv(&mut ws).await? {
            tokio_tungstenite::tungstenite::Message::Binary(b) => assert_eq!(&b[..], [0, 0, 1, 0]),
            other => bail!("expected sync step 1, got {other:?}"),
        }
        futures_util::SinkExt::send(&mut ws, bad).await?;
        let (code, reason) = expect_close(&mut ws).await?;
        assert_eq!(code, 4400, "{reason}");
    }
    Ok(())
}
