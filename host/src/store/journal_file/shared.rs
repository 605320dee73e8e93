//! What the file journal's threads share, and its file helpers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use crate::store::StorageError;

/// What the journal's threads share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) rotate_at: u64,
    pub(super) bytes_written: AtomicU64,
    /// Segments on disk.
    pub(super) segments: AtomicU64,
    /// Segments deleted by trimming.
    pub(super) trimmed: AtomicU64,
    #[cfg(test)]
    pub(super) faults: super::faults::Faults,
}

/// Maps an I/O error on `path` to a [`StorageError`].
pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + use<> {
    let what = path.display().to_string();
    move |source| StorageError::Io { what, source }
}

/// Makes a directory's entries durable.
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// The folder of a lane.
pub(super) fn lane_dir(dir: &Path, lane: usize) -> PathBuf {
    dir.join(format!("lane-{lane}"))
}

/// The file of a segment.
pub(super) fn segment_path(dir: &Path, lane: usize, number: u64) -> PathBuf {
    lane_dir(dir, lane).join(format!("{number:012}.wal"))
}
