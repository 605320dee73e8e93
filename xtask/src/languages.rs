//! The consumers written in other languages: `js-chat` (QuickJS), `py-chat` (CPython) and
//! `c-chat` (clang + wasi-libc), built into the same folder as the Rust plugins, and the
//! tests' consumers on the kits (`tests/plugins/kits`).
//!
//! Each needs a toolchain besides Rust. The tools are pinned in the repository and
//! installed here, on first use:
//! - JavaScript: `npm ci` in `kits/js` (componentize-qjs, `package-lock.json`); the
//!   consumers import the kit `kits/js/wasmroom.js`;
//! - Python: a venv under `target/` with componentize-py (`kits/python/requirements.txt`,
//!   hashes included); the consumers import the kit `kits/python/wasmroom.py`;
//! - C: the `wit-c` helper of this workspace (`wit-bindgen c` and `component new` as
//!   libraries), plus Debian's clang/lld and wasi-libc (`prepare.rs` installs them when it
//!   can).
//!
//! A missing toolchain skips that consumer with a message naming what to install, and
//! the build goes on; with `CI` set (as `.ci/run` has it) a skip is an error, so CI always
//! builds and tests all of them. A consumer whose output is newer than its sources (and
//! the kit, the WIT and the pinned tool versions) is not built again.

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

/// The JavaScript consumers: output name, entry file.
const JS: [(&str, &str); 3] = [
    ("js-chat", "plugins/js-chat/chat.js"),
    // The kit's defaults (tests/languages.rs).
    ("js-defaults", "tests/plugins/kits/defaults.js"),
    // Without the kit and without `onRequest`: what `wasmroom check` must refuse.
    ("js-no-request", "tests/plugins/kits/no_request.js"),
];

/// The Python consumers: output name, folder, module.
const PY: [(&str, &str, &str); 2] = [
    ("py-chat", "plugins/py-chat", "app"),
    ("py-defaults", "tests/plugins/kits", "defaults"),
];

/// Builds the consumers above and `c-chat.wasm` into `built`.
pub(crate) fn build(root: &Path, built: &Path) -> anyhow::Result<()> {
    type Builder<'a> = Box<dyn Fn() -> anyhow::Result<Outcome> + 'a>;
    let mut consumers: Vec<(&str, Builder<'_>)> = Vec::new();
    for (name, entry) in JS {
        consumers.push((name, Box::new(move || build_js(root, built, name, entry))));
    }
    for (name, dir, module) in PY {
        consumers.push((
            name,
            Box::new(move || build_py(root, built, name, dir, module)),
        ));
    }
    consumers.push(("c-chat", Box::new(|| build_c(root, built))));
    let mut skipped = Vec::new();
    for (name, build) in consumers {
        match build().with_context(|| format!("building {name}"))? {
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

/// A JavaScript consumer: componentize-qjs (QuickJS) from `kits/js/node_modules`, run
/// from the repository's root so that the entry's relative import of the kit resolves.
fn build_js(root: &Path, built: &Path, name: &str, entry: &str) -> anyhow::Result<Outcome> {
    let kit = root.join("kits/js");
    let out = built.join(format!("{name}.wasm"));
    let lock = kit.join("package-lock.json");
    if is_fresh(
        &out,
        &[
            root.join(entry),
            kit.join("wasmroom.js"),
            lock.clone(),
            root.join("wit"),
        ],
    ) {
        return Ok(Outcome::UpToDate);
    }
    if !works(Command::new("npm").arg("--version")) {
        return Ok(Outcome::Skipped(
            "npm not found; install Node.js 18 or later with npm (Debian: apt-get install nodejs npm)"
                .into(),
        ));
    }
    // `npm ci` only when the lockfile changed since the last install.
    if !is_fresh(&kit.join("node_modules/.package-lock.json"), &[lock]) {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&kit))?;
    }
    run(Command::new(kit.join("node_modules/.bin/componentize-qjs"))
        .args([
            "--wit", "wit", "--world", WORLD, "--js", entry, "--sync", "--output",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .current_dir(root))?;
    Ok(Outcome::Built)
}

/// A Python consumer: componentize-py, pip-installed into a venv under `target/`, with
/// the consumer's folder and the kit's on the module path.
fn build_py(
    root: &Path,
    built: &Path,
    name: &str,
    dir: &str,
    module: &str,
) -> anyhow::Result<Outcome> {
    let dir = root.join(dir);
    let kit = root.join("kits/python");
    let out = built.join(format!("{name}.wasm"));
    let requirements = kit.join("requirements.txt");
    if is_fresh(
        &out,
        &[
            dir.join(format!("{module}.py")),
            kit.join("wasmroom.py"),
            requirements.clone(),
            root.join("wit"),
        ],
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
        .args(["-w", WORLD, "componentize", module, "-p"])
        .arg(&dir)
        .arg("-p")
        .arg(&kit)
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
