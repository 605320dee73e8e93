//! What the file journal found at startup.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmroom_wire::journal::Entry;

/// A document: (plugin, document id).
pub type DocumentKey = (String, String);

/// What the journal held at startup.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Each document's entries.
    pub documents: BTreeMap<DocumentKey, RecoveredDocument>,
    /// Bytes ignored: torn tails cut from lanes' last segments, and what lay past a sealed
    /// segment's durable length (a write abandoned after a failed sync).
    pub torn_bytes: u64,
    /// Segments with damage before their durable end.
    pub damaged: Vec<DamagedSegment>,
}

/// One document's entries as recovered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveredDocument {
    /// In seq order, a later incarnation's entries replacing an earlier one's from the seq
    /// they reuse. They may start past 1 (older ones trimmed) and include entries its
    /// snapshot already covers (a segment not yet trimmed): the reader skips those.
    pub entries: Vec<Entry>,
    /// Missing seqs: (the seq before, the seq after) each gap. A document with a gap past
    /// its snapshot cannot be replayed.
    pub gaps: Vec<(u64, u64)>,
    /// It had entries in a damaged segment: it may have lost entries.
    pub damaged: bool,
}

/// A sealed segment with damage before its durable end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSegment {
    /// Its file (kept as it is; trimming never deletes it).
    pub path: PathBuf,
    /// Its lane.
    pub lane: usize,
    /// Its number on the lane.
    pub number: u64,
    /// How many bytes from its start were read.
    pub valid_len: u64,
    /// What is wrong.
    pub reason: String,
    /// The documents with entries before the damage.
    pub documents: Vec<DocumentKey>,
}
