//! The embedded store: one snapshot file per (plugin, document) under the data
//! directory, written atomically (temporary file, fsync, rename, fsync of the directory),
//! so a crash at any moment leaves either the old snapshot or the new one, never half of
//! one. A snapshot that keeps nothing (empty state, no timers, no connection id given) is
//! stored as no file at all.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::store::{Lease, Opened, Snapshot, Storage, StorageError};
use crate::store::{decode, encode};

/// Snapshots as files: `{dir}/{plugin}/{document}.snap`.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

/// Characters kept as they are in file names; everything else is percent-encoded, so any
/// document id maps to one safe file name (`.` is encoded: no hidden files, no `..`).
const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');
/// Longer encoded names are replaced by a hash (file names are limited to 255 bytes).
const MAX_ENCODED: usize = 200;

impl FileStorage {
    /// Snapshots under `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> FileStorage {
        FileStorage { dir: dir.into() }
    }

    /// The file of a document.
    pub fn path(&self, plugin: &str, document: &str) -> PathBuf {
        let encoded = utf8_percent_encode(document, FILE_NAME).to_string();
        let name = if encoded.len() <= MAX_ENCODED {
            encoded
        } else {
            let digest = Sha256::digest(document.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("~{hex}")
        };
        self.dir.join(plugin).join(format!("{name}.snap"))
    }
}

#[async_trait::async_trait]
impl Storage for FileStorage {
    async fn open(
        &self,
        plugin: &str,
        document: &str,
        _version: &str,
    ) -> Result<Opened, StorageError> {
        // Read in place: a small file, from the page cache in the common case, and no
        // await between a lane's lookup of the document and its insertion.
        Ok(Opened {
            lease: Lease::default(),
            snapshot: self.load(plugin, document)?,
            journal: None,
        })
    }

    async fn save(
        &self,
        plugin: &str,
        document: &str,
        _lease: Lease,
        snapshot: Snapshot,
    ) -> Result<(), StorageError> {
        let this = FileStorage {
            dir: self.dir.clone(),
        };
        let (plugin, document) = (plugin.to_owned(), document.to_owned());
        tokio::task::spawn_blocking(move || this.write(&plugin, &document, &snapshot))
            .await
            .unwrap_or_else(|e| {
                Err(StorageError::Io {
                    what: "(save task)".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    async fn release(
        &self,
        _plugin: &str,
        _document: &str,
        _lease: Lease,
    ) -> Result<(), StorageError> {
        Ok(())
    }
}

impl FileStorage {
    /// The last snapshot of a document, if there is one.
    pub fn load(&self, plugin: &str, document: &str) -> Result<Option<Snapshot>, StorageError> {
        let path = self.path(plugin, document);
        let what = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::Io { what, source }),
        };
        decode(&bytes, plugin, document)
            .map(Some)
            .map_err(|reason| StorageError::Corrupt { what, reason })
    }

    /// Replaces the snapshot of a document atomically (blocking).
    pub fn write(
        &self,
        plugin: &str,
        document: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StorageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.path(plugin, document);
        let dir = path
            .parent()
            .expect("snapshot files have a directory")
            .to_owned();
        let io = |path: &Path| {
            let what = path.display().to_string();
            move |source| StorageError::Io { what, source }
        };
        if snapshot.keeps_nothing() {
            // Nothing to keep (a stateless consumer such as a relay, before any
            // connection got an id): no file, so that opening the document again is the
            // same as opening it fresh, and reads do not fill the data directory with
            // empty snapshots.
            return match std::fs::remove_file(&path) {
                Ok(()) => File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&dir)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(io(&path)(source)),
            };
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = encode(snapshot, plugin, document);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(source));
        }
        if let Err(source) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&path)(source));
        }
        // The rename is durable only once the directory entry is.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            plugin_version: "abc".into(),
            saved_at_ms: 1_700_000_000_000,
            timers: vec![(1, 5), (2, 6)],
            state: b"state".to_vec(),
            continuity: Some(crate::store::Continuity {
                seed: [3; 32],
                next_connection_id: 1,
                inputs: 0,
            }),
            connections: Vec::new(),
            sessions: Vec::new(),
            settings: None,
        }
    }

    #[test]
    fn files_are_atomic_and_names_safe() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::new(dir.path());
        assert_eq!(storage.load("chat", "../x").unwrap(), None);
        storage.write("chat", "../x", &sample()).unwrap();
        let path = storage.path("chat", "../x");
        assert!(path.starts_with(dir.path().join("chat")));
        assert_eq!(path.file_name().unwrap(), "%2E%2E%2Fx.snap");
        assert_eq!(storage.load("chat", "../x").unwrap(), Some(sample()));
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("chat")).unwrap().count(),
            1
        );
        // An empty state without timers removes the file instead of writing one.
        let empty = Snapshot {
            state: Vec::new(),
            timers: Vec::new(),
            ..sample()
        };
        storage.write("chat", "../x", &empty).unwrap();
        assert_eq!(storage.load("chat", "../x").unwrap(), None);
        // ...unless the document gave connection ids: it must not give them again.
        let connected = Snapshot {
            continuity: Some(crate::store::Continuity {
                seed: [3; 32],
                next_connection_id: 5,
                inputs: 0,
            }),
            ..empty.clone()
        };
        storage.write("chat", "../x", &connected).unwrap();
        assert_eq!(storage.load("chat", "../x").unwrap(), Some(connected));
        storage.write("chat", "../x", &sample()).unwrap();
        let long = "é".repeat(120);
        storage.write("chat", &long, &sample()).unwrap();
        assert!(storage.path("chat", &long).file_name().unwrap().len() < 100);
        assert_eq!(storage.load("chat", &long).unwrap(), Some(sample()));
    }
}
