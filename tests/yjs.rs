//! The yjs plugin against unmodified npm clients (`yjs` + `y-websocket`, pinned in
//! tests/yjs/package-lock.json): the scenarios live in tests/yjs/scenarios.mjs, run by
//! Node against the real binary. Needs `npm ci --prefix tests/yjs` once.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use support::*;

/// Bounds one Node run; the script bounds each of its waits far below this.
const NODE_PATIENCE: Duration = Duration::from_secs(120);

fn node_project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/yjs")
}

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
    scenario_with_tokens(server, scenario, document, "{}", act)
}

/// Like [`scenario_with_pauses`], with access tokens by role (JSON) for the script.
fn scenario_with_tokens(
    server: &Server,
    scenario: &str,
    document: &str,
    tokens: &str,
    mut act: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let project = node_project();
    if !project.join("node_modules/y-websocket").is_dir() {
        bail!(
            "{} is missing: run `npm ci --prefix tests/yjs` (from the repository root) first",
            project.join("node_modules").display()
        );
    }
    let mut child = Command::new("node")
        .arg(project.join("scenarios.mjs"))
        .arg(server.url(0, "/ws/yjs"))
        .arg(scenario)
        .arg(document)
        .arg(tokens)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `node` (Node.js 20 or later must be on PATH)")?;
    // Read both pipes on threads so that a chatty child never blocks on a full pipe; the
    // pauses come through a channel.
    let mut stdin = child.stdin.take().expect("piped");
    let out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let (pauses, paused) = mpsc::channel();
    let stdout = std::thread::spawn(move || {
        // Byte lines, so that nothing the script prints can stop the reading.
        let mut s = String::new();
        for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line);
            if let Some(why) = line.strip_prefix("pause: ") {
                let _ = pauses.send(why.to_owned());
            }
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + NODE_PATIENCE;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(anyhow::Error::from(e)),
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("did not finish within {NODE_PATIENCE:?}"));
        }
        match paused.recv_timeout(Duration::from_millis(20)) {
            Ok(why) => {
                let acted = act(&why).and_then(|()| Ok(stdin.write_all(b"go\n")?));
                if let Err(e) = acted {
                    break Err(e.context(format!("at the pause {why:?}")));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Its stdout is closed: the script is ending; wait for it without spinning.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    if outcome.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    eprint!("[node {scenario}] {stdout}{stderr}");
    match outcome {
        Err(e) => bail!("scenario {scenario}: {e:#}\n{stdout}{stderr}"),
        Ok(s) if s.success() && stdout.contains(&format!("ok {scenario}:")) => Ok(()),
        Ok(s) => bail!("scenario {scenario} failed ({s}):\n{stdout}{stderr}"),
    }
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
    let tokens =
        serde_json::json!({"editor": token("editor"), "viewer": token("viewer")}).to_string();
    scenario_with_tokens(&server, "viewer", "shared", &tokens, |why| {
        bail!("the viewer scenario paused ({why})")
    })
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
