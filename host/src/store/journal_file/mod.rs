//! The file journal (journal mode on one machine; see ARCHITECTURE.md, "the input
//! journal"): append-only segments per lane under the journal folder,
//! `{dir}/lane-{lane}/{number:012}.wal`, in the format of `wasmroom_wire::journal` (a
//! segment header, then frames `len | crc32 | body`).
//!
//! - **Writing**: one thread per lane ([`writer`]) appends each batch (the lane's frames,
//!   concatenated, written as they are) to the lane's active segment and `fdatasync`s it
//!   before answering. A new segment is fsynced with its directory before use; a segment
//!   past the rotation size is sealed and the next one started. A failed write or sync is
//!   never retried on the same file: the batch goes to a fresh segment whose header names
//!   the failed one's durable length (what lies beyond is ignored at startup); if that
//!   fails too, the commit fails.
//! - **Recovery** ([`scan`]): at startup every segment is fsynced, then read. A torn tail
//!   of a lane's last segment is cut and counted. Damage inside a sealed segment (before
//!   the length its successor's header names) is reported as a [`DamagedSegment`] and
//!   marks every document with entries in it before the damage as
//!   [`RecoveredDocument::damaged`]: which documents the unreadable rest held is unknown,
//!   so those seen there are refused, and one that continues in a later segment shows a
//!   gap. (A document whose only entries lay past the damage is not visible; footers
//!   naming a segment's documents would close that.)
//! - **Reading only** ([`FileJournal::read_only`], for `wasmroom replay`): the same scan
//!   without the lock and without changing a file, also while a server appends.
//! - **Trimming** ([`trim`]): a sealed segment (by rotation, after a failure, or any found
//!   at startup) is deleted once every document in it is checkpointed at or past its
//!   highest seq there, or forgotten.
//!
//! A lock file (`{dir}/LOCK`) keeps a second process off the folder.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::store::StorageError;
use crate::store::journal::{Batch, JournalSink};

mod recovered;
mod scan;
mod shared;
mod trim;
mod writer;

#[cfg(test)]
mod faults;
#[cfg(test)]
mod tests;

pub use recovered::{DamagedSegment, DocumentKey, Recovered, RecoveredDocument};
use scan::{Access, LaneTail};
use shared::{Shared, io};
use trim::{TrimMessage, Trimmer};
use writer::{Job, LaneWriter};

/// The rotation size of a segment by default.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// A lane's writer thread and its queue.
#[derive(Debug)]
struct Lane {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// The file journal: a [`JournalSink`] with a writer thread per lane.
#[derive(Debug)]
pub struct FileJournal {
    shared: Arc<Shared>,
    lanes: Mutex<HashMap<usize, Lane>>,
    /// Where each lane's writing resumes (from the scan), taken by its writer.
    tails: Mutex<HashMap<usize, LaneTail>>,
    trim: Mutex<Option<(mpsc::Sender<TrimMessage>, JoinHandle<()>)>>,
    torn_bytes: u64,
    /// Held for the journal's life: the exclusive lock.
    _lock: File,
}

impl FileJournal {
    /// Opens the journal folder `dir` (created if missing) with segments rotated at
    /// [`DEFAULT_SEGMENT_BYTES`] (debug builds: `WASMROOM_TEST_JOURNAL_SEGMENT_BYTES`, so
    /// that the soak rotates and trims within minutes); returns it and what it holds.
    pub fn open(dir: &Path) -> Result<(FileJournal, Recovered), StorageError> {
        let segment_bytes = cfg!(debug_assertions)
            .then(|| std::env::var("WASMROOM_TEST_JOURNAL_SEGMENT_BYTES").ok())
            .flatten()
            .and_then(|b| b.parse().ok())
            .unwrap_or(DEFAULT_SEGMENT_BYTES);
        FileJournal::open_with(dir, segment_bytes)
    }

    /// Opens the journal folder `dir`, sealing a segment once a batch would take it past
    /// `segment_bytes`. Blocking: it reads every segment.
    pub fn open_with(
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<(FileJournal, Recovered), StorageError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Io {
                    what: lock_path.display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "another process holds this journal (is a second wasmroom running on the same data directory?)",
                    ),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(&lock_path)(source)),
        }
        let scan = scan::scan(dir, Access::Recover)?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            rotate_at: segment_bytes,
            bytes_written: AtomicU64::new(0),
            segments: AtomicU64::new(scan.segments.len() as u64),
            trimmed: AtomicU64::new(0),
            #[cfg(test)]
            faults: faults::Faults::default(),
        });
        let trimmer = Trimmer::new(shared.clone(), scan.segments);
        let (trim_tx, trim_rx) = mpsc::channel();
        let trim_thread = std::thread::Builder::new()
            .name("journal-trim".into())
            .spawn(move || trimmer.run(trim_rx))
            .map_err(io(dir))?;
        let journal = FileJournal {
            shared,
            lanes: Mutex::new(HashMap::new()),
            tails: Mutex::new(scan.lanes),
            trim: Mutex::new(Some((trim_tx, trim_thread))),
            torn_bytes: scan.recovered.torn_bytes,
            _lock: lock,
        };
        Ok((journal, scan.recovered))
    }

    /// What the journal folder `dir` holds, read without changing anything: no lock, no
    /// fsync, no torn tail cut, nothing trimmed, so it may run beside a server appending
    /// to it. A torn tail is where a lane's journal ends for now (`torn_bytes` counts
    /// it); a folder that does not exist holds nothing. Blocking: it reads every segment.
    pub fn read_only(dir: &Path) -> Result<Recovered, StorageError> {
        if !dir.try_exists().map_err(io(dir))? {
            return Ok(Recovered::default());
        }
        Ok(scan::scan(dir, Access::ReadOnly)?.recovered)
    }

    /// The document's state up to `seq` is in a durable snapshot: segments holding nothing
    /// newer of it (and nothing uncovered of another document) can go. Returns at once;
    /// the deletion happens on the trimming thread.
    pub fn checkpointed(&self, plugin: &str, document: &str, seq: u64) {
        let key = (plugin.to_owned(), document.to_owned());
        self.tell_trimmer(TrimMessage::Checkpointed { key, seq });
    }

    /// The document needs nothing of the journal any more (its snapshot was deleted, or it
    /// has nothing): its entries no longer keep a segment. Returns at once.
    ///
    /// Its entries stay in the segments until those go for their other documents, and
    /// come back in [`Recovered`] after a restart meanwhile.
    pub fn forget(&self, plugin: &str, document: &str) {
        let key = (plugin.to_owned(), document.to_owned());
        self.tell_trimmer(TrimMessage::Forget { key });
    }

    /// Blocks until the trimming thread handled every `checkpointed` and `forget` sent
    /// before (for tests and shutdown; never on a lane).
    pub fn settle_trimming(&self) {
        let (tx, rx) = mpsc::channel();
        self.tell_trimmer(TrimMessage::Settle(tx));
        let _ = rx.recv();
    }

    /// Bytes appended to segments since the journal was opened.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// Segments on disk now.
    pub fn segments(&self) -> u64 {
        self.shared.segments.load(Ordering::Relaxed)
    }

    /// Segments deleted by trimming since the journal was opened.
    pub fn trimmed_segments(&self) -> u64 {
        self.shared.trimmed.load(Ordering::Relaxed)
    }

    /// Bytes ignored at startup (torn tails and abandoned writes).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    fn tell_trimmer(&self, message: TrimMessage) {
        if let Some((tx, _)) = &*self.trim.lock().expect("trim lock") {
            let _ = tx.send(message);
        }
    }

    /// The queue of `lane`'s writer, started on its first batch.
    fn lane(&self, lane: usize) -> Result<mpsc::Sender<Job>, StorageError> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        if let Some(l) = lanes.get(&lane) {
            return Ok(l.jobs.clone());
        }
        let tail = self
            .tails
            .lock()
            .expect("tails lock")
            .remove(&lane)
            .unwrap_or_default();
        let trim = self
            .trim
            .lock()
            .expect("trim lock")
            .as_ref()
            .map(|(tx, _)| tx.clone())
            .ok_or_else(|| closed(lane))?;
        let writer = LaneWriter::new(lane, self.shared.clone(), trim, tail);
        let (jobs, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("journal-lane-{lane}"))
            .spawn(move || writer.run(rx))
            .map_err(io(&shared::lane_dir(&self.shared.dir, lane)))?;
        lanes.insert(
            lane,
            Lane {
                jobs: jobs.clone(),
                thread,
            },
        );
        Ok(jobs)
    }
}

#[async_trait::async_trait]
impl JournalSink for FileJournal {
    async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        let lane = batch.lane;
        let (answer, answered) = oneshot::channel();
        self.lane(lane)?
            .send((batch, answer))
            .map_err(|_| closed(lane))?;
        answered.await.map_err(|_| closed(lane))?
    }

    fn checkpointed(&self, plugin: &str, document: &str, seq: u64) {
        FileJournal::checkpointed(self, plugin, document, seq);
    }
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        // The writers finish their queues and seal their segments, then the trimmer
        // handles what they sent; the lock goes last.
        let lanes = std::mem::take(&mut *self.lanes.lock().expect("lanes lock"));
        for (_, lane) in lanes {
            drop(lane.jobs);
            let _ = lane.thread.join();
        }
        if let Some((tx, thread)) = self.trim.lock().expect("trim lock").take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

fn closed(lane: usize) -> StorageError {
    StorageError::Unavailable(format!("the journal writer of lane {lane} stopped"))
}
