//! The browser demo (demo/) end to end: the real binary serves the yjs plugin and
//! `--static demo/dist`, and demo/e2e.mjs drives headless Chromium pages (Debian's
//! /usr/bin/chromium through playwright-core) on the ProseMirror editor: two editors see
//! each other's text and cursors; with access tokens from the example backend
//! (demo/backend.mjs), a viewer changes nothing; through the fault proxy, two editors keep
//! typing while their sockets are cut (the pages' `clients/js` sessions resume under
//! y-websocket, which sees no disconnect). And demo/origin.mjs shows which servers a page
//! from one origin may open sockets to.
//!
//! Needs, once: `npm ci --prefix demo && npm run build --prefix demo`, and Chromium
//! (`apt-get install -y chromium`). The screenshot is left in target/e2e/demo.png.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use support::fault_proxy::{ConnInfo, FaultProxy};
use support::*;

/// Bounds the Node run; the script bounds each of its waits far below this.
const NODE_PATIENCE: Duration = Duration::from_secs(180);

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> anyhow::Result<SystemTime> {
    let mut latest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let time = if entry.file_type()?.is_dir() {
            newest(&entry.path())?
        } else {
            entry.metadata()?.modified()?
        };
        latest = latest.max(time);
    }
    Ok(latest)
}

/// Fails with what to run if the demo is not installed and built, or Chromium is missing.
fn check_prerequisites(demo: &Path) -> anyhow::Result<()> {
    let build = "npm ci --prefix demo && npm run build --prefix demo";
    if !demo.join("node_modules/playwright-core").is_dir() {
        bail!("demo/node_modules is missing: run `{build}` (from the repository root)");
    }
    if !demo.join("dist/index.html").is_file() {
        bail!("demo/dist is missing: run `npm run build --prefix demo` (from the repository root)");
    }
    // The bundle holds the client's source too (clients/js/src).
    let sources = newest(&demo.join("src"))?.max(newest(&repo().join("clients/js/src"))?);
    if sources > newest(&demo.join("dist"))? {
        bail!(
            "demo/dist is older than demo/src or clients/js/src: run `npm run build --prefix demo`"
        );
    }
    if !Path::new(CHROMIUM).is_file() {
        bail!("{CHROMIUM} is missing: install it with `apt-get install -y chromium` (Debian)");
    }
    Ok(())
}

#[test]
fn two_browsers_edit_one_document() -> anyhow::Result<()> {
    let demo = repo().join("demo");
    check_prerequisites(&demo)?;
    let dist = demo.join("dist");
    let dist = dist.to_str().context("the repository path is not UTF-8")?;
    let server = Server::start(&["yjs"], 1, &["--static", dist])?;
    let screenshot = repo().join("target/e2e/demo.png");

    let out = node(
        &demo.join("e2e.mjs"),
        &[
            format!("http://{}", server.addr(0)),
            screenshot.display().to_string(),
        ],
        &[],
    )?;
    anyhow::ensure!(out.contains("ok: "), "demo/e2e.mjs did not succeed:\n{out}");
    Ok(())
}

/// The secret wasmroom and the example backend share in the viewer test.
const DEMO_SECRET: &str = "a-demo-secret-of-at-least-32-bytes!!";

#[test]
fn a_viewer_cannot_change_the_text() -> anyhow::Result<()> {
    let demo = repo().join("demo");
    check_prerequisites(&demo)?;
    // As demo/tokens.toml, but the backend e2e.mjs starts listens on a free port, so any
    // page may connect; the tokens still decide who edits.
    let server = Server::start_with_config(
        &["yjs"],
        1,
        &format!(
            "[plugin.yjs]\nallowed_origins = [\"*\"]\n\n\
             [plugin.yjs.auth]\nalgorithm = \"HS256\"\nsecret = \"{DEMO_SECRET}\"\n"
        ),
    )?;
    let out = node(
        &demo.join("e2e.mjs"),
        &["--viewer".to_owned(), format!("http://{}", server.addr(0))],
        &[("DEMO_TOKEN_SECRET", DEMO_SECRET)],
    )?;
    anyhow::ensure!(
        out.contains("ok: "),
        "demo/e2e.mjs --viewer did not succeed:\n{out}"
    );
    Ok(())
}

#[test]
fn a_page_from_another_origin_cannot_open_a_socket_unless_allowed() -> anyhow::Result<()> {
    let demo = repo().join("demo");
    check_prerequisites(&demo)?;
    let dist = demo.join("dist");
    let dist = dist.to_str().context("the repository path is not UTF-8")?;
    // The page comes from `pages`; `closed` keeps the default rule, `open` allows it.
    let pages = Server::start(&["yjs"], 1, &["--static", dist])?;
    let page_origin = format!("http://{}", pages.addr(0));
    let closed = Server::start(&["yjs"], 1, &[])?;
    let open = Server::start_with_config(
        &["yjs"],
        1,
        &format!("[plugin.yjs]\nallowed_origins = [\"{page_origin}\"]\n"),
    )?;
    let same = pages.url(0, "/ws/yjs/origin");
    let refused = closed.url(0, "/ws/yjs/origin");
    let allowed = open.url(0, "/ws/yjs/origin");
    let out = node(
        &demo.join("origin.mjs"),
        &[page_origin, same.clone(), refused.clone(), allowed.clone()],
        &[],
    )?;
    for expected in [
        format!("open {same}"),
        format!("refused {refused}"),
        format!("open {allowed}"),
    ] {
        anyhow::ensure!(
            out.lines().any(|l| l == expected),
            "no {expected:?} in:\n{out}"
        );
    }
    let origin_refusals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(metric(
            closed.addr(0),
            "wasmroom_rejected_total",
            &["reason=\"origin\""],
        ))?;
    assert_eq!(origin_refusals, 1.0);
    Ok(())
}

#[test]
fn two_editors_keep_editing_through_cuts() -> anyhow::Result<()> {
    let demo = repo().join("demo");
    check_prerequisites(&demo)?;
    let dist = demo.join("dist");
    let dist = dist.to_str().context("the repository path is not UTF-8")?;
    let server = Server::start(&["yjs"], 1, &["--static", dist])?;
    // The pages come through the proxy, and so do their sockets.
    let proxy = FaultProxy::start(server.addr(0))?;
    let out = node_driven(
        &demo.join("e2e.mjs"),
        &[
            "--cuts".to_owned(),
            CUTS.to_string(),
            format!("http://{}", proxy.addr()),
        ],
        &[],
        |line| {
            // `proxy cut N`: both pages' sockets cut, and new connections refused until
            // `proxy heal N`, so that the keystrokes between fall into the outage.
            let Some(command) = line.strip_prefix("proxy ") else {
                return Ok(None);
            };
            if command.starts_with("cut ") {
                let socket = |c: &ConnInfo| c.open && c.saw_upstream(b"GET /ws/yjs/");
                let first = proxy.wait_for(socket, PATIENCE)?;
                proxy.wait_for(|c| socket(c) && c.id != first.id, PATIENCE)?;
                proxy.refuse(true);
                proxy.cut();
            } else if command.starts_with("heal ") {
                proxy.refuse(false);
            } else {
                bail!("unknown proxy command {command:?}");
            }
            Ok(Some(format!("done {command}")))
        },
    )?;
    anyhow::ensure!(
        out.contains("ok: "),
        "demo/e2e.mjs --cuts did not succeed:\n{out}"
    );
    anyhow::ensure!(
        proxy.counters().cut >= 2 * CUTS,
        "the proxy cut only {:?}",
        proxy.counters()
    );
    Ok(())
}

/// How many times demo/e2e.mjs --cuts asks for a cut.
const CUTS: u64 = 3;

/// Runs `node SCRIPT ARGS` with `env` added (its own process group, killed with it after
/// NODE_PATIENCE); returns what it printed when it exited successfully.
fn node(script: &Path, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<String> {
    node_driven(script, args, env, |_| Ok(None))
}

/// [`node`], with `on_line` called on each line the script prints: what it returns is
/// written back to the script's stdin (a line). If it fails, the script's stdin closes
/// (the script stops waiting) and the run fails with that error.
fn node_driven(
    script: &Path,
    args: &[String],
    env: &[(&str, &str)],
    mut on_line: impl FnMut(&str) -> anyhow::Result<Option<String>> + Send,
) -> anyhow::Result<String> {
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill Chromium with it.
        .process_group(0)
        .spawn()
        .context("cannot run `node` (Node.js 20 or later must be on PATH)")?;
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let pid = child.id().to_string();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait()));
    // Both pipes are read on threads so that a chatty child never blocks on a full pipe.
    let (status, out, failure) = std::thread::scope(|scope| {
        let lines = scope.spawn(move || {
            let (mut text, mut failure) = (String::new(), None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
                if failure.is_some() {
                    continue;
                }
                match on_line(&line) {
                    Ok(None) => {}
                    Ok(Some(reply)) => {
                        if let Some(input) = stdin.as_mut() {
                            let _ = writeln!(input, "{reply}");
                        }
                    }
                    Err(e) => {
                        stdin = None;
                        failure = Some(e);
                    }
                }
            }
            (text, failure)
        });
        let errors = scope.spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = match exited.recv_timeout(NODE_PATIENCE) {
            Ok(status) => Some(status),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
                None
            }
        };
        let (text, failure) = lines.join().unwrap_or_default();
        (status, text + &errors.join().unwrap_or_default(), failure)
    });
    let name = script.display();
    eprint!("[{name}] {out}");
    if let Some(e) = failure {
        bail!("{name}: {e:#}\n{out}");
    }
    match status.transpose()? {
        None => bail!("{name} did not finish within {NODE_PATIENCE:?}:\n{out}"),
        Some(s) if s.success() => Ok(out),
        Some(s) => bail!("{name} failed ({s}):\n{out}"),
    }
}
