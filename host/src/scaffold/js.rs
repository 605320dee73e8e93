//! The JavaScript project: `consumer.js` on wasmroom's JavaScript kit (`kits/js`), copied
//! in with the kit's pinned build tool (componentize-qjs, its `package-lock.json`) and the
//! WIT. `npm run build` installs the tool on first use, then makes `NAME.wasm`.

use std::path::PathBuf;

use super::project::{File, fill};
use super::{WIT, WIT_FILE};

/// The build command, run in the project.
pub(super) const BUILD: &str = "npm run build";

/// Where [`BUILD`] leaves the component.
pub(super) fn output(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.wasm"))
}

const CONSUMER_JS: &str = include_str!("templates/js/consumer.js");
const PACKAGE_JSON: &str = include_str!("templates/js/package.json");
const README: &str = include_str!("templates/js/README.md");
const GITIGNORE: &str = include_str!("templates/js/gitignore");

/// The kit: its module, and the manifest and lockfile that pin its build tool.
const KIT_JS: &str = include_str!("../../../kits/js/wasmroom.js");
const KIT_PACKAGE_JSON: &str = include_str!("../../../kits/js/package.json");
const KIT_PACKAGE_LOCK: &str = include_str!("../../../kits/js/package-lock.json");

/// The name the kit's manifest and lockfile give the package.
const KIT_PACKAGE_NAME: &str = "\"name\": \"wasmroom-kit\"";

pub(super) fn files(name: &str) -> Vec<File> {
    let package = fill(PACKAGE_JSON, name)
        .replace("{{npm_name}}", &npm_name(name))
        .replace("{{componentize_qjs}}", &componentize_qjs());
    // The lockfile with the project's name: `npm ci` installs exactly what the kit tested.
    let lock = KIT_PACKAGE_LOCK.replace(
        KIT_PACKAGE_NAME,
        &format!("\"name\": \"{}\"", npm_name(name)),
    );
    vec![
        File::text("package.json", package),
        File::text("package-lock.json", lock),
        File::text("consumer.js", fill(CONSUMER_JS, name)),
        File::text("wasmroom.js", KIT_JS.to_owned()),
        File::text("README.md", fill(README, name)),
        File::text(".gitignore", fill(GITIGNORE, name)),
        File::text(format!("wit/{WIT_FILE}"), WIT.to_owned()),
    ]
}

/// `name` as npm takes a package name: lower-case, not starting with `_` or `-`.
fn npm_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(['_', '-']) {
        format!("wasmroom{lower}")
    } else {
        lower
    }
}

/// The componentize-qjs version the kit pins.
fn componentize_qjs() -> String {
    let kit: serde_json::Value =
        serde_json::from_str(KIT_PACKAGE_JSON).expect("kits/js/package.json is JSON");
    kit["devDependencies"]["componentize-qjs"]
        .as_str()
        .expect("kits/js/package.json pins componentize-qjs")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(files: &[File], path: &str) -> serde_json::Value {
        let file = files.iter().find(|f| f.path == std::path::Path::new(path));
        serde_json::from_slice(&file.unwrap().contents).unwrap()
    }

    #[test]
    fn the_manifest_and_lockfile_agree_on_the_name_and_the_kits_tool() {
        assert!(KIT_PACKAGE_JSON.contains(KIT_PACKAGE_NAME));
        assert_eq!(KIT_PACKAGE_LOCK.matches(KIT_PACKAGE_NAME).count(), 2);
        let files = files("tally");
        let (package, lock) = (
            json(&files, "package.json"),
            json(&files, "package-lock.json"),
        );
        assert_eq!(package["name"], "tally");
        assert_eq!(lock["name"], "tally");
        assert_eq!(lock["packages"][""]["name"], "tally");
        let tool = &package["devDependencies"]["componentize-qjs"];
        assert_eq!(
            tool,
            &lock["packages"][""]["devDependencies"]["componentize-qjs"]
        );
        assert!(
            package["scripts"]["build"]
                .as_str()
                .unwrap()
                .contains("--output tally.wasm")
        );
        assert_eq!(npm_name("My_Room"), "my_room");
        assert_eq!(npm_name("_x"), "wasmroom_x");
    }
}
