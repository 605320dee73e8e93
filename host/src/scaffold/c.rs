//! The C project: `consumer.c`, a `build.sh` that generates the bindings with
//! `wit-bindgen c`, compiles with clang for wasm32-wasi (wasi-libc) and makes the component
//! with `wasm-tools component new`, the WIT, and the WASI reactor adapter of the host's
//! wasmtime (written by this binary, so nothing is downloaded).
//!
//! This repository's own C consumer uses `tools/wit-c` (the same two steps as libraries);
//! a project outside it uses the upstream tools, pinned to the versions `wit-c` uses.

use std::path::PathBuf;

use super::project::{File, fill};
use super::{WIT, WIT_FILE};

/// The build command, run in the project.
pub(super) const BUILD: &str = "./build.sh";

/// Where [`BUILD`] leaves the component.
pub(super) fn output(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.wasm"))
}

/// It names the tools' versions, pinned (`cargo install ...`): `wit-bindgen-cli` of the
/// C generator `tools/wit-c` uses as a library, `wasm-tools` of its `wit-component`.
/// `cargo xtask test` installs them from these very lines for `tests/scaffold.rs`.
const BUILD_SH: &str = include_str!("templates/c/build.sh");
const CONSUMER_C: &str = include_str!("templates/c/consumer.c");
const README: &str = include_str!("templates/c/README.md");
const GITIGNORE: &str = include_str!("templates/c/gitignore");

pub(super) fn files(name: &str) -> Vec<File> {
    let build = fill(BUILD_SH, name);
    vec![
        File::text("build.sh", build).executable(),
        File::text("consumer.c", fill(CONSUMER_C, name)),
        File::text("README.md", fill(README, name)),
        File::text(".gitignore", fill(GITIGNORE, name)),
        File::text(format!("wit/{WIT_FILE}"), WIT.to_owned()),
        File::bytes(
            "wasi_snapshot_preview1.reactor.wasm",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
                .to_vec(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The version in `build.sh`'s `cargo install --locked TOOL@VERSION` line.
    fn pinned(tool: &str) -> &'static str {
        let at = format!("{tool}@");
        let start = BUILD_SH.find(&at).unwrap() + at.len();
        BUILD_SH[start..].split_whitespace().next().unwrap()
    }

    #[test]
    fn the_pinned_tools_are_those_wit_c_uses() {
        let wit_c = include_str!("../../../tools/wit-c/Cargo.toml");
        let bindgen = pinned("wit-bindgen-cli");
        assert!(
            wit_c.contains(&format!("wit-bindgen-c = \"={bindgen}\"")),
            "{bindgen}"
        );
        let minor = pinned("wasm-tools").split('.').nth(1).unwrap();
        assert!(
            wit_c.contains(&format!("wit-component = \"0.{minor}\"")),
            "{minor}"
        );
    }

    #[test]
    fn the_build_script_names_the_pinned_tools_and_the_plugin() {
        let files = files("tally");
        let build = files
            .iter()
            .find(|f| f.path == Path::new("build.sh"))
            .unwrap();
        let text = String::from_utf8(build.contents.clone()).unwrap();
        assert!(build.executable);
        assert!(text.contains("wit-bindgen-cli@0.61.1") && text.contains("wasm-tools@1.258.0"));
        assert!(
            text.contains("-o tally.wasm") && !text.contains("{{"),
            "{text}"
        );
    }
}
