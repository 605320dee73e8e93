//! What the tests drive besides the plugins, made ready before `cargo test`: the npm
//! clients (pinned by their lockfiles), the browser demo's bundle, the JavaScript client
//! (`clients/js`: built, and its unit tests run), and Debian's nginx,
//! Chromium and PostgreSQL (installed with apt-get when missing and this runs as root or
//! with sudo). And the browser demo for `cargo xtask serve`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::run;

/// (program that must exist, Debian package that provides it)
const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/nginx", "nginx"),
    ("/usr/bin/chromium", "chromium"),
];

/// What the consumers in other languages need from Debian: (probe command, packages).
/// componentize-qjs and componentize-py come from npm and PyPI (see `languages.rs`).
const TOOLCHAIN_PACKAGES: &[(&[&str], &[&str])] = &[
    (
        &[
            "dpkg",
            "-s",
            "clang-19",
            "lld-19",
            "libclang-rt-19-dev-wasm32",
            "wasi-libc",
        ],
        &[
            "clang-19",
            "lld-19",
            "libclang-rt-19-dev-wasm32",
            "wasi-libc",
        ],
    ),
    (&["python3", "-m", "venv", "--help"], &["python3-venv"]),
];

/// Installs the Debian packages the consumers in other languages need, when missing and
/// possible (root or sudo). Otherwise `languages` skips those consumers and says why.
pub(crate) fn language_toolchains() {
    let missing: Vec<&str> = TOOLCHAIN_PACKAGES
        .iter()
        .filter(|(probe, _)| {
            !Command::new(probe[0])
                .args(&probe[1..])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .flat_map(|(_, packages)| packages.iter().copied())
        .collect();
    if let Err(e) = apt_install(&missing) {
        eprintln!("xtask: {e:#}");
    }
}

/// Whether Debian's PostgreSQL server is there (`/usr/lib/postgresql/VERSION/bin`): the
/// tests of the shared store start their own.
fn postgres_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").exists() && v.path().join("bin/postgres").exists())
}

/// Node projects the tests run, relative to the workspace root.
const NPM_PROJECTS: &[&str] = &["tests/yjs", "tests/sessions", "demo", "clients/js"];

/// Installs what is missing and builds the demo.
pub(crate) fn for_tests(root: &Path) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(program, _)| !Path::new(program).exists())
        .map(|&(_, package)| package)
        .collect();
    if !postgres_installed() {
        missing.push("postgresql");
    }
    apt_install(&missing)?;
    for project in NPM_PROJECTS {
        npm_ci(root, project)?;
    }
    build_demo(root)?;
    js_client(root)
}

/// Builds the JavaScript client (`clients/js/dist`, which `tests/sessions.rs` drives) and
/// runs its unit tests (`node --test`).
fn js_client(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("clients/js");
    eprintln!("xtask: building clients/js");
    run(npm()?.args(["run", "build"]).current_dir(&dir))?;
    eprintln!("xtask: clients/js unit tests");
    run(npm()?.args(["test"]).current_dir(&dir)).context("the unit tests of clients/js")
}

/// `npm ci` in `project` when its lockfile changed since the last install.
fn npm_ci(root: &Path, project: &str) -> anyhow::Result<()> {
    let dir = root.join(project);
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules").join(".package-lock.json");
    if newer(&lock, &installed) {
        eprintln!("xtask: npm ci in {project}");
        run(npm()?
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir))
        .with_context(|| format!("installing the npm packages of {project}"))?;
    }
    Ok(())
}

fn build_demo(root: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: building the browser demo");
    run(npm()?.args(["run", "build"]).current_dir(root.join("demo")))
}

/// For `cargo xtask serve`: installs and builds the browser demo and returns its folder
/// (`demo/dist`), or says why not and returns `None`: the server runs without it (a machine
/// without Node.js or without the npm registry still gets a server).
pub(crate) fn demo_for_serve(root: &Path) -> Option<std::path::PathBuf> {
    if npm().is_err() {
        eprintln!("xtask: npm not found: serving without the browser demo (it needs Node.js 20+)");
        return None;
    }
    match npm_ci(root, "demo").and_then(|()| build_demo(root)) {
        Ok(()) => Some(root.join("demo").join("dist")),
        Err(e) => {
            eprintln!("xtask: serving without the browser demo: {e:#}");
            None
        }
    }
}

fn npm() -> anyhow::Result<Command> {
    if Command::new("npm").arg("--version").output().is_err() {
        bail!("npm is missing: the end-to-end tests drive real npm clients; install Node.js 20+");
    }
    Ok(Command::new("npm"))
}

/// Whether `a` is newer than `b` (or `b` is missing).
fn newer(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    match (modified(a), modified(b)) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

/// `apt-get install` as root, or through `sudo -n`; otherwise says what to install.
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let sudo = !root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !root && !sudo {
        bail!(
            "the tests need these Debian packages: {}; install them with \
             `sudo apt-get install -y {}`",
            packages.join(", "),
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(", "));
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q"]);
    install.args(packages);
    run(&mut install)
}
