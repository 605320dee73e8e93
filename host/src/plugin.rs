//! The plugin registry: `{plugin}.wasm` files compiled once, checked against the contract,
//! and shared by every lane.
//!
//! Loading a plugin does all the expensive and fallible work up front: compile, link the
//! host imports, type-check the exports ([`RoomPre`]). A document then only instantiates,
//! which with the pooling allocator costs microseconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::guest::{GuestState, Room, RoomPre};
use crate::http::valid_plugin_name;

/// Why a plugin could not be loaded. The old version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file name is not `{name}.wasm` with a valid name (letters, digits, `-`, `_`).
    #[error("{0}: plugin files are named {{name}}.wasm, with letters, digits, '-' and '_'")]
    BadName(PathBuf),
    /// Not a WebAssembly component, or one that wasmtime cannot compile. Build consumers
    /// with `cargo build --target wasm32-wasip2` or another component toolchain.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// wasmtime's explanation.
        reason: String,
    },
    /// A valid component that does not implement the `wasmroom:consumer/room` world:
    /// an export is missing or has the wrong type, or it imports something the host does
    /// not provide.
    #[error("{path} does not implement the wasmroom:consumer/room world: {reason}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One loaded version of a plugin.
pub struct Plugin {
    /// The plugin name (the file stem), which is also its route.
    pub name: String,
    /// The first 16 hex digits of the SHA-256 of the file.
    pub version: String,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// Ready-to-instantiate, type-checked component.
    pub pre: RoomPre<GuestState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The host imports every plugin is linked against: WASI (granting nothing) and the
/// `wasmroom:consumer/host` interface.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    crate::wasi::add_to_linker(&mut linker)?;
    Room::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// Compiles and checks one component file.
pub fn load(
    engine: &Engine,
    linker: &Linker<GuestState>,
    path: &Path,
) -> Result<Plugin, PluginError> {
    let name = plugin_name(path).ok_or_else(|| PluginError::BadName(path.to_owned()))?;
    let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
        path: path.to_owned(),
        source,
    })?;
    let component = Component::new(engine, &bytes).map_err(|e| PluginError::Invalid {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    })?;
    let contract = |e: wasmtime::Error| PluginError::Contract {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    };
    let pre = linker.instantiate_pre(&component).map_err(contract)?;
    let pre = RoomPre::new(pre).map_err(contract)?;
    let digest = Sha256::digest(&bytes);
    let version = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(Plugin {
        name,
        version,
        loaded_at: SystemTime::now(),
        pre,
    })
}

/// Loads `path` with a minimal engine, for `wasmroom check`: the same validation as
/// serving it, without a server.
pub fn check(path: &Path) -> Result<Plugin, PluginError> {
    let mut config = crate::config::Config::default();
    config.limits.max_documents = 1;
    let engine = crate::runtime::engine(&config).map_err(|e| PluginError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let linker = linker(&engine).map_err(|e| PluginError::Contract {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    })?;
    load(&engine, &linker, path)
}

/// `relay` for `.../relay.wasm`; `None` for other files or invalid names.
pub fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    valid_plugin_name(stem).then(|| stem.to_owned())
}

/// What a lane finds when it looks up a plugin.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Serve with this version.
    Ready(Arc<Plugin>),
    /// The file exists but failed to load; the text says why.
    Failed(Arc<str>),
    /// No such plugin.
    Missing,
}

/// All plugins of the plugins directory, by name.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    plugins: RwLock<BTreeMap<String, Entry>>,
}

#[derive(Debug, Clone)]
enum Entry {
    Ready(Arc<Plugin>),
    Failed(Arc<str>),
}

impl Registry {
    /// Loads every `*.wasm` of `dir`. A plugin that fails to load is logged and answered
    /// with 503 and the reason; the others serve. A missing directory is an error.
    pub fn load_dir(
        engine: &Engine,
        linker: &Linker<GuestState>,
        dir: &Path,
    ) -> std::io::Result<Registry> {
        let mut plugins = BTreeMap::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        for path in files {
            let started = std::time::Instant::now();
            match load(engine, linker, &path) {
                Ok(plugin) => {
                    tracing::info!(
                        plugin = %plugin.name,
                        version = %plugin.version,
                        "loaded {} in {:?}",
                        path.display(),
                        started.elapsed()
                    );
                    plugins.insert(plugin.name.clone(), Entry::Ready(Arc::new(plugin)));
                }
                Err(e) => {
                    tracing::error!("{e}");
                    if let Some(name) = plugin_name(&path) {
                        plugins.insert(name, Entry::Failed(e.to_string().into()));
                    }
                }
            }
        }
        if plugins.is_empty() {
            tracing::warn!(
                "no plugins in {}: every /ws/ and /docs/ request will get 404",
                dir.display()
            );
        }
        Ok(Registry {
            dir: dir.to_owned(),
            plugins: RwLock::new(plugins),
        })
    }

    /// The plugins directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks a plugin up by name.
    pub fn get(&self, name: &str) -> Lookup {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        match plugins.get(name) {
            Some(Entry::Ready(p)) => Lookup::Ready(p.clone()),
            Some(Entry::Failed(why)) => Lookup::Failed(why.clone()),
            None => Lookup::Missing,
        }
    }

    /// The names of the plugins that are ready to serve.
    pub fn names(&self) -> Vec<String> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Ready(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_stems() {
        assert_eq!(
            plugin_name(Path::new("/p/relay.wasm")).as_deref(),
            Some("relay")
        );
        assert_eq!(plugin_name(Path::new("/p/relay.wat")), None);
        assert_eq!(plugin_name(Path::new("/p/re lay.wasm")), None);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let mut config = crate::config::Config::default();
        config.limits.max_documents = 4;
        let engine = crate::runtime::engine(&config).unwrap();
        let linker = linker(&engine).unwrap();
        let dir = std::env::temp_dir().join(format!("wasmroom-plugin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("junk.wasm");
        std::fs::write(&path, b"not wasm at all").unwrap();
        let err = load(&engine, &linker, &path).unwrap_err();
        assert!(matches!(err, PluginError::Invalid { .. }), "{err}");
        // A core module (not a component) is refused too.
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        let err = load(&engine, &linker, &path).unwrap_err();
        assert!(err.to_string().contains("junk.wasm"), "{err}");
        let registry = Registry::load_dir(&engine, &linker, &dir).unwrap();
        assert!(matches!(registry.get("junk"), Lookup::Failed(_)));
        assert!(matches!(registry.get("other"), Lookup::Missing));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
