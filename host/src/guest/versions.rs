//! The version store: the plugin files whose versions made a journal's inputs, kept under
//! the data directory (`{data}/versions/{version}/{plugin}.wasm`), so that a replay (a
//! restart after `kill -9`, a takeover, `wasmroom replay`) runs every input on the version
//! that made it, even after the plugins directory got a new build.
//!
//! Only plugins in journal mode are kept (a checkpoint is always restored by the version
//! there is, which is what a hot reload does too). A version is written, synced, before the
//! registry serves it: a record it makes can be durable right after. Each plugin keeps its
//! [`KEEP`] most recently loaded versions and every version still in use; a journal that
//! names a version pruned since (a document that crashed and was not opened again through
//! that many deploys) refuses to open, with a message naming it.
//!
//! With a shared store, every version kept is kept there too ([`SharedVersions`]), by the
//! same rule, so a host that takes a document over replays it on versions it never loaded
//! itself: they are fetched into its own store first.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// How many versions of each plugin the store keeps beside those still in use.
pub const KEEP: usize = 8;

/// Where hosts share their versions (the shared store). Blocking: called off the lanes.
pub trait SharedVersions: Send + Sync + std::fmt::Debug {
    /// Keeps `bytes` as `plugin`'s `version` (or marks it loaded now), and forgets the
    /// plugin's versions beyond the [`KEEP`] most recently kept.
    fn keep(&self, plugin: &str, version: &str, bytes: &[u8]) -> Result<(), String>;
    /// `plugin`'s `version`, if some host kept it.
    fn fetch(&self, plugin: &str, version: &str) -> Result<Option<Vec<u8>>, String>;
}

/// The plugin files of the journaled plugins' versions, by version.
#[derive(Debug, Clone)]
pub struct VersionStore {
    dir: PathBuf,
    /// The plugins whose versions are kept (those in journal mode).
    plugins: BTreeSet<String>,
    shared: Option<Arc<dyn SharedVersions>>,
}

impl VersionStore {
    /// The store in `dir` (created on first use), keeping `plugins`' versions.
    pub fn new(dir: &Path, plugins: BTreeSet<String>) -> VersionStore {
        VersionStore {
            dir: dir.to_owned(),
            plugins,
            shared: None,
        }
    }

    /// The same, also keeping every version in `shared` and finding there those it
    /// lacks.
    pub fn shared_with(self, shared: Arc<dyn SharedVersions>) -> VersionStore {
        VersionStore {
            shared: Some(shared),
            ..self
        }
    }

    /// Where `plugin`'s `version` is on this host: kept here, or fetched from the shared
    /// store into this one first. `None` if no host kept it.
    pub fn find(&self, plugin: &str, version: &str) -> std::io::Result<Option<PathBuf>> {
        let path = self.path(plugin, version);
        if path.is_file() {
            return Ok(Some(path));
        }
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let Some(bytes) = shared
            .fetch(plugin, version)
            .map_err(std::io::Error::other)?
        else {
            return Ok(None);
        };
        self.write(&path, &bytes)?;
        tracing::info!(plugin = %plugin, %version, "version store: fetched version {version} from the shared store");
        Ok(Some(path))
    }

    /// Where `plugin`'s `version` is (or would be) kept.
    pub fn path(&self, plugin: &str, version: &str) -> PathBuf {
        self.dir.join(version).join(format!("{plugin}.wasm"))
    }

    /// Whether `plugin`'s versions are kept.
    pub fn keeps(&self, plugin: &str) -> bool {
        self.plugins.contains(plugin)
    }

    /// Keeps `bytes` as `plugin`'s `version`, durably, then forgets the plugin's oldest
    /// versions beyond [`KEEP`] but those `in_use`. A version kept already only counts
    /// as loaded now.
    pub fn keep(
        &self,
        plugin: &str,
        version: &str,
        bytes: &[u8],
        in_use: &[String],
    ) -> std::io::Result<()> {
        let path = self.path(plugin, version);
        if path.is_file() {
            std::fs::File::options()
                .append(true)
                .open(&path)?
                .set_modified(SystemTime::now())?;
        } else {
            self.write(&path, bytes)?;
        }
        if let Some(shared) = &self.shared {
            shared
                .keep(plugin, version, bytes)
                .map_err(|e| std::io::Error::other(format!("in the shared store: {e}")))?;
        }
        self.prune(plugin, version, in_use);
        Ok(())
    }

    /// Writes a version's file durably: synced, renamed into place, its directories
    /// synced.
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().expect("a version's file has a directory");
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        // The new name and the new directory survive a power cut too.
        sync_dir(dir)?;
        sync_dir(&self.dir)
    }

    /// Removes `plugin`'s versions beyond the [`KEEP`] most recently loaded, never `kept`
    /// nor those `in_use`. A failure is logged: pruning is housekeeping.
    fn prune(&self, plugin: &str, kept: &str, in_use: &[String]) {
        let mut versions: Vec<(SystemTime, String)> = self
            .versions(plugin)
            .into_iter()
            .filter_map(|version| {
                let modified = std::fs::metadata(self.path(plugin, &version))
                    .and_then(|m| m.modified())
                    .ok()?;
                Some((modified, version))
            })
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        for (_, version) in versions.into_iter().skip(KEEP) {
            if version == kept || in_use.contains(&version) {
                continue;
            }
            let path = self.path(plugin, &version);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(plugin = %plugin, %version, "version store: forgot version {version} ({KEEP} newer ones are kept)");
                    // Other plugins' files of the same bytes may share the directory.
                    let _ = std::fs::remove_dir(path.parent().expect("has a directory"));
                }
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }

    /// The versions of `plugin` in the store.
    pub fn versions(&self, plugin: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let file = format!("{plugin}.wasm");
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(&file).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_versions_durably_and_forgets_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let store = VersionStore::new(dir.path(), ["chat".to_owned()].into());
        assert!(store.keeps("chat") && !store.keeps("relay"));
        let version = |i: usize| format!("{i:016x}");
        for i in 0..KEEP + 3 {
            // Distinct modification times, oldest first.
            store
                .keep(
                    "chat",
                    &version(i),
                    format!("v{i}").as_bytes(),
                    &[version(1)],
                )
                .unwrap();
            let path = store.path("chat", &version(i));
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        store
            .keep("chat", &version(0), b"v0", &[version(1)])
            .unwrap();
        let mut kept = store.versions("chat");
        kept.sort();
        // Version 0 was loaded last, version 1 is in use; 2 and 3 are the oldest others.
        let mut expected: Vec<String> =
            [0, 1].into_iter().chain(4..KEEP + 3).map(version).collect();
        expected.sort();
        assert_eq!(kept.len(), KEEP + 1);
        assert_eq!(kept, expected);
        assert_eq!(
            std::fs::read(store.path("chat", &version(5))).unwrap(),
            b"v5"
        );
        assert!(
            !dir.path().join(version(2)).exists(),
            "an emptied directory goes"
        );
    }
}
