//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the fuzz targets in `fuzz/` one
//! after the other, N seconds each, and fails if any finds a crash.
//!
//! The targets are libFuzzer binaries (`libfuzzer-sys`). This builds them the way
//! cargo-fuzz 0.13 does with `--sanitizer none` (its coverage instrumentation flags, `--cfg
//! fuzzing`, debug assertions, one codegen unit) and runs them itself: nothing to install,
//! no 50 s `cargo install`. Without a sanitizer it works on the stable toolchain the rest
//! of the build uses; `wasmroom-wire` has no unsafe code, so a sanitizer would find nothing
//! that a panic does not. The binaries land where cargo-fuzz puts them
//! (`fuzz/target/HOST/release/`), so `cargo fuzz run --sanitizer none` works on them too.
//!
//! Each run starts from the seeds in `fuzz/corpus/TARGET` plus what earlier runs found,
//! kept in `target/fuzz-corpus/TARGET`: libFuzzer writes new inputs into its first
//! corpus directory, so the seeds in git stay as they are.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::{cargo, run};

/// The targets, in the order they run (`fuzz/fuzz_targets/NAME.rs`).
const TARGETS: &[&str] = &[
    "request_head",
    "document_id",
    "origin",
    "snapshot",
    "websocket",
    "ring",
    "journal",
    "session",
];
/// What cargo-fuzz 0.13.2 passes to rustc for `cargo fuzz build --sanitizer none`, in its
/// order (its `project.rs`; the same flags, so each reuses the other's build):
/// libFuzzer's coverage feedback (8-bit counters, PC table, compared values),
/// `cfg(fuzzing)`, no branch folding (finer coverage), on Linux the deepest stack as
/// coverage too, debug assertions, and one codegen unit (the coverage pass blocks inlining
/// across units).
fn rustflags(host: &str) -> Vec<&'static str> {
    let mut flags = vec![
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    ];
    if host.contains("-linux-") {
        flags.push("-Cllvm-args=-sanitizer-coverage-stack-depth");
    }
    flags.extend(["-Cdebug-assertions", "-Ccodegen-units=1"]);
    flags
}

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
    let binaries = build(root)?;

    let mut crashes = Vec::new();
    let mut summary = Vec::new();
    for target in targets {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let (stats, crash) = run_target(root, &binaries.join(target), target, seconds)?;
        summary.push(format!("  {target:<13} {stats}"));
        crashes.extend(crash);
    }
    eprintln!("xtask: fuzzing done\n{}", summary.join("\n"));
    if !crashes.is_empty() {
        bail!(
            "fuzzing found crashes; each reproduced by running the target on its input:\n  {}",
            crashes.join("\n  ")
        );
    }
    Ok(())
}

/// Builds every target with libFuzzer's instrumentation; returns the folder of the binaries.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let host = host_triple()?;
    let mut flags = rustflags(&host);
    // The caller's RUSTFLAGS last, so that they win (as with cargo-fuzz).
    let extra = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.extend(extra.split_whitespace());
    let manifest = root.join("fuzz/Cargo.toml");
    let mut cmd = cargo();
    // `--target`: the flags then reach the targets but not the build scripts.
    cmd.args([
        "build",
        "--release",
        "--bins",
        "--target",
        &host,
        "--manifest-path",
    ])
    .arg(&manifest)
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env("RUSTFLAGS", flags.join(" "));
    run(cmd.current_dir(root))?;
    Ok(root.join("fuzz/target").join(host).join("release"))
}

/// The triple of this machine (`rustc -vV`), the target libFuzzer runs on.
fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot run {}", rustc.to_string_lossy()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("`rustc -vV` names no host")
}

/// Runs one target; returns its closing statistics and, after a crash, where libFuzzer
/// saved the input.
fn run_target(
    root: &Path,
    binary: &Path,
    target: &str,
    seconds: u32,
) -> anyhow::Result<(String, Option<String>)> {
    let corpus = root.join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let artifacts = root.join("fuzz/artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let before = files(&artifacts);
    let mut cmd = Command::new(binary);
    // The trailing slash: libFuzzer prepends this to the file name.
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display()));
    // -timeout: an input that takes this long is a finding too (a hang).
    cmd.arg(format!("-max_total_time={seconds}"));
    cmd.args(["-timeout=10", "-print_final_stats=1"]);
    cmd.arg(&corpus).arg(root.join("fuzz/corpus").join(target));
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
    let inputs: Vec<String> = saved.iter().map(|f| f.display().to_string()).collect();
    eprintln!(
        "xtask: {target} found a crash; input saved as {}",
        inputs.join(", ")
    );
    let reproduce: Vec<String> = inputs
        .iter()
        .map(|input| format!("{} {input}", binary.display()))
        .collect();
    Ok((format!("{stats}: CRASHED"), Some(reproduce.join("\n  "))))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}
