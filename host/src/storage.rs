//! Durable documents: where snapshots live.
//!
//! [`Storage`] is the small interface a shared store (PostgreSQL, S3) can implement later;
//! [`FileStorage`] is the embedded default: one file per (plugin, document) under the data
//! directory, written atomically (temporary file, fsync, rename, fsync of the directory),
//! so a crash at any moment leaves either the old snapshot or the new one, never half of
//! one. An empty state with no timers is stored as no file at all.
//!
//! A snapshot file is, little-endian:
//!
//! ```text
//! b"WRSNAP\r\n"                magic (the \r\n catches text-mode mangling)
//! u16                          format version (1)
//! u32 + bytes                  document id
//! u32 + bytes                  plugin name
//! u32 + bytes                  plugin version (content hash of the .wasm that wrote it)
//! u64                          saved at, Unix milliseconds
//! u32, then (u64, u64) each    pending timers: id, due time in Unix milliseconds
//! u64 + bytes                  the consumer's state (its `snapshot` export)
//! [u8; 32]                     SHA-256 of everything above
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"WRSNAP\r\n";
/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// What is saved of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The plugin version that produced `state`.
    pub plugin_version: String,
    /// When it was taken, Unix milliseconds.
    pub saved_at_ms: u64,
    /// Pending timers: (id, due time in Unix milliseconds).
    pub timers: Vec<(u64, u64)>,
    /// The consumer's state.
    pub state: Vec<u8>,
}

/// Why a snapshot could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading or writing failed (disk full, permission denied, ...). Saves are retried;
    /// the document stays in memory meanwhile.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a snapshot this build can read: corrupt, truncated, from another
    /// format version, or of another document. It is left untouched; the document refuses
    /// to open until an operator moves the file away or restores a good one.
    #[error("{path}: unreadable snapshot: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where snapshots are kept. Implementations must make `save` atomic: a later `load`
/// sees either the previous snapshot or the new one.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The last saved snapshot of a document, if there is one.
    fn load(&self, plugin: &str, document: &str) -> Result<Option<Snapshot>, StorageError>;
    /// Replaces the saved snapshot of a document.
    fn save(&self, plugin: &str, document: &str, snapshot: &Snapshot) -> Result<(), StorageError>;
}

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

impl Storage for FileStorage {
    fn load(&self, plugin: &str, document: &str) -> Result<Option<Snapshot>, StorageError> {
        let path = self.path(plugin, document);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::Io { path, source }),
        };
        decode(&bytes, plugin, document)
            .map(Some)
            .map_err(|reason| StorageError::Corrupt { path, reason })
    }

    fn save(&self, plugin: &str, document: &str, snapshot: &Snapshot) -> Result<(), StorageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.path(plugin, document);
        let dir = path
            .parent()
            .expect("snapshot files have a directory")
            .to_owned();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StorageError::Io { path, source }
        };
        if snapshot.state.is_empty() && snapshot.timers.is_empty() {
            // Nothing to keep (a stateless consumer such as a relay): no file, so that
            // opening the document again is the same as opening it fresh, and the data
            // directory does not fill with empty snapshots.
            return match std::fs::remove_file(&path) {
                Ok(()) => File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&dir)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StorageError::Io { path, source }),
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
            return Err(StorageError::Io { path: tmp, source });
        }
        if let Err(source) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::Io { path, source });
        }
        // The rename is durable only once the directory entry is.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a snapshot file.
pub fn encode(s: &Snapshot, plugin: &str, document: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.state.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    put_bytes(&mut out, document.as_bytes());
    put_bytes(&mut out, plugin.as_bytes());
    put_bytes(&mut out, s.plugin_version.as_bytes());
    out.extend_from_slice(&s.saved_at_ms.to_le_bytes());
    out.extend_from_slice(&(s.timers.len() as u32).to_le_bytes());
    for (id, due) in &s.timers {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&due.to_le_bytes());
    }
    out.extend_from_slice(&(s.state.len() as u64).to_le_bytes());
    out.extend_from_slice(&s.state);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }
}

/// Decodes a snapshot file of `plugin`/`document`.
pub fn decode(bytes: &[u8], plugin: &str, document: &str) -> Result<Snapshot, String> {
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a wasmroom snapshot (bad magic)".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    let mut r = Reader(&body[MAGIC.len()..]);
    let version = r.u16()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this wasmroom reads version {FORMAT_VERSION}"
        ));
    }
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch (the file is corrupt or truncated)".into());
    }
    let doc = r.string()?;
    let plug = r.string()?;
    if doc != document || plug != plugin {
        return Err(format!("the file belongs to {plug}/{doc}"));
    }
    let plugin_version = r.string()?;
    let saved_at_ms = r.u64()?;
    let count = r.u32()? as usize;
    let mut timers = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        timers.push((r.u64()?, r.u64()?));
    }
    let len = r.u64()? as usize;
    let state = r.take(len)?.to_vec();
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Snapshot {
        plugin_version,
        saved_at_ms,
        timers,
        state,
    })
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
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let bytes = encode(&sample(), "chat", "doc");
        assert_eq!(decode(&bytes, "chat", "doc").unwrap(), sample());
        assert!(
            decode(&bytes, "chat", "other")
                .unwrap_err()
                .contains("belongs to")
        );
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(
            decode(&flipped, "chat", "doc")
                .unwrap_err()
                .contains("checksum")
        );
        assert!(decode(&bytes[..bytes.len() - 5], "chat", "doc").is_err());
        let mut future = bytes.clone();
        future[8] = 9;
        assert!(
            decode(&future, "chat", "doc")
                .unwrap_err()
                .contains("format version 9")
        );
        assert!(decode(b"garbage", "chat", "doc").is_err());
    }

    #[test]
    fn files_are_atomic_and_names_safe() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::new(dir.path());
        assert_eq!(storage.load("chat", "../x").unwrap(), None);
        storage.save("chat", "../x", &sample()).unwrap();
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
        storage.save("chat", "../x", &empty).unwrap();
        assert_eq!(storage.load("chat", "../x").unwrap(), None);
        storage.save("chat", "../x", &sample()).unwrap();
        let long = "é".repeat(120);
        storage.save("chat", &long, &sample()).unwrap();
        assert!(storage.path("chat", &long).file_name().unwrap().len() < 100);
        assert_eq!(storage.load("chat", &long).unwrap(), Some(sample()));
    }
}
