//! The Node driver of the yjs tests: unmodified npm clients (`yjs` + `y-websocket`, pinned
//! in tests/yjs/package-lock.json) run a scenario of tests/yjs/scenarios.mjs against the
//! real binary. Needs `npm ci --prefix tests/yjs` once (`cargo xtask test` does it).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::support::Server;

/// Bounds one Node run; the script bounds each of its waits far below this.
const NODE_PATIENCE: Duration = Duration::from_secs(120);

fn node_project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/yjs")
}

/// Runs `scenario` on `document` with the Node driver, giving the script `params` (JSON:
/// `tokens` by role, and what the scenario reads); when the script pauses (prints
/// `pause: WHY`), `act(WHY)` runs before the script is told to go on. Fails with the
/// script's output unless it reports success; returns its summary (what follows
/// `ok SCENARIO: `).
pub fn run(
    server: &Server,
    scenario: &str,
    document: &str,
    params: &serde_json::Value,
    mut act: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
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
        .arg(params.to_string())
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
    let ok = format!("ok {scenario}: ");
    match outcome {
        Err(e) => bail!("scenario {scenario}: {e:#}\n{stdout}{stderr}"),
        Ok(s) if s.success() => match stdout.lines().find_map(|l| l.strip_prefix(&ok)) {
            Some(summary) => Ok(summary.to_owned()),
            None => bail!("scenario {scenario} ended without `{ok}`:\n{stdout}{stderr}"),
        },
        Ok(s) => bail!("scenario {scenario} failed ({s}):\n{stdout}{stderr}"),
    }
}
