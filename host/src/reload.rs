//! Hot reload: a thread that watches the plugins directory (and `Server::reload_all`, on
//! SIGHUP) and hands every new plugin version to the lanes ([`LaneCommand::Migrate`]),
//! which migrate their live documents to it between two events of each document
//! (`crate::lane::migrate`).
//!
//! Compilation happens here, never on a lane. Events are debounced (editors and `cp`
//! write in several steps); an atomic replacement by rename arrives as one event for the
//! final name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::guest::plugin::plugin_name;
use crate::guest::registry::Registry;
use crate::lane::{LaneCommand, Lanes};

/// How long the directory must be quiet before changed files are loaded.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads changed plugins and tells the lanes.
#[derive(Debug, Clone)]
pub struct Reloader {
    registry: Arc<Registry>,
    lanes: Arc<Lanes>,
}

impl Reloader {
    /// A reloader for `registry`'s plugins, telling these lanes.
    pub fn new(registry: Arc<Registry>, lanes: Arc<Lanes>) -> Reloader {
        Reloader { registry, lanes }
    }

    /// (Re)loads one file; on a new version, every lane migrates its documents.
    pub fn reload(&self, path: &Path) {
        if let Some(plugin) = self.registry.reload(path) {
            self.lanes
                .broadcast(|| LaneCommand::Migrate(plugin.clone()));
        }
    }

    /// Re-reads the whole plugins directory (SIGHUP): new and changed files load, removed
    /// ones stop taking new documents.
    pub fn reload_all(&self) {
        let registry = &self.registry;
        let mut paths: BTreeSet<PathBuf> =
            registry.files().unwrap_or_default().into_iter().collect();
        for name in registry.names() {
            paths.insert(registry.dir().join(format!("{name}.wasm")));
        }
        for path in paths {
            self.reload(&path);
        }
    }

    /// Watches the plugins directory on a thread of its own until `stop` is set.
    pub fn watch(self, stop: Arc<AtomicBool>) -> notify::Result<std::thread::JoinHandle<()>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher.watch(self.registry.dir(), RecursiveMode::NonRecursive)?;
        let thread = std::thread::Builder::new()
            .name("plugin-watcher".into())
            .spawn(move || {
                let _watcher = watcher; // dropped (unwatched) when the thread ends
                let mut changed = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let timeout = if changed.is_empty() {
                        Duration::from_millis(250)
                    } else {
                        DEBOUNCE
                    };
                    match rx.recv_timeout(timeout) {
                        Ok(Ok(event)) => changed
                            .extend(event.paths.into_iter().filter(|p| plugin_name(p).is_some())),
                        Ok(Err(e)) => tracing::warn!("watching the plugins directory: {e}"),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            for path in std::mem::take(&mut changed) {
                                self.reload(&path);
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(thread)
    }
}
