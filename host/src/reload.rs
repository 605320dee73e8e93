//! Hot reload: a thread that watches the plugins directory (and `Server::reload_all`, on
//! SIGHUP) and hands every new plugin version to the lanes ([`LaneCommand::Migrate`]),
//! which migrate their live documents to it between two events of each document
//! (`crate::lane::migrate`).
//!
//! Compilation happens here, never on a lane. Files written in place are loaded once the
//! directory has been quiet for a moment (editors and `cp` write in several steps); a file
//! renamed into the directory is complete (the atomic way to deploy), so it is loaded at
//! once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecursiveMode, Watcher};

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
                        Ok(Ok(event)) => {
                            let (complete, written) = split_event(event);
                            for path in complete {
                                changed.remove(&path);
                                self.reload(&path);
                            }
                            changed.extend(written);
                        }
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

/// The plugin files an event names: those renamed into place (complete, loaded now) and
/// the others (loaded once the directory is quiet). Opening a file is no change: loading a
/// plugin opens it, so counting opens would reload every plugin over and over.
fn split_event(event: Event) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let plugins = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
        paths
            .into_iter()
            .filter(|p| plugin_name(p).is_some())
            .collect()
    };
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (plugins(event.paths), Vec::new()),
        // The same rename, reported once more with both names: the new name came as `To`
        // already; the old one is gone, which waits like any other change.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            let mut paths = event.paths;
            paths.truncate(1);
            (Vec::new(), plugins(paths))
        }
        // A writer closed the file: that is a change (and usually its last event).
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            (Vec::new(), plugins(event.paths))
        }
        EventKind::Access(_) => (Vec::new(), Vec::new()),
        // Neither is a change of content: reading a plugin can update its access time
        // (`relatime` does on the first read after a write), which would make loading a
        // freshly copied plugin report a change of its own. (A plugin made readable by
        // `chmod` after a failed load is loaded on SIGHUP.)
        EventKind::Modify(ModifyKind::Metadata(_)) => (Vec::new(), Vec::new()),
        _ => (Vec::new(), plugins(event.paths)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::MetadataKind;

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    #[test]
    fn a_file_renamed_into_place_loads_at_once() {
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let (now, later) = split_event(event(to, &["/p/relay.wasm"]));
        assert_eq!(now, [PathBuf::from("/p/relay.wasm")]);
        assert!(later.is_empty());
        // The upload's temporary name is not a plugin.
        let (now, later) = split_event(event(to, &["/p/.relay.upload"]));
        assert!(now.is_empty() && later.is_empty());
    }

    #[test]
    fn opening_a_plugin_is_no_change() {
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let (now, later) = split_event(event(open, &["/p/relay.wasm"]));
        assert!(now.is_empty() && later.is_empty());
        let touched = EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime));
        let (now, later) = split_event(event(touched, &["/p/relay.wasm"]));
        assert!(now.is_empty() && later.is_empty());
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let (now, later) = split_event(event(closed, &["/p/relay.wasm"]));
        assert!(now.is_empty());
        assert_eq!(later, [PathBuf::from("/p/relay.wasm")]);
    }

    #[test]
    fn writes_and_the_old_name_of_a_rename_wait() {
        let write = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        let (now, later) = split_event(event(write, &["/p/chat.wasm"]));
        assert!(now.is_empty());
        assert_eq!(later, [PathBuf::from("/p/chat.wasm")]);
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let (now, later) = split_event(event(both, &["/p/chat.wasm", "/p/relay.wasm"]));
        assert!(now.is_empty());
        assert_eq!(later, [PathBuf::from("/p/chat.wasm")]);
        // An upload renamed into place: nothing more to wait for.
        let (now, later) = split_event(event(both, &["/p/.relay.upload", "/p/relay.wasm"]));
        assert!(now.is_empty() && later.is_empty());
    }
}
