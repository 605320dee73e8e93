//! The plugin registry: the current version of every plugin of the plugins directory,
//! shared by every lane, and the reloads that replace them.
//!
//! Lanes look a plugin up once per new document; the read lock is never taken on the
//! message path. A reload compiles on the reloader's thread, never on a lane; a file that
//! fails to load changes nothing but the recorded error, and the old version keeps
//! serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, Weak};
use std::time::UNIX_EPOCH;

use crate::guest::plugin::{
    CacheWrite, LastError, Plugin, PluginError, PluginFile, Runtimes, plugin_name,
};
use crate::guest::versions::VersionStore;
use crate::metrics::Metrics;

/// What a lane finds when it looks up a plugin.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Serve with this version.
    Ready(Arc<Plugin>),
    /// The file exists but failed to load; the text says why.
    Failed(Arc<str>),
    /// No such plugin (or it was removed).
    Missing,
}

#[derive(Debug, Default)]
struct Entry {
    /// The version new documents get; `None` if the file never loaded or was removed.
    current: Option<Arc<Plugin>>,
    /// Earlier versions, alive while documents still run on them.
    previous: Vec<Weak<Plugin>>,
    /// The last failure: a file that did not load, documents that could not migrate, a
    /// trap. Every version installed shares it.
    last_error: Arc<LastError>,
}

/// The plugins of one directory, by name.
pub struct Registry {
    dir: PathBuf,
    cache: Option<PathBuf>,
    runtimes: Runtimes,
    /// Where journaled plugins' versions are kept for replays.
    versions: Option<VersionStore>,
    plugins: RwLock<BTreeMap<String, Entry>>,
    /// One reload at a time (watcher and SIGHUP): otherwise a slow load of older bytes
    /// could finish last and win.
    reloading: std::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Loads every `*.wasm` of `dir`, keeping compiled artifacts in `cache` and the
    /// versions of journaled plugins in `versions`. A plugin that fails to load is logged
    /// and answered with 503 and the reason; the others serve. A missing directory is an
    /// error.
    pub fn load_dir(
        runtimes: Runtimes,
        dir: &Path,
        cache: Option<PathBuf>,
        versions: Option<VersionStore>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Registry> {
        let registry = Registry {
            dir: dir.to_owned(),
            cache,
            runtimes,
            versions,
            plugins: RwLock::new(BTreeMap::new()),
            reloading: std::sync::Mutex::new(()),
            metrics,
        };
        for path in registry.files()? {
            registry.reload(&path);
        }
        if registry.names().is_empty() {
            tracing::warn!(
                "no plugins in {}: every /ws/ and /docs/ request will get 404",
                dir.display()
            );
        }
        Ok(registry)
    }

    /// The `*.wasm` files of the plugins directory.
    pub fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| plugin_name(p).is_some())
            .collect();
        files.sort();
        Ok(files)
    }

    /// The plugins directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (Re)loads `path`. Returns the new version if it replaced the current one; `None`
    /// if nothing changed (same content, a load error, a removed file, not a plugin).
    pub fn reload(&self, path: &Path) -> Option<Arc<Plugin>> {
        let name = plugin_name(path)?;
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() {
            let mut plugins = self.write();
            let entry = plugins.entry(name.clone()).or_default();
            if let Some(old) = entry.current.take() {
                tracing::info!(plugin = %name, "{} removed: new connections get 404; live documents run on until idle", path.display());
                entry.previous.push(Arc::downgrade(&old));
            }
            return None;
        }
        let started = std::time::Instant::now();
        let current = self
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .and_then(|e| e.current.clone());
        let loaded = PluginFile::read(path).and_then(|file| {
            if current.as_ref().is_some_and(|c| c.version == file.version) {
                return Ok(None);
            }
            let plugin = file.compile(&self.runtimes, self.cache.as_deref(), CacheWrite::Aside)?;
            self.keep(&file)?;
            Ok(Some(plugin))
        });
        let mut plugins = self.write();
        let entry = plugins.entry(name.clone()).or_default();
        match loaded {
            // The file is the running version: nothing to do.
            Ok(None) => None,
            Ok(Some(plugin)) => {
                tracing::info!(plugin = %name, version = %plugin.version, memory = plugin.memory.name(), "loaded {} in {:?}", path.display(), started.elapsed());
                self.metrics.reloaded(&name, true);
                let plugin = Arc::new(Plugin {
                    last_error: entry.last_error.clone(),
                    ..plugin
                });
                if let Some(old) = entry.current.replace(plugin.clone()) {
                    entry.previous.push(Arc::downgrade(&old));
                }
                entry.previous.retain(|p| p.strong_count() > 0);
                entry.last_error.clear();
                Some(plugin)
            }
            Err(e) => {
                tracing::error!(plugin = %name, "{e}{}", if entry.current.is_some() { "; the running version keeps serving" } else { "" });
                entry.last_error.set(e.to_string());
                self.metrics.reloaded(&name, false);
                None
            }
        }
    }

    /// Keeps a journaled plugin's new version in the version store before it serves.
    fn keep(&self, file: &PluginFile) -> Result<(), PluginError> {
        let Some(store) = self.versions.as_ref().filter(|s| s.keeps(&file.name)) else {
            return Ok(());
        };
        let in_use = self.loaded_versions(&file.name);
        store
            .keep(&file.name, &file.version, &file.bytes, &in_use)
            .map_err(|source| PluginError::NotKept {
                plugin: file.name.clone(),
                version: file.version.clone(),
                source,
            })
    }

    /// The versions of `name` loaded now (current and earlier ones still running).
    fn loaded_versions(&self, name: &str) -> Vec<String> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = plugins.get(name) else {
            return Vec::new();
        };
        entry
            .current
            .iter()
            .cloned()
            .chain(entry.previous.iter().filter_map(Weak::upgrade))
            .map(|p| p.version.clone())
            .collect()
    }

    /// Version `version` of plugin `name`, for a replay of the inputs it made: the one
    /// loaded, or else compiled from the version store (seconds for a large component
    /// that is not in the compiled cache: call it off the lanes). It is listed among the
    /// plugin's versions while documents run on it.
    pub fn version(&self, name: &str, version: &str) -> Result<Arc<Plugin>, PluginError> {
        let loaded = |plugins: &BTreeMap<String, Entry>| {
            let entry = plugins.get(name)?;
            entry
                .current
                .iter()
                .cloned()
                .chain(entry.previous.iter().filter_map(Weak::upgrade))
                .find(|p| p.version == version)
        };
        if let Some(plugin) = loaded(&self.plugins.read().unwrap_or_else(|e| e.into_inner())) {
            return Ok(plugin);
        }
        let gone = |store: PathBuf| PluginError::VersionGone {
            plugin: name.to_owned(),
            version: version.to_owned(),
            store,
        };
        let store = self
            .versions
            .as_ref()
            .ok_or_else(|| gone(self.dir.join("(no data directory)")))?;
        let path = match store.find(name, version) {
            Ok(Some(path)) => path,
            Ok(None) => return Err(gone(store.path(name, version))),
            Err(source) => {
                return Err(PluginError::Read {
                    path: store.path(name, version),
                    source,
                });
            }
        };
        let file = PluginFile::read_as(&path, name)?;
        if file.version != version {
            return Err(PluginError::Invalid {
                path,
                reason: format!("its content is version {}, not {version}", file.version),
            });
        }
        let plugin = file.compile(&self.runtimes, self.cache.as_deref(), CacheWrite::Aside)?;
        let mut plugins = self.write();
        // Another replay may have loaded it meanwhile: one copy.
        if let Some(plugin) = loaded(&plugins) {
            return Ok(plugin);
        }
        let entry = plugins.entry(name.to_owned()).or_default();
        let plugin = Arc::new(Plugin {
            last_error: entry.last_error.clone(),
            ..plugin
        });
        entry.previous.retain(|p| p.strong_count() > 0);
        entry.previous.push(Arc::downgrade(&plugin));
        tracing::info!(plugin = %name, %version, "loaded version {version} from the version store to replay the inputs it made");
        Ok(plugin)
    }

    /// Records a failure that is not a load error (documents that could not migrate).
    /// A trap is recorded by its document, through [`Plugin::last_error`].
    pub fn record_error(&self, name: &str, error: String) {
        if let Some(entry) = self
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            entry.last_error.set(error);
        }
    }

    /// Looks a plugin up by name.
    pub fn get(&self, name: &str) -> Lookup {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        match plugins.get(name) {
            Some(Entry {
                current: Some(p), ..
            }) => Lookup::Ready(p.clone()),
            Some(Entry {
                last_error,
                previous,
                ..
            }) if previous.is_empty() => match last_error.get() {
                Some(why) => Lookup::Failed(why),
                None => Lookup::Missing,
            },
            _ => Lookup::Missing,
        }
    }

    /// The names of the plugins that are ready to serve.
    pub fn names(&self) -> Vec<String> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins
            .iter()
            .filter(|(_, e)| e.current.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// (plugin, version, live documents) of every version still loaded.
    pub fn live_instances(&self) -> Vec<(String, String, usize)> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (name, e) in plugins.iter() {
            let versions = e
                .current
                .iter()
                .cloned()
                .chain(e.previous.iter().filter_map(Weak::upgrade));
            for p in versions {
                out.push((
                    name.clone(),
                    p.version.clone(),
                    p.live.load(Ordering::Relaxed),
                ));
            }
        }
        out
    }

    /// Every plugin with its versions, load times, live documents and memory setup
    /// (`copied` or `mapped`) per version and last error, as served by `GET /plugins`.
    pub fn describe(&self) -> serde_json::Value {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let version = |p: &Plugin| {
            serde_json::json!({
                "version": p.version,
                "loaded_at_ms": p.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "live_documents": p.live.load(Ordering::Relaxed),
                "memory": p.memory.name(),
            })
        };
        let list: Vec<serde_json::Value> = plugins
            .iter()
            .map(|(name, e)| {
                serde_json::json!({
                    "name": name,
                    "current": e.current.as_deref().map(version),
                    "previous": e.previous.iter().filter_map(Weak::upgrade).map(|p| version(&p)).collect::<Vec<_>>(),
                    "last_error": e.last_error.get().as_deref(),
                })
            })
            .collect();
        serde_json::json!({ "plugins": list })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.plugins.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_and_removed_plugins() {
        let mut config = crate::config::Config::default();
        config.limits.max_documents = 4;
        let engines = crate::guest::engine::Engines::new(&config).unwrap();
        let runtimes = Runtimes::new(engines).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
        // An empty component: valid, but it exports nothing.
        std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::load_dir(runtimes, dir.path(), None, None, metrics).unwrap();
        assert!(matches!(registry.get("junk"), Lookup::Failed(_)));
        let Lookup::Failed(why) = registry.get("empty") else {
            panic!("empty loaded")
        };
        assert!(why.contains("does not implement"), "{why}");
        assert!(matches!(registry.get("other"), Lookup::Missing));
        std::fs::remove_file(dir.path().join("junk.wasm")).unwrap();
        assert!(registry.reload(&dir.path().join("junk.wasm")).is_none());
        let listed = registry.describe();
        assert_eq!(listed["plugins"].as_array().unwrap().len(), 2);
    }
}
