//! The Python project: `app.py` on wasmroom's Python kit (`kits/python`), copied in with
//! the kit's pinned build tool (componentize-py, `requirements.txt` with hashes) and the
//! WIT. `./build.sh` makes a venv with the tool on first use, then `NAME.wasm`.

use std::path::PathBuf;

use super::project::{File, fill};
use super::{WIT, WIT_FILE};

/// The build command, run in the project.
pub(super) const BUILD: &str = "./build.sh";

/// Where [`BUILD`] leaves the component.
pub(super) fn output(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.wasm"))
}

const APP_PY: &str = include_str!("templates/python/app.py");
const BUILD_SH: &str = include_str!("templates/python/build.sh");
const README: &str = include_str!("templates/python/README.md");
const GITIGNORE: &str = include_str!("templates/python/gitignore");

/// The kit: its module, and the pinned build tool.
const KIT_PY: &str = include_str!("../../../kits/python/wasmroom.py");
const KIT_REQUIREMENTS: &str = include_str!("../../../kits/python/requirements.txt");

pub(super) fn files(name: &str) -> Vec<File> {
    vec![
        File::text("build.sh", fill(BUILD_SH, name)).executable(),
        File::text("app.py", fill(APP_PY, name)),
        File::text("wasmroom.py", KIT_PY.to_owned()),
        File::text("requirements.txt", KIT_REQUIREMENTS.to_owned()),
        File::text("README.md", fill(README, name)),
        File::text(".gitignore", fill(GITIGNORE, name)),
        File::text(format!("wit/{WIT_FILE}"), WIT.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_script_installs_the_kits_pinned_tool_and_names_the_plugin() {
        assert!(
            KIT_REQUIREMENTS.contains("componentize-py==") && KIT_REQUIREMENTS.contains("--hash=")
        );
        let files = files("tally");
        let build = files
            .iter()
            .find(|f| f.path == std::path::Path::new("build.sh"))
            .unwrap();
        let text = std::str::from_utf8(&build.contents).unwrap();
        assert!(build.executable);
        assert!(text.contains("--require-hashes -r requirements.txt"));
        assert!(
            text.contains("componentize app -p . -o tally.wasm"),
            "{text}"
        );
    }
}
