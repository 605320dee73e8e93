//! Developer tasks: `cargo xtask serve`, `cargo xtask test`, `cargo xtask plugins`,
//! `cargo xtask soak`, `cargo xtask fuzz`.
//!
//! Plugins are WebAssembly components built for `wasm32-wasip2`; the host is native. Cargo
//! cannot build both in one invocation, so this builds the plugins first, then runs the
//! host or the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

mod fuzz;
mod languages;
mod prepare;
mod scaffold_tools;

const TARGET: &str = "wasm32-wasip2";
/// The example plugins copied into `plugins/` for `wasmroom serve`.
const EXAMPLES: &[&str] = &["relay", "chat", "textdoc", "yjs"];
/// Plugins that only the tests use.
const TEST_PLUGINS: &[&str] = &["probe"];
/// Variants the hot-reload tests swap in: (package, feature), built into
/// `target/wasm32-wasip2/plugin/variants/{package}-{feature}.wasm`.
const VARIANTS: &[(&str, &str)] = &[
    ("relay", "tag"),
    ("chat", "broken-restore"),
    ("chat", "tag"),
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("plugins") => build_plugins(&root, true),
        Some("serve") => {
            // The consumers in other languages are not served by default: skip them.
            build_plugins(&root, false)?;
            // The page at http://127.0.0.1:8000/, unless the command line or a config file
            // says what to serve there (built anyway: demo/backend.mjs serves it too).
            let own_site = args[1..]
                .iter()
                .any(|a| a.starts_with("--static") || a.starts_with("--config"));
            let demo = prepare::demo_for_serve(&root).filter(|_| !own_site);
            // The dev profile (dependencies optimised, see Cargo.toml), not --release: the
            // build `cargo xtask test` reuses instead of compiling wasmtime a second time.
            let mut cmd = cargo();
            cmd.args(["run", "--package", "wasmroom", "--", "serve"]);
            if let Some(dist) = demo {
                cmd.arg("--static").arg(dist);
            }
            cmd.args(&args[1..]);
            run(cmd.current_dir(&root))
        }
        Some("soak") => {
            let minutes = match args.get(1..) {
                Some([flag, value]) if flag == "--minutes" => value.clone(),
                Some([]) => "30".to_owned(),
                _ => bail!("usage: cargo xtask soak [--minutes N]"),
            };
            minutes
                .parse::<f64>()
                .ok()
                .filter(|m| *m > 0.0)
                .with_context(|| format!("--minutes takes a positive number, not {minutes:?}"))?;
            build_plugins(&root, false)?;
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--package",
                "wasmroom",
                "--test",
                "soak",
                "--",
                "--ignored",
                "--nocapture",
            ]);
            cmd.env("WASMROOM_SOAK_MINUTES", &minutes);
            run(cmd.current_dir(&root))
        }
        Some("fuzz") => fuzz::fuzz(&root, &args[1..]),
        Some("test") => {
            build_plugins(&root, true)?;
            prepare::for_tests(&root)?;
            scaffold_tools::install(&root)?;
            let mut cmd = cargo();
            cmd.args(["test", "--workspace"]);
            cmd.args(&args[1..]);
            run(cmd.current_dir(&root))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 serve [ARGS]   build the plugins and the browser demo (demo/dist, served at /\n                 \
                 unless ARGS has --static or --config), then run `wasmroom serve ARGS` (the\n                 \
                 dev build, which the tests reuse; optimised: `cargo run --release -p wasmroom\n                 \
                 -- serve`)\n  \
                 test [ARGS]    build the plugins, install what the end-to-end tests drive (npm\n                 \
                 clients, nginx, Chromium, the C tools of `wasmroom new`), then run every test (`cargo test --workspace ARGS`)\n  \
                 soak [--minutes N]  normal and hostile clients for N minutes (30); fails if\n                 memory, open files or disk use grow past the limits\n  \
                 fuzz [--seconds N] [TARGET...]  run the fuzz targets of fuzz/ for N seconds\n                 \
                 each (60); fails on a crash\n  \
                 plugins        build the plugins into plugins/*.wasm, and the chat in JavaScript,\n                 \
                 Python and C (js-chat, py-chat, c-chat, and the tests' consumers on the\n                 \
                 kits: skipped with a note when their toolchain is missing) into\n                 \
                 target/wasm32-wasip2/plugin/"
            );
            bail!("missing or unknown command")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// A cargo command without what `cargo run` set for xtask itself: build scripts read
/// some of it (`ring`'s reruns when `CARGO_MANIFEST_DIR` changes), so a build from here
/// would not be the build a plain `cargo build` or `cargo test` reuses.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                &*key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Adds the wasm32-wasip2 target when rustup is there and the target is missing.
fn ensure_target() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        eprintln!("xtask: rustup not found; assuming the {TARGET} target is installed");
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: adding the {TARGET} target");
    run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// Builds every plugin as a component and copies the examples into `plugins/`; with
/// `languages`, also the consumers in JavaScript, Python and C (installing their
/// toolchains when it can).
fn build_plugins(root: &Path, languages: bool) -> anyhow::Result<()> {
    ensure_target()?;
    let built = root.join("target").join(TARGET).join("plugin");
    // Variants first: they share output names with the plain builds that follow.
    let variants = built.join("variants");
    std::fs::create_dir_all(&variants)?;
    for (package, feature) in VARIANTS {
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--profile",
            "plugin",
            "--target",
            TARGET,
            "--package",
            package,
            "--features",
            feature,
        ]);
        run(cmd.current_dir(root))?;
        let from = built.join(format!("{package}.wasm"));
        let to = variants.join(format!("{package}-{feature}.wasm"));
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "plugin", "--target", TARGET]);
    for p in EXAMPLES.iter().chain(TEST_PLUGINS) {
        cmd.args(["--package", p]);
    }
    run(cmd.current_dir(root))?;
    for p in EXAMPLES {
        let from = built.join(format!("{p}.wasm"));
        let to = root.join("plugins").join(format!("{p}.wasm"));
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    // The same chat consumer in JavaScript, Python and C (tests/languages.rs).
    if languages {
        prepare::language_toolchains();
        languages::build(root, &built)?;
    }
    eprintln!(
        "xtask: plugins ready in {} (tests also use {})",
        root.join("plugins").display(),
        built.display()
    );
    Ok(())
}
