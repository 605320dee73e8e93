//! The Rust project: a crate of its own (its own workspace, the `plugin` profile), the
//! SDK of this wasmroom copied beside it as a path dependency, and the WIT the SDK reads.
//!
//! Why a copy of the SDK rather than a dependency on the repository: the project then
//! builds offline, without a checkout, against exactly the contract of the wasmroom that
//! wrote it; its `Cargo.toml` names the `git` and `path` alternatives for those who want
//! to follow wasmroom's repository instead.

use std::path::PathBuf;

use super::project::{File, fill};
use super::{NewError, WIT, WIT_FILE};

/// The build command, run in the project.
pub(super) const BUILD: &str = "cargo build --profile plugin --target wasm32-wasip2";

/// Where [`BUILD`] leaves the component: cargo names a `cdylib` after the crate.
pub(super) fn output(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "target/wasm32-wasip2/plugin/{}.wasm",
        name.replace('-', "_")
    ))
}

const CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml");
/// The versions this repository builds its plugins with (its `Cargo.lock`, pruned to the
/// SDK's dependencies): the project builds with what was tested, offline once cached.
const CARGO_LOCK: &str = include_str!("templates/rust/Cargo.lock");
const LIB_RS: &str = include_str!("templates/rust/src/lib.rs");
const README: &str = include_str!("templates/rust/README.md");
const GITIGNORE: &str = include_str!("templates/rust/gitignore");
const SDK_CARGO_TOML: &str = include_str!("templates/rust/sdk-Cargo.toml");

/// The SDK's source and manifest, as this wasmroom was built with them.
const SDK_LIB_RS: &str = include_str!("../../../guest-sdk/src/lib.rs");
/// Its other source files, by their path in `src/`.
const SDK_MODULES: [(&str, &str); 3] = [
    (
        "export.rs",
        include_str!("../../../guest-sdk/src/export.rs"),
    ),
    ("host.rs", include_str!("../../../guest-sdk/src/host.rs")),
    ("types.rs", include_str!("../../../guest-sdk/src/types.rs")),
];
const SDK_MANIFEST: &str = include_str!("../../../guest-sdk/Cargo.toml");

/// Names cargo refuses for a package, beyond those that are no identifiers.
const RESERVED: &[&str] = &[
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "proc-macro",
    "wasmroom-sdk",
    "wasmroom_sdk",
    "as",
    "break",
    "const",
    "continue",
    "crate",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "async",
    "await",
    "dyn",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
];

pub(super) fn files(name: &str) -> Result<Vec<File>, NewError> {
    let refuse = |why| NewError::NotACrateName {
        name: name.to_owned(),
        why,
    };
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(refuse("it starts with a digit"));
    }
    if RESERVED.contains(&name) {
        return Err(refuse("it is a Rust keyword or a name cargo reserves"));
    }
    let sdk_manifest = SDK_CARGO_TOML
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{wit_bindgen}}", wit_bindgen_requirement());
    let mut files = vec![
        File::text("Cargo.toml", fill(CARGO_TOML, name)),
        File::text(
            "Cargo.lock",
            fill(CARGO_LOCK, name).replace("{{version}}", env!("CARGO_PKG_VERSION")),
        ),
        File::text("src/lib.rs", fill(LIB_RS, name)),
        File::text("README.md", fill(README, name)),
        File::text(".gitignore", GITIGNORE.to_owned()),
        File::text("wasmroom-sdk/Cargo.toml", sdk_manifest),
        File::text("wasmroom-sdk/src/lib.rs", SDK_LIB_RS.to_owned()),
        // The SDK's bindings read `../wit` from its own folder.
        File::text(format!("wit/{WIT_FILE}"), WIT.to_owned()),
    ];
    files.extend(
        SDK_MODULES
            .map(|(path, text)| File::text(format!("wasmroom-sdk/src/{path}"), text.to_owned())),
    );
    Ok(files)
}

/// The SDK's `wit-bindgen = ...` line, so the copy builds with the version it was written
/// for.
fn wit_bindgen_requirement() -> &'static str {
    SDK_MANIFEST
        .lines()
        .find(|l| l.starts_with("wit-bindgen ="))
        .expect("guest-sdk/Cargo.toml depends on wit-bindgen")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_copy_reads_the_wit_written_beside_it() {
        let files = files("tally").unwrap();
        let path = |p: &str| files.iter().any(|f| f.path == std::path::Path::new(p));
        assert!(SDK_LIB_RS.contains("path: \"../wit\""));
        assert!(path("wasmroom-sdk/src/lib.rs") && path("wit/consumer.wit"));
        assert!(path("wasmroom-sdk/src/export.rs") && path("wasmroom-sdk/src/types.rs"));
        let sdk = &files
            .iter()
            .find(|f| f.path.ends_with("wasmroom-sdk/Cargo.toml"))
            .unwrap();
        let sdk = String::from_utf8(sdk.contents.clone()).unwrap();
        assert!(sdk.contains("wit-bindgen = {"), "{sdk}");
        assert!(!sdk.contains("{{") && !sdk.contains(".workspace"), "{sdk}");
    }

    /// `(name, version)` of every package in a `Cargo.lock`.
    fn locked(lock: &str) -> Vec<(String, String)> {
        let value: toml::Value = toml::from_str(lock).unwrap();
        value["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let field = |k: &str| p[k].as_str().unwrap().to_owned();
                (field("name"), field("version"))
            })
            .collect()
    }

    #[test]
    fn the_projects_lock_holds_the_versions_of_the_repositorys_lock() {
        // After a `cargo update` here, refresh the template: `wasmroom new --lang rust x`,
        // copy this repository's Cargo.lock into it, `cargo tree --offline --target
        // wasm32-wasip2` (which prunes it), and save it with `x` written as the name.
        let ours = locked(include_str!("../../../Cargo.lock"));
        for (name, version) in locked(CARGO_LOCK) {
            if name == "{{name}}" || name == "wasmroom-sdk" || version == "{{version}}" {
                continue;
            }
            assert!(
                ours.contains(&(name.clone(), version.clone())),
                "templates/rust/Cargo.lock has {name} {version}, which the repository's \
                 Cargo.lock does not: refresh the template (see this test)"
            );
        }
    }

    #[test]
    fn names_cargo_would_refuse_are_refused_with_the_reason() {
        for bad in ["1st", "fn", "test", "wasmroom-sdk"] {
            let err = files(bad).unwrap_err();
            assert!(
                matches!(err, NewError::NotACrateName { .. }),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            output("my-room"),
            PathBuf::from("target/wasm32-wasip2/plugin/my_room.wasm")
        );
    }
}
