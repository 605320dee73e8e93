//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the fuzz targets in `fuzz/` one
//! after the other, N seconds each, and fails if any finds a crash.
//!
//! cargo-fuzz (libFuzzer) comes from crates.io, pinned, installed when missing. The
//! targets are built with `--sanitizer none`: `wasmroom-wire` has no unsafe code, so a
//! sanitizer would find nothing that a panic does not, and without one cargo-fuzz works
//! on the stable toolchain the rest of the build uses (no nightly to download).
//!
//! Each run starts from the seeds in `fuzz/corpus/TARGET` plus what earlier runs found,
//! kept in `target/fuzz-corpus/TARGET`: libFuzzer writes new inputs into its first
//! corpus directory, so the seeds in git stay as they are.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::{cargo, run};

const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The targets, in the order they run (`fuzz/fuzz_targets/NAME.rs`).
const TARGETS: &[&str] = &[
    "request_head",
    "document_id",
    "origin",
    "snapshot",
    "websocket",
    "ring",
];
/// Build options shared by `build` and `run`, so that `run` finds the build done.
const BUILD: &[&str] = &["--sanitizer", "none"];

pub(crate) fn fuzz(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60u32;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let value = args.next().context("--seconds takes a number")?;
            seconds = value
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .with_context(|| format!("--seconds takes a positive number, not {value:?}"))?;
        } else if TARGETS.contains(&arg.as_str()) {
            targets.push(arg.as_str());
        } else {
            bail!(
                "unknown fuzz target {arg:?}; the targets: {}",
                TARGETS.join(", ")
            );
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    ensure_cargo_fuzz()?;
    let mut build = cargo();
    build.args(["fuzz", "build"]).args(BUILD);
    run(build.current_dir(root))?;

    let mut crashes = Vec::new();
    let mut summary = Vec::new();
    for target in targets {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let (stats, crash) = run_target(root, target, seconds)?;
        summary.push(format!("  {target:<13} {stats}"));
        crashes.extend(crash);
    }
    eprintln!("xtask: fuzzing done\n{}", summary.join("\n"));
    if !crashes.is_empty() {
        bail!(
            "fuzzing found crashes; the inputs, each reproduced by \
             `cargo fuzz run --sanitizer none TARGET INPUT`:\n  {}",
            crashes.join("\n  ")
        );
    }
    Ok(())
}

/// Runs one target; returns its closing statistics and, after a crash, where libFuzzer
/// saved the input.
fn run_target(root: &Path, target: &str, seconds: u32) -> anyhow::Result<(String, Option<String>)> {
    let corpus = root.join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let artifacts = root.join("fuzz/artifacts").join(target);
    let before = files(&artifacts);
    let mut cmd = cargo();
    cmd.args(["fuzz", "run"]).args(BUILD).arg(target);
    cmd.arg(&corpus).arg(root.join("fuzz/corpus").join(target));
    // -timeout: an input that takes this long is a finding too (a hang).
    cmd.arg("--").arg(format!("-max_total_time={seconds}"));
    cmd.args(["-timeout=10", "-print_final_stats=1"]);
    let mut child = cmd
        .current_dir(root)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    // libFuzzer reports every new input on stderr; keep the rest (start, crash, totals).
    let mut last_status = String::new();
    let mut runs = String::new();
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(status) = line.split_once("cov: ").map(|(_, s)| s) {
            last_status = format!("cov: {}", status.split(" lim:").next().unwrap_or(status));
            if line.contains("\tNEW ") || line.contains("\tREDUCE ") || line.contains("\tpulse ") {
                continue;
            }
        }
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units: ") {
            runs = n.trim().to_owned();
        }
        eprintln!("{line}");
    }
    let status = child.wait()?;
    let stats = format!("{runs} runs, {last_status}")
        .trim_end_matches([' ', ','])
        .to_owned();
    if status.success() {
        return Ok((stats, None));
    }
    let saved: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if saved.is_empty() {
        bail!("{cmd:?} failed with {status} and saved no input");
    }
    let saved: Vec<String> = saved
        .iter()
        .map(|f| format!("{target} {}", f.display()))
        .collect();
    eprintln!(
        "xtask: {target} found a crash; input saved as {}",
        saved.join(", ")
    );
    Ok((format!("{stats}: CRASHED"), Some(saved.join("\n  "))))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Installs the pinned cargo-fuzz from crates.io unless it is there already.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let mut cmd = cargo();
    cmd.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]);
    run(&mut cmd)
}
