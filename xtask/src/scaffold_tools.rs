//! The tools a C project of `wasmroom new` builds with (`wit-bindgen`, `wasm-tools`),
//! installed for `tests/scaffold.rs` into `target/scaffold-tools/bin` with the very
//! `cargo install` lines the project's `build.sh` gives its users, so the test runs what a
//! user runs. Installed once; again only when `build.sh` names other versions. Built with
//! `--debug`: 1.2 minutes instead of 3.5 on two cores, and they only ever read one small
//! module.

use std::path::Path;

use anyhow::Context;

use crate::{cargo, run};

/// The C project's build script, whose comment names the pinned tools.
const BUILD_SH: &str = "host/src/scaffold/templates/c/build.sh";

/// Installs every `cargo install ...` line of [`BUILD_SH`] into `target/scaffold-tools`.
pub(crate) fn install(root: &Path) -> anyhow::Result<()> {
    let script = std::fs::read_to_string(root.join(BUILD_SH))
        .with_context(|| format!("cannot read {BUILD_SH}"))?;
    let lines = install_lines(&script);
    anyhow::ensure!(
        !lines.is_empty(),
        "{BUILD_SH} names no `cargo install` line"
    );
    let tools = root.join("target/scaffold-tools");
    let stamp = tools.join("installed.txt");
    let wanted = lines.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    for line in &lines {
        eprintln!("xtask: cargo install {line} (for tests/scaffold.rs)");
        let mut cmd = cargo();
        cmd.args(["install", "--debug", "--root"]).arg(&tools);
        cmd.args(line.split_whitespace());
        run(cmd.current_dir(root))?;
    }
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// What follows `cargo install ` in each comment line of `script` that has it.
fn install_lines(script: &str) -> Vec<&str> {
    script
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix("cargo install ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_projects_build_script_names_both_tools_pinned() {
        let script = include_str!("../../host/src/scaffold/templates/c/build.sh");
        let lines = install_lines(script);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (line, tool) in lines.iter().zip(["wit-bindgen-cli@", "wasm-tools@"]) {
            assert!(
                line.starts_with("--locked ") && line.contains(tool),
                "{line}"
            );
            // A version, not a placeholder: xtask reads the template as it is.
            let version = line.split(tool).nth(1).unwrap().split_whitespace().next();
            let numbers = version.unwrap().split('.').map(|n| n.parse::<u32>());
            assert!(numbers.into_iter().all(|n| n.is_ok()), "{line}");
        }
    }
}
