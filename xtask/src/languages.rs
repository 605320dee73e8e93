//! The consumers written in other languages: `js-chat` (QuickJS), `py-chat` (CPython) and
//! `c-chat` (clang + wasi-libc), built into the same folder as the Rust plugins.
//!
//! Each needs a toolchain besides Rust. The tools are pinned in the repository and
//! installed here, on first use:
//! - JavaScript: `npm ci` in `plugins/js-chat` (componentize-qjs, `package-lock.json`);
//! - Python: a venv under `target/` with componentize-py (`plugins/py-chat/requirements.txt`,
//!   hashes included);
//! - C: the `wit-c` helper of this workspace (`wit-bindgen c` and `component new` as
//!   libraries), plus Debian's clang/lld and wasi-libc (`prepare.rs` installs them when it
//!   can).
//!
//! A missing toolchain skips that consumer with a message naming what to install, and
//! the build goes on; with `CI` set (as `.ci/run` has it) a skip is an error, so CI always
//! builds and tests all of them. A consumer whose output is newer than its sources (and
//! the WIT and the pinned tool versions) is not built again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::{cargo, run};

/// The world every consumer implements (`wit/consumer.wit`).
const WORLD: &str = "room";

/// What became of one consumer.
enum Outcome {
    Built,
    UpToDate,
    /// Its toolchain is missing: what to install.
    Skipped(String),
}

/// Builds `js-chat.wasm`, `py-chat.wasm` and `c-chat.wasm` into `built`.
pub(crate) fn build(root: &Path, built: &Path) -> anyhow::Result<()> {
    type Builder = fn(&Path, &Path) -> anyhow::Result<Outcome>;
    let consumers: [(&str, Builder); 3] = [
        ("js-chat", build_js),
        ("py-chat", build_py),
        ("c-chat", build_c),
    ];
    let mut skipped = Vec::new();
    for (name, build) in consumers {
        match build(root, built).with_context(|| format!("building {name}"))? {
            Outcome::Built => eprintln!("xtask: built {name}"),
            Outcome::UpToDate => {}
            Outcome::Skipped(why) => {
                eprintln!("xtask: skipping {name}: {why}");
                skipped.push(name);
            }
        }
    }
    if skipped.is_empty() {
        return Ok(());
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        bail!(
            "CI must build every consumer, but skipped: {}",
            skipped.join(", ")
        );
    }
    eprintln!(
        "xtask: not built: {} (the tests in tests/languages.rs for them will fail)",
        skipped.join(", ")
    );
    Ok(())
}

/// `js-chat`: componentize-qjs (QuickJS) from `plugins/js-chat/node_modules`.
fn build_js(root: &Path, built: &Path) -> anyhow::Result<Outcome> {
    let dir = root.join("plugins/js-chat");
    let out = built.join("js-chat.wasm");
    let lock = dir.join("package-lock.json");
    if is_fresh(&out, &[dir.join("chat.js"), lock.clone(), root.join("wit")]) {
        return Ok(Outcome::UpToDate);
    }
    if !works(Command::new("npm").arg("--version")) {
        return Ok(Outcome::Skipped(
            "npm not found; install Node.js 18 or later with npm (Debian: apt-get install nodejs npm)"
                .into(),
        ));
    }
    // `npm ci` only when the lockfile changed since the last install.
    if !is_fresh(&dir.join("node_modules/.package-lock.json"), &[lock]) {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir))?;
    }
    run(Command::new(dir.join("node_modules/.bin/componentize-qjs"))
        .arg("--wit")
        .arg(root.join("wit"))
        .args(["--world", WORLD, "--js", "chat.js", "--sync", "--output"])
        .arg(&out)
        .stdout(Stdio::null())
        .current_dir(&dir))?;
    Ok(Outcome::Built)
}

/// `py-chat`: componentize-py, pip-installed into a venv under `target/`.
fn build_py(root: &Path, built: &Path) -> anyhow::Result<Outcome> {
    let dir = root.join("plugins/py-chat");
    let out = built.join("py-chat.wasm");
    let requirements = dir.join("requirements.txt");
    if is_fresh(
        &out,
        &[dir.join("app.py"), requirements.clone(), root.join("wit")],
    ) {
        return Ok(Outcome::UpToDate);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !works(Command::new(&python).arg("--version")) {
        return Ok(Outcome::Skipped(format!(
            "{python} not found; install Python 3 with venv (Debian: apt-get install python3 python3-venv)"
        )));
    }
    let venv = root.join("target/componentize-py");
    let tool = venv.join("bin/componentize-py");
    let stamp = venv.join("installed-requirements.txt");
    if !is_fresh(&stamp, std::slice::from_ref(&requirements)) || !tool.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        if !works(Command::new(&python).args(["-m", "venv"]).arg(&venv)) {
            let _ = std::fs::remove_dir_all(&venv);
            return Ok(Outcome::Skipped(format!(
                "`{python} -m venv` is not available; install the venv module (Debian: apt-get install python3-venv)"
            )));
        }
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--require-hashes", "-r"])
            .arg(&requirements))?;
        std::fs::copy(&requirements, &stamp)?;
    }
    run(Command::new(&tool)
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", WORLD, "componentize", "app", "-p"])
        .arg(&dir)
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .env("PYTHONDONTWRITEBYTECODE", "1"))?;
    Ok(Outcome::Built)
}

/// The Debian packages the C consumer needs.
const C_PACKAGES: &str = "clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc";

/// `c-chat`: bindings and component by `tools/wit-c`, the code by clang for wasm32-wasi.
fn build_c(root: &Path, built: &Path) -> anyhow::Result<Outcome> {
    let source = root.join("plugins/c-chat/chat.c");
    let out = built.join("c-chat.wasm");
    if is_fresh(
        &out,
        &[
            source.clone(),
            root.join("wit"),
            root.join("tools/wit-c/src"),
        ],
    ) {
        return Ok(Outcome::UpToDate);
    }
    // `WASI_CC` picks the compiler; otherwise Debian's clang-19, then any clang.
    let candidates = match std::env::var("WASI_CC") {
        Ok(cc) => vec![cc],
        Err(_) => vec!["clang-19".to_owned(), "clang".to_owned()],
    };
    let Some(clang) = candidates
        .into_iter()
        .find(|c| works(Command::new(c).arg("--version")))
    else {
        return Ok(Outcome::Skipped(format!(
            "clang not found (or WASI_CC does not run); install {C_PACKAGES} \
             (Debian 12: apt-get install {C_PACKAGES})"
        )));
    };
    let work = built.join("c-chat-build");
    std::fs::create_dir_all(&work)?;
    // Can this clang build a WASI reactor with wasi-libc? (wasm-ld, compiler-rt, sysroot)
    let probe = work.join("probe.c");
    std::fs::write(
        &probe,
        "#include <stdlib.h>\n#include <string.h>\nvoid *probe(size_t n) { return memset(malloc(n), 0, n); }\n",
    )?;
    let probe_run = Command::new(&clang)
        .args(wasm_cflags())
        .arg("-o")
        .arg(work.join("probe.wasm"))
        .arg(&probe)
        .output()
        .with_context(|| format!("cannot run {clang}"))?;
    if !probe_run.status.success() {
        let why = String::from_utf8_lossy(&probe_run.stderr);
        let first = why.lines().find(|l| l.contains("error")).unwrap_or("");
        return Ok(Outcome::Skipped(format!(
            "{clang} cannot build for wasm32-wasi ({}); install {C_PACKAGES}",
            first.trim()
        )));
    }

    // The helper (a few seconds to build once; it shares its crates with the Rust SDK's).
    // `--workspace`: features resolved as for `cargo test --workspace`, which then reuses
    // these crates instead of building them again with other features.
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--workspace", "--bin", "wit-c"]);
    run(cmd.current_dir(root))?;
    let wit_c = root.join("target/debug/wit-c");

    run(Command::new(&wit_c)
        .arg("bindings")
        .arg(root.join("wit"))
        .arg(WORLD)
        .arg(&work))?;
    let core = work.join("c-chat.core.wasm");
    run(Command::new(&clang)
        .args(wasm_cflags())
        .args([
            "-Os",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wl,--strip-all",
            "-I",
        ])
        .arg(&work)
        .arg("-o")
        .arg(&core)
        .arg(&source)
        .arg(work.join(format!("{WORLD}.c")))
        .arg(work.join(format!("{WORLD}_component_type.o"))))?;
    run(Command::new(&wit_c).arg("component").arg(&core).arg(&out))?;
    Ok(Outcome::Built)
}

fn wasm_cflags() -> [&'static str; 2] {
    ["--target=wasm32-wasi", "-mexec-model=reactor"]
}

/// Whether `cmd` runs and succeeds (its output discarded).
fn works(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `out` exists and is newer than every file in `inputs` (folders: their files).
fn is_fresh(out: &Path, inputs: &[PathBuf]) -> bool {
    let Ok(built) = std::fs::metadata(out).and_then(|m| m.modified()) else {
        return false;
    };
    inputs.iter().all(|i| newest(i).is_some_and(|t| t <= built))
}

fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .map(|e| e.ok().and_then(|e| newest(&e.path())))
        .try_fold(meta.modified().ok()?, |acc, t| Some(acc.max(t?)))
}
