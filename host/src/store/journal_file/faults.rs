//! Test hooks of the lane writers: failed syncs on request, a pause between a batch's
//! write and its sync, and the length of every file as of its last sync (what a power cut
//! leaves).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub(super) struct Faults {
    fail_syncs: AtomicU32,
    hold: Mutex<Option<(oneshot::Sender<()>, mpsc::Receiver<()>)>>,
    synced: Mutex<HashMap<PathBuf, u64>>,
}

impl Faults {
    /// Called between a batch's write and its sync.
    pub(super) fn before_sync(&self, _path: &Path) -> std::io::Result<()> {
        let failing = self
            .fail_syncs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(std::io::Error::other("injected sync failure"));
        }
        if let Some((written, release)) = self.hold.lock().unwrap().take() {
            let _ = written.send(());
            let _ = release.recv();
        }
        Ok(())
    }

    /// `path` is durable up to `len`.
    pub(super) fn synced(&self, path: &Path, len: u64) {
        self.synced.lock().unwrap().insert(path.to_owned(), len);
    }

    /// The next `n` syncs of a batch fail (after its write).
    pub(super) fn fail_next_syncs(&self, n: u32) {
        self.fail_syncs.store(n, Ordering::Relaxed);
    }

    /// The next batch stops between its write and its sync: the first channel says it is
    /// written, a send on the second lets it sync.
    pub(super) fn hold_next_sync(&self) -> (oneshot::Receiver<()>, mpsc::Sender<()>) {
        let (written, on_written) = oneshot::channel();
        let (release, on_release) = mpsc::channel();
        *self.hold.lock().unwrap() = Some((written, on_release));
        (on_written, release)
    }

    /// Each file written by this journal and its length at its last sync.
    pub(super) fn synced_lengths(&self) -> HashMap<PathBuf, u64> {
        self.synced.lock().unwrap().clone()
    }
}
