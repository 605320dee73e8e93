//! Trimming: a sealed segment is deleted once every document in it has a durable snapshot
//! at or past its highest seq there (or was forgotten). On a thread of its own, so that
//! neither a lane nor a lane's writer waits for a deletion.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use super::recovered::DocumentKey;
use super::scan::FoundSegment;
use super::shared::Shared;

/// What the trimmer is told.
#[derive(Debug)]
pub(super) enum TrimMessage {
    /// A lane's writer no longer appends to this segment.
    Sealed {
        lane: usize,
        number: u64,
        path: PathBuf,
        documents: HashMap<DocumentKey, u64>,
    },
    /// The document's state up to `seq` is in a durable snapshot.
    Checkpointed { key: DocumentKey, seq: u64 },
    /// The document needs nothing of the journal any more.
    Forget { key: DocumentKey },
    /// Answer once everything sent before is handled.
    Settle(mpsc::Sender<()>),
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    documents: HashMap<DocumentKey, u64>,
    damaged: bool,
}

/// The sealed segments and how far each document is checkpointed.
#[derive(Debug)]
pub(super) struct Trimmer {
    shared: Arc<Shared>,
    segments: BTreeMap<(usize, u64), Segment>,
    /// Kept while the process runs (a document's entries may be in a segment not sealed
    /// yet); `forget` removes one.
    checkpoints: HashMap<DocumentKey, u64>,
}

impl Trimmer {
    /// A trimmer that knows the segments found at startup (all sealed).
    pub(super) fn new(shared: Arc<Shared>, found: Vec<FoundSegment>) -> Trimmer {
        let segments = found
            .into_iter()
            .map(|f| {
                let segment = Segment {
                    path: f.path,
                    documents: f.documents,
                    damaged: f.damaged,
                };
                ((f.lane, f.number), segment)
            })
            .collect();
        Trimmer {
            shared,
            segments,
            checkpoints: HashMap::new(),
        }
    }

    /// Handles messages until the journal is dropped.
    pub(super) fn run(mut self, messages: mpsc::Receiver<TrimMessage>) {
        for message in messages {
            match message {
                TrimMessage::Sealed {
                    lane,
                    number,
                    path,
                    documents,
                } => {
                    let segment = Segment {
                        path,
                        documents,
                        damaged: false,
                    };
                    self.segments.insert((lane, number), segment);
                    self.sweep(|at, _| at == (lane, number));
                }
                TrimMessage::Checkpointed { key, seq } => {
                    let at = self.checkpoints.entry(key.clone()).or_insert(0);
                    *at = seq.max(*at);
                    self.sweep(|_, s| s.documents.contains_key(&key));
                }
                TrimMessage::Forget { key } => {
                    self.checkpoints.remove(&key);
                    let mut touched = Vec::new();
                    for (at, segment) in &mut self.segments {
                        if segment.documents.remove(&key).is_some() {
                            touched.push(*at);
                        }
                    }
                    self.sweep(|at, _| touched.contains(&at));
                }
                TrimMessage::Settle(answer) => {
                    let _ = answer.send(());
                }
            }
        }
    }

    /// Deletes every segment `candidate` picks that is covered.
    fn sweep(&mut self, candidate: impl Fn((usize, u64), &Segment) -> bool) {
        let covered: Vec<(usize, u64)> = self
            .segments
            .iter()
            .filter(|(at, s)| candidate(**at, s) && self.covered(s))
            .map(|(at, _)| *at)
            .collect();
        for at in covered {
            let path = &self.segments[&at].path;
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Kept; tried again at its documents' next checkpoint.
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a trimmed journal segment");
                    continue;
                }
            }
            // No directory sync: a deleted segment that comes back after a crash only
            // brings back entries its documents' snapshots already cover.
            self.segments.remove(&at);
            self.shared.segments.fetch_sub(1, Ordering::Relaxed);
            self.shared.trimmed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn covered(&self, segment: &Segment) -> bool {
        !segment.damaged
            && segment
                .documents
                .iter()
                .all(|(key, max)| self.checkpoints.get(key).is_some_and(|at| at >= max))
    }
}
