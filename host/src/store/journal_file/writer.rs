//! One lane's writer: a thread of its own (not tokio's blocking pool, which snapshot writes
//! use) that appends the lane's batches to its active segment, one at a time, each made
//! durable by `fdatasync` before it is answered.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use tokio::sync::oneshot;
use wasmroom_wire::journal::{Frames, SEGMENT_HEADER_LEN, SegmentHeader, Stop};

use super::recovered::DocumentKey;
use super::scan::LaneTail;
use super::shared::{Shared, io, lane_dir, segment_path, sync_dir};
use super::trim::TrimMessage;
use crate::store::StorageError;
use crate::store::journal::Batch;

/// A batch to write and where to answer.
pub(super) type Job = (Batch, oneshot::Sender<Result<(), StorageError>>);

/// The segment a lane appends to.
#[derive(Debug)]
struct Active {
    file: File,
    number: u64,
    path: PathBuf,
    /// Durable length: everything up to here was synced.
    len: u64,
    /// Each document's highest seq in it.
    documents: HashMap<DocumentKey, u64>,
}

/// The state of one lane's writer thread.
#[derive(Debug)]
pub(super) struct LaneWriter {
    lane: usize,
    shared: Arc<Shared>,
    trim: mpsc::Sender<TrimMessage>,
    /// The segment appended to, if it is still usable.
    active: Option<Active>,
    /// The last segment of the lane (active or abandoned), for the next one's header.
    tail: LaneTail,
}

impl LaneWriter {
    pub(super) fn new(
        lane: usize,
        shared: Arc<Shared>,
        trim: mpsc::Sender<TrimMessage>,
        tail: LaneTail,
    ) -> LaneWriter {
        LaneWriter {
            lane,
            shared,
            trim,
            active: None,
            tail,
        }
    }

    /// Writes batches until the journal is dropped.
    pub(super) fn run(mut self, jobs: mpsc::Receiver<Job>) {
        for (batch, answer) in jobs {
            let result = self.commit(&batch);
            let _ = answer.send(result);
        }
        self.seal();
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        let documents = documents_of(&batch.records).map_err(|reason| StorageError::Corrupt {
            what: format!("journal batch {} of lane {}", batch.number, self.lane),
            reason,
        })?;
        let full = self.active.as_ref().is_some_and(|a| {
            a.len > SEGMENT_HEADER_LEN as u64
                && a.len + batch.records.len() as u64 > self.shared.rotate_at
        });
        if full {
            self.seal();
        }
        if self.active.is_none() {
            self.start()?;
        }
        match self.append(&batch.records) {
            Ok(()) => {}
            Err(first) => {
                // Never again on this file: what it holds past its durable length is
                // unknown. The next segment's header names that length.
                self.abandon();
                tracing::warn!(lane = self.lane, error = %first, "journal write failed; writing the batch to a fresh segment");
                self.start()?;
                if let Err(second) = self.append(&batch.records) {
                    self.abandon();
                    return Err(second);
                }
            }
        }
        let active = self.active.as_mut().expect("appended to it");
        for (key, seq) in documents {
            let max = active.documents.entry(key).or_insert(0);
            *max = seq.max(*max);
        }
        Ok(())
    }

    /// Appends `records` to the active segment and syncs them.
    fn append(&mut self, records: &[u8]) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let active = self.active.as_mut().expect("a segment is active");
        let written = (|| {
            active.file.write_all(records)?;
            #[cfg(test)]
            shared.faults.before_sync(&active.path)?;
            active.file.sync_data()
        })();
        written.map_err(io(&active.path))?;
        active.len += records.len() as u64;
        self.tail.valid_len = active.len;
        shared
            .bytes_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        #[cfg(test)]
        shared.faults.synced(&active.path, active.len);
        Ok(())
    }

    /// Creates the next segment, durable with its directory entry before it is used.
    fn start(&mut self) -> Result<(), StorageError> {
        let number = self.tail.number + 1;
        let dir = lane_dir(&self.shared.dir, self.lane);
        let path = segment_path(&self.shared.dir, self.lane, number);
        let header = SegmentHeader {
            lane: u32::try_from(self.lane).expect("fewer than 2^32 lanes"),
            number,
            previous_len: self.tail.valid_len,
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        if let Err(e) = file
            .write_all(&header.encode())
            .and_then(|()| file.sync_all())
        {
            // Not a segment yet: remove it, or (if that fails too) let the next one follow
            // it as an empty predecessor.
            if std::fs::remove_file(&path).is_err() {
                self.tail = LaneTail {
                    number,
                    valid_len: 0,
                };
            }
            return Err(io(&path)(e));
        }
        // From here the lane's next segment follows this one, even if the directory sync
        // fails: the file exists.
        self.tail = LaneTail {
            number,
            valid_len: SEGMENT_HEADER_LEN as u64,
        };
        self.shared.segments.fetch_add(1, Ordering::Relaxed);
        sync_dir(&dir)
            .and_then(|()| sync_dir(&self.shared.dir))
            .map_err(io(&dir))?;
        #[cfg(test)]
        self.shared.faults.synced(&path, SEGMENT_HEADER_LEN as u64);
        self.active = Some(Active {
            file,
            number,
            path,
            len: SEGMENT_HEADER_LEN as u64,
            documents: HashMap::new(),
        });
        Ok(())
    }

    /// Gives up the active segment after a failure: cut back to its durable length if
    /// possible (the next segment's header names that length either way), and hand it to
    /// trimming.
    fn abandon(&mut self) {
        if let Some(active) = &self.active {
            let _ = active
                .file
                .set_len(active.len)
                .and_then(|()| active.file.sync_all());
        }
        self.seal();
    }

    /// The active segment is done: trimming may delete it once it is covered.
    fn seal(&mut self) {
        if let Some(active) = self.active.take() {
            let _ = self.trim.send(TrimMessage::Sealed {
                lane: self.lane,
                number: active.number,
                path: active.path,
                documents: active.documents,
            });
        }
    }
}

/// The documents of a batch and their highest seqs; a batch that is not whole frames is
/// refused (nothing of it is written).
fn documents_of(records: &[u8]) -> Result<HashMap<DocumentKey, u64>, String> {
    let mut documents = HashMap::new();
    let mut frames = Frames::new(records);
    for entry in frames.by_ref() {
        let max = documents.entry((entry.plugin, entry.document)).or_insert(0);
        *max = entry.seq.max(*max);
    }
    match frames.stop() {
        Some(Stop::Damaged(e)) => Err(format!("not journal frames: {e}")),
        _ => Ok(documents),
    }
}
