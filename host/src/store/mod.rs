//! Durable documents: where snapshots live.
//!
//! [`Storage`] is the small interface a shared store (PostgreSQL, S3) can implement later;
//! [`FileStorage`] ([`file`]) is the embedded default: one file per (plugin, document)
//! under the data directory, in the format of [`format`].
//!

use std::path::PathBuf;

pub mod file;
pub mod format;

pub use file::FileStorage;
pub use format::{FORMAT_VERSION, decode, encode};

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
