//! `wasmroom new` and `wasmroom wit`: a consumer project of its own, outside any checkout
//! of wasmroom, in Rust, JavaScript, Python or C; and the WIT contract as a file.
//!
//! Everything a project needs comes from this binary (templates under `templates/`, the
//! WIT, the Rust SDK's source, the JS and Python kits), so the project speaks exactly the
//! contract of the wasmroom that wrote it and builds without network access to wasmroom.
//! Each project builds with one command ([`Lang::build_command`]) into a component that
//! `wasmroom check` accepts, and holds the same counter consumer and example client.

mod c;
mod js;
mod project;
mod python;
mod rust;
mod wit;

use std::path::{Path, PathBuf};

pub use project::File;
pub use wit::{WIT, WIT_FILE, write_wit};

/// The languages `wasmroom new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust on the SDK (cargo, wasm32-wasip2).
    Rust,
    /// JavaScript on the kit (QuickJS, componentize-qjs).
    Js,
    /// Python on the kit (CPython, componentize-py).
    Python,
    /// C on the generated bindings (clang, wasi-libc, wit-bindgen, wasm-tools).
    C,
}

impl Lang {
    /// The one command, run in the project's directory, that builds the component.
    pub fn build_command(self) -> &'static str {
        match self {
            Lang::Rust => rust::BUILD,
            Lang::C => c::BUILD,
            Lang::Js => js::BUILD,
            Lang::Python => python::BUILD,
        }
    }

    /// Where [`Lang::build_command`] leaves the component, relative to the project.
    pub fn output(self, name: &str) -> PathBuf {
        match self {
            Lang::Rust => rust::output(name),
            Lang::C => c::output(name),
            Lang::Js => js::output(name),
            Lang::Python => python::output(name),
        }
    }
}

/// Why `wasmroom new` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "invalid plugin name {0:?}: use 1 to 64 ASCII letters, digits, '-' and '_' \
         (the name is the file NAME.wasm and the route /ws/NAME/...)"
    )]
    InvalidName(String),
    #[error("{name:?} cannot name a Rust crate: {why}")]
    NotACrateName { name: String, why: &'static str },
    #[error("{} is not empty: wasmroom new writes only into a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes a new `lang` project for the plugin `name` into `dir` (which must not exist or
/// be empty) and returns the files written, relative to `dir`.
pub fn create(lang: Lang, name: &str, dir: &Path) -> Result<Vec<PathBuf>, NewError> {
    if !crate::net::route::valid_plugin_name(name) {
        return Err(NewError::InvalidName(name.to_owned()));
    }
    let files = files(lang, name)?;
    project::write_new(dir, &files)?;
    Ok(files.into_iter().map(|f| f.path).collect())
}

/// What `wasmroom new` prints: the files written, then how to build and check.
pub fn next_steps(lang: Lang, name: &str, dir: &Path, files: &[PathBuf]) -> String {
    let mut out = format!("wrote {}/\n", dir.display());
    for f in files {
        out.push_str(&format!("  {}\n", f.display()));
    }
    out.push_str(&format!(
        "build: cd {} && {}\ncheck: wasmroom check {}\n",
        dir.display(),
        lang.build_command(),
        dir.join(lang.output(name)).display()
    ));
    out
}

/// The files of a `lang` project for the plugin `name` (a valid plugin name).
pub fn files(lang: Lang, name: &str) -> Result<Vec<File>, NewError> {
    let mut files = match lang {
        Lang::Rust => rust::files(name)?,
        Lang::C => c::files(name),
        Lang::Js => js::files(name),
        Lang::Python => python::files(name),
    };
    files.push(File::text("client.mjs", project::fill(CLIENT, name)));
    Ok(files)
}

/// The example client every project gets (Node.js 22+: WebSocket is built in).
const CLIENT: &str = include_str!("templates/shared/client.mjs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_no_plugin_names_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("p");
        for bad in ["", "a/b", "a b", "ü", "x.wasm", &"a".repeat(65)] {
            let err = create(Lang::Rust, bad, &target).unwrap_err();
            assert!(matches!(err, NewError::InvalidName(_)), "{bad:?}: {err}");
            assert!(!target.exists());
        }
    }

    #[test]
    fn every_language_gets_the_example_client_with_its_name() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python, Lang::C] {
            let files = files(lang, "tally").unwrap();
            let client = files.iter().find(|f| f.path == Path::new("client.mjs"));
            let text = String::from_utf8(client.unwrap().contents.clone()).unwrap();
            assert!(text.contains("/ws/tally/doc1"), "{lang:?}");
            assert!(!text.contains("{{"), "{lang:?}: a placeholder is left");
        }
    }
}
