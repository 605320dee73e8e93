//! `wasmroom new` as a new user runs it: the real binary writes a project into a temp
//! dir outside this workspace, the project's one build command builds it, `wasmroom
//! check` accepts the result, and a server serving it answers WebSocket clients (the
//! counter every template holds) and the project's own example client (`client.mjs`).
//!
//! Toolchains: Rust needs the `wasm32-wasip2` target; JavaScript npm (the project's
//! `npm run build` installs componentize-qjs, pinned); Python `python3` with venv (its
//! `build.sh` installs componentize-py, pinned); C needs clang with wasi-libc (`cargo xtask
//! test` installs Debian's) and `wit-bindgen` and `wasm-tools` (installed by `cargo xtask
//! test` into `target/scaffold-tools`, the versions `build.sh` names); the example client
//! needs Node.js 20+. npm and pip fetch from their registries or their caches (which the
//! kits' own builds fill). A missing toolchain fails the test in CI (`CI`
//! set) and skips it with a note elsewhere.
//!
//! The Rust build shares `target/scaffold` across runs (`CARGO_TARGET_DIR`) so that a
//! second run does not compile wit-bindgen again; everything else is as a user has it.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use support::*;

/// How long a plugin may take to load: the Python component (18 MB) compiles for tens of
/// seconds with a debug build of the host on a busy CI machine.
const LOAD_PATIENCE: Duration = Duration::from_secs(180);

/// The repository's `target/` folder.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Runs `cmd`; on failure, an error with everything it printed.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn wasmroom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmroom"))
}

/// Whether the tests run in CI, where a missing toolchain is a failure.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// A missing toolchain: an error in CI, a note and `Ok(false)` elsewhere.
fn missing(what: &str) -> anyhow::Result<bool> {
    if in_ci() {
        bail!("CI must run this test, but {what}");
    }
    eprintln!("skipped: {what}");
    Ok(false)
}

/// The first of `candidates` that runs with `--version`.
fn tool(candidates: &[OsString]) -> Option<OsString> {
    candidates.iter().find_map(|c| {
        let ok = Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| c.clone())
    })
}

/// `wasmroom new --lang LANG NAME DIR` into a fresh temp dir; returns it and the project.
fn new_project(lang: &str, name: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let home = tempfile::tempdir()?;
    let project = home.path().join(name);
    let printed = run(wasmroom()
        .args(["new", "--lang", lang, name])
        .arg(&project)
        .current_dir(home.path()))?;
    ensure!(printed.contains("build: "), "{printed}");
    Ok((home, project))
}

/// `wasmroom check FILE` accepts it as the plugin `name`.
fn check(file: &Path, name: &str) -> anyhow::Result<()> {
    let printed = run(wasmroom().arg("check").arg(file))?;
    ensure!(
        printed.contains(&format!("ok: plugin '{name}'")),
        "wasmroom check said: {printed}"
    );
    Ok(())
}

/// Waits until the server has loaded the plugin `name`.
async fn loaded(server: &Server, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOAD_PATIENCE;
    while !plugin_entry(server, name).await?["current"]["version"].is_string() {
        ensure!(Instant::now() < deadline, "{name} was not loaded in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Serves `file` as the plugin `name` and speaks to the counter in it: the count on
/// joining, one more per message to every client, `GET /docs/...`, the count kept across
/// a restart (`snapshot` and `restore`); then runs the project's example client.
async fn serve_counter(project: &Path, file: &Path, name: &str) -> anyhow::Result<()> {
    // Deployed once the server runs: compiling the Python component takes longer than
    // the harness allows a start.
    let mut server = Server::start_in(tempfile::tempdir()?, 1, &[])?;
    deploy(&server, name, &std::fs::read(file)?)?;
    loaded(&server, name).await?;
    let path = format!("/ws/{name}/doc1");
    let docs = format!("/docs/{name}/doc1");
    let mut ann = server.connect(0, &path).await?;
    assert_eq!(recv_text(&mut ann).await?, r#"{"count":0}"#);
    send_text(&mut ann, "+1").await?;
    assert_eq!(recv_text(&mut ann).await?, r#"{"count":1}"#);
    let mut bob = server.connect(0, &path).await?;
    assert_eq!(recv_text(&mut bob).await?, r#"{"count":1}"#);
    send_text(&mut bob, "+1").await?;
    assert_eq!(recv_text(&mut ann).await?, r#"{"count":2}"#);
    assert_eq!(recv_text(&mut bob).await?, r#"{"count":2}"#);
    let (status, body) = http(server.addr(0), "GET", &docs, b"").await?;
    assert_eq!((status, body.as_str()), (200, r#"{"count":2}"#));

    // SIGTERM saves the document (its `snapshot`); the next server `restore`s it.
    drop((ann, bob));
    server.terminate()?;
    let server = server.restart()?;
    loaded(&server, name).await?;
    let (status, body) = http(server.addr(0), "GET", &docs, b"").await?;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"count":2}"#),
        "after a restart"
    );

    let Some(node) = tool(&["node".into()]) else {
        missing("node (Node.js 20+) is not installed, so client.mjs was not tried")?;
        return Ok(());
    };
    let mut carl = server.connect(0, &path).await?;
    assert_eq!(recv_text(&mut carl).await?, r#"{"count":2}"#);
    let mut client = Command::new(&node);
    // Node 20 has WebSocket behind a flag; 22 and later have it built in.
    let version = run(Command::new(&node).arg("--version"))?;
    if version.starts_with("v20.") || version.starts_with("v21.") {
        client.arg("--experimental-websocket");
    }
    let url = server.url(0, &path);
    let printed = run(client.arg("client.mjs").arg(&url).current_dir(project))?;
    assert_eq!(
        printed, "{\"count\":2}\n{\"count\":3}\n",
        "client.mjs printed"
    );
    assert_eq!(recv_text(&mut carl).await?, r#"{"count":3}"#);
    Ok(())
}

#[tokio::test]
async fn a_new_rust_project_builds_with_one_command_and_serves() -> anyhow::Result<()> {
    let (_home, project) = new_project("rust", "tally-rs")?;
    let built = target_dir().join("scaffold");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The README's command; only the target folder is shared between runs.
    run(Command::new(cargo)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &built)
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(&project))?;
    // Cargo names the file after the crate: `-` becomes `_` (the README says so).
    let file = built.join("wasm32-wasip2/plugin/tally_rs.wasm");
    check(&file, "tally_rs")?;
    serve_counter(&project, &file, "tally-rs").await
}

#[tokio::test]
async fn a_new_c_project_builds_with_one_command_and_serves() -> anyhow::Result<()> {
    let cc = match std::env::var_os("WASI_CC") {
        Some(cc) => vec![cc],
        None => vec!["clang-19".into(), "clang".into()],
    };
    let Some(cc) = tool(&cc) else {
        missing(
            "clang is not installed (Debian 12: clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc)",
        )?;
        return Ok(());
    };
    // Where `cargo xtask test` installs them, else wherever PATH has them.
    let tools = target_dir().join("scaffold-tools/bin");
    let find = |name: &str| tool(&[tools.join(name).into(), name.into()]);
    let (Some(wit_bindgen), Some(wasm_tools)) = (find("wit-bindgen"), find("wasm-tools")) else {
        missing(
            "wit-bindgen or wasm-tools is not installed (`cargo xtask test` installs them \
             into target/scaffold-tools; build.sh of a C project names the versions)",
        )?;
        return Ok(());
    };
    let (_home, project) = new_project("c", "tally-c")?;
    run(Command::new("./build.sh")
        .env("CC", cc)
        .env("WIT_BINDGEN", wit_bindgen)
        .env("WASM_TOOLS", wasm_tools)
        .current_dir(&project))?;
    let file = project.join("tally-c.wasm");
    check(&file, "tally-c")?;
    serve_counter(&project, &file, "tally-c").await
}

#[tokio::test]
async fn a_new_javascript_project_builds_with_one_command_and_serves() -> anyhow::Result<()> {
    if tool(&["npm".into()]).is_none() {
        missing("npm is not installed (Node.js 20+ with npm)")?;
        return Ok(());
    }
    // Upper case: a plugin name may have it, an npm package name may not.
    let (_home, project) = new_project("js", "Tally-JS")?;
    run(Command::new("npm")
        .args(["run", "build"])
        .current_dir(&project))?;
    let file = project.join("Tally-JS.wasm");
    check(&file, "Tally-JS")?;
    serve_counter(&project, &file, "Tally-JS").await
}

#[tokio::test]
async fn a_new_python_project_builds_with_one_command_and_serves() -> anyhow::Result<()> {
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let venv = Command::new(&python)
        .args(["-m", "venv", "--help"])
        .output();
    if !venv.is_ok_and(|o| o.status.success()) {
        missing("python3 with venv is not installed (Debian: python3 python3-venv)")?;
        return Ok(());
    }
    let (_home, project) = new_project("python", "tally_py")?;
    run(Command::new("./build.sh")
        .env("PYTHON", &python)
        .current_dir(&project))?;
    let file = project.join("tally_py.wasm");
    check(&file, "tally_py")?;
    serve_counter(&project, &file, "tally_py").await
}

#[test]
fn a_non_empty_directory_and_a_bad_name_are_refused_with_the_reason() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    std::fs::write(home.path().join("notes.txt"), "mine")?;
    let out = wasmroom()
        .args(["new", "--lang", "rust", "tally"])
        .arg(home.path())
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("is not empty"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(home.path())?.count(),
        1,
        "something was written"
    );

    let out = wasmroom()
        .args(["new", "--lang", "c", "no/slashes"])
        .current_dir(home.path())
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("invalid plugin name \"no/slashes\""),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(home.path())?.count(),
        1,
        "something was written"
    );
    Ok(())
}

#[test]
fn wasmroom_wit_writes_the_contract_the_server_checks_against() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let printed = run(wasmroom().arg("wit").current_dir(home.path()))?;
    assert!(printed.contains("wit/consumer.wit"), "{printed}");
    let written = std::fs::read_to_string(home.path().join("wit/consumer.wit"))?;
    let ours =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/consumer.wit"))?;
    assert_eq!(written, ours);
    Ok(())
}
