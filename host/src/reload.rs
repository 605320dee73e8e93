//! Hot reload: a thread that watches the plugins directory (and `Server::reload_all`, on
//! SIGHUP) and hands every new plugin version to the lanes, which migrate their live
//! documents to it between two events of each document.
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

use std::rc::Rc;
use std::time::Instant;

use crate::lane::{Lane, LaneCommand, Shared};
use crate::plugin::Plugin;

/// How long the directory must be quiet before changed files are loaded.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads changed plugins and tells the lanes.
#[derive(Debug, Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    /// A reloader for `shared`'s registry and these lanes.
    pub fn new(shared: Arc<Shared>) -> Reloader {
        Reloader { shared }
    }

    /// (Re)loads one file; on a new version, every lane migrates its documents.
    pub fn reload(&self, path: &Path) {
        if let Some(plugin) = self.shared.registry.reload(path) {
            for lane in self.shared.lanes.iter() {
                let _ = lane.commands.send(LaneCommand::Migrate(plugin.clone()));
            }
        }
    }

    /// Re-reads the whole plugins directory (SIGHUP): new and changed files load, removed
    /// ones stop taking new documents.
    pub fn reload_all(&self) {
        let registry = &self.shared.registry;
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
        watcher.watch(self.shared.registry.dir(), RecursiveMode::NonRecursive)?;
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
                        Ok(Ok(event)) => changed.extend(
                            event
                                .paths
                                .into_iter()
                                .filter(|p| crate::plugin::plugin_name(p).is_some()),
                        ),
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

/// Moves every document of `plugin`'s name on this lane to `plugin`, one document at a
/// time and yielding in between, so the lane keeps serving while it migrates.
pub async fn migrate_all(lane: Rc<Lane>, plugin: Arc<Plugin>) {
    let started = Instant::now();
    let docs: Vec<_> = lane
        .live_documents()
        .into_iter()
        .filter(|((name, _), _)| *name == plugin.name)
        .collect();
    if docs.is_empty() {
        return;
    }
    let limits = lane.limits_for(&plugin.name);
    let (mut moved, mut failed) = (0usize, 0usize);
    for ((name, id), doc) in docs {
        // A newer version may have arrived meanwhile (its own migration runs too): never
        // move a document back to an older one.
        let current = matches!(
            lane.shared.registry.get(&name),
            crate::registry::Lookup::Ready(p) if Arc::ptr_eq(&p, &plugin)
        );
        if !current {
            break;
        }
        let result = doc.borrow_mut().migrate(plugin.clone(), limits);
        match result {
            Ok(()) => moved += 1,
            Err(e) => {
                failed += 1;
                lane.count_failed_migration();
                let error = format!("{name}/{id} stays on its old version: {e}");
                tracing::error!(lane = lane.index, "{error}");
                lane.shared.registry.record_error(&name, error);
            }
        }
        tokio::task::yield_now().await;
    }
    tracing::info!(
        lane = lane.index,
        plugin = %plugin.name,
        version = %plugin.version,
        "reloaded: {moved} document(s) migrated, {failed} failed, in {:?}",
        started.elapsed()
    );
}
