//! The startup scan: every segment of every lane, fsynced before it is trusted, read up to
//! its valid length; torn tails cut; the entries grouped per document with the
//! incarnation rule applied. The same reading without changing anything
//! ([`Access::ReadOnly`]) serves `wasmroom replay`, also beside a server that appends to
//! the segments.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use wasmroom_wire::journal::{Entry, Frames, SEGMENT_HEADER_LEN, SegmentHeader, Stop};

use super::recovered::{DamagedSegment, DocumentKey, Recovered, RecoveredDocument};
use super::shared::{io, lane_dir, segment_path, sync_dir};
use crate::store::StorageError;

/// A segment found at startup, for trimming: which documents it holds, up to which seq.
#[derive(Debug)]
pub(super) struct FoundSegment {
    pub(super) lane: usize,
    pub(super) number: u64,
    pub(super) path: PathBuf,
    /// Each document's highest seq in it.
    pub(super) documents: HashMap<DocumentKey, u64>,
    /// Never deleted by trimming: what it held past the damage is unknown.
    pub(super) damaged: bool,
}

/// Where a lane's writing resumes: a new segment after `number`, whose predecessor is
/// valid up to `valid_len`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LaneTail {
    pub(super) number: u64,
    pub(super) valid_len: u64,
}

/// Everything the scan found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) recovered: Recovered,
    pub(super) segments: Vec<FoundSegment>,
    pub(super) lanes: HashMap<usize, LaneTail>,
}

/// An entry and where it was read, for ordering.
type Placed = ((u64, usize, u64, u64), Entry);

/// What a scan may do to the files it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// At startup, under the lock: every segment fsynced before it is trusted, torn tails
    /// and abandoned writes cut, a last segment whose header never became durable removed.
    Recover,
    /// Reading only (no lock, no fsync, nothing cut or removed), possibly while a server
    /// appends: a torn tail is where a lane's journal ends for now, and a segment trimmed
    /// between the listing and its reading is skipped (a snapshot written before its
    /// deletion covers it).
    ReadOnly,
}

/// Scans the journal folder `dir`.
pub(super) fn scan(dir: &Path, access: Access) -> Result<Scan, StorageError> {
    let mut scan = Scan::default();
    let mut placed: Vec<Placed> = Vec::new();
    for (lane, numbers) in lanes(dir)? {
        let lane_path = lane_dir(dir, lane);
        if access == Access::Recover {
            sync_dir(&lane_path).map_err(io(&lane_path))?;
        }
        let mut tail = LaneTail::default();
        for (i, &number) in numbers.iter().enumerate() {
            let path = segment_path(dir, lane, number);
            let next = numbers.get(i + 1).copied();
            // What the next segment says this one held when it was sealed (only the
            // direct successor knows; a trimmed successor leaves the file's length).
            let sealed_len = match next {
                Some(n) if n == number + 1 => read_header(&segment_path(dir, lane, n))
                    .ok()
                    .map(|h| h.previous_len),
                _ => None,
            };
            let found = read_segment(&path, (lane, number), next.is_none(), sealed_len, access)?;
            scan.recovered.torn_bytes += found.ignored;
            tail = LaneTail {
                number,
                valid_len: found.valid_len,
            };
            if let Some(reason) = found.damage {
                let mut documents: Vec<DocumentKey> = found.documents.keys().cloned().collect();
                documents.sort();
                scan.recovered.damaged.push(DamagedSegment {
                    path: path.clone(),
                    lane,
                    number,
                    valid_len: found.valid_len,
                    reason,
                    documents,
                });
            }
            if found.removed {
                continue;
            }
            let mut documents = HashMap::new();
            for (offset, entry) in found.entries {
                let key = (entry.plugin.clone(), entry.document.clone());
                let max = documents.entry(key).or_insert(0);
                *max = entry.seq.max(*max);
                placed.push(((entry.incarnation, lane, number, offset), entry));
            }
            scan.segments.push(FoundSegment {
                lane,
                number,
                path,
                documents,
                damaged: found.damaged_sealed,
            });
        }
        scan.lanes.insert(lane, tail);
    }
    let damaged: Vec<&DocumentKey> = scan
        .recovered
        .damaged
        .iter()
        .flat_map(|d| &d.documents)
        .collect();
    scan.recovered.documents = assemble(placed);
    for key in damaged {
        if let Some(doc) = scan.recovered.documents.get_mut(key) {
            doc.damaged = true;
        }
    }
    Ok(scan)
}

/// The lanes under `dir` and their segment numbers, in order.
fn lanes(dir: &Path) -> Result<BTreeMap<usize, Vec<u64>>, StorageError> {
    let mut lanes = BTreeMap::new();
    for lane in std::fs::read_dir(dir).map_err(io(dir))? {
        let lane = lane.map_err(io(dir))?;
        let name = lane.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lane-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let mut numbers = Vec::new();
        let path = lane.path();
        for file in std::fs::read_dir(&path).map_err(io(&path))? {
            let file = file.map_err(io(&path))?;
            let name = file.file_name();
            let parsed = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .filter(|n| n.len() == 12)
                .and_then(|n| n.parse::<u64>().ok());
            numbers.extend(parsed);
        }
        numbers.sort_unstable();
        lanes.insert(number, numbers);
    }
    Ok(lanes)
}

fn read_header(path: &Path) -> std::io::Result<SegmentHeader> {
    let mut bytes = [0u8; SEGMENT_HEADER_LEN];
    File::open(path)?.read_exact(&mut bytes)?;
    SegmentHeader::decode(&bytes).map_err(std::io::Error::other)
}

/// What one segment holds.
#[derive(Default)]
struct Found {
    /// Its entries with their offsets.
    entries: Vec<(u64, Entry)>,
    /// Each document's highest seq (for the damage report).
    documents: HashMap<DocumentKey, u64>,
    /// Bytes ignored: a torn tail cut, or what lay beyond the sealed length.
    ignored: u64,
    valid_len: u64,
    /// Why it is damaged, if it is.
    damage: Option<String>,
    damaged_sealed: bool,
    /// The file was removed (a last segment whose header never became durable).
    removed: bool,
}

fn read_segment(
    path: &Path,
    (lane, number): (usize, u64),
    last: bool,
    sealed_len: Option<u64>,
    access: Access,
) -> Result<Found, StorageError> {
    let writing = access == Access::Recover;
    let opened = OpenOptions::new().read(true).write(writing).open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if !writing && e.kind() == std::io::ErrorKind::NotFound => {
            // Trimmed since the listing.
            return Ok(Found {
                removed: true,
                ..Found::default()
            });
        }
        Err(e) => return Err(io(path)(e)),
    };
    if writing {
        // `kill -9` keeps written pages a later power cut could still drop: make them
        // durable before anything is read as durable from them.
        file.sync_all().map_err(io(path))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(path))?;
    let file_len = bytes.len() as u64;
    let mut found = Found::default();
    let header = SegmentHeader::decode(&bytes).ok();
    let header_ok = header.is_some_and(|h| h.lane as usize == lane && h.number == number);
    if !header_ok {
        if last {
            // Created but its header never became durable (or, beside a running server,
            // is not written yet): it never held an entry.
            if writing {
                std::fs::remove_file(path).map_err(io(path))?;
            }
            found.ignored = file_len;
            found.removed = true;
        } else {
            found.damage = Some("unreadable segment header".into());
            found.damaged_sealed = true;
        }
        return Ok(found);
    }
    let limit = sealed_len.map_or(file_len, |l| l.min(file_len));
    let start = SEGMENT_HEADER_LEN;
    let end = (limit as usize).max(start);
    let mut frames = Frames::new(&bytes[start..end]);
    loop {
        let offset = (start + frames.valid_len()) as u64;
        let Some(entry) = frames.next() else { break };
        let key = (entry.plugin.clone(), entry.document.clone());
        let max = found.documents.entry(key).or_insert(0);
        *max = entry.seq.max(*max);
        found.entries.push((offset, entry));
    }
    found.valid_len = (start + frames.valid_len()) as u64;
    let stop = frames.stop().cloned();
    if last {
        if found.valid_len < file_len {
            // A torn tail: a write that never completed, so never acknowledged (or,
            // beside a running server, one still being written).
            found.ignored = file_len - found.valid_len;
            if writing {
                file.set_len(found.valid_len).map_err(io(path))?;
                file.sync_all().map_err(io(path))?;
            }
        }
        return Ok(found);
    }
    let expected = sealed_len.unwrap_or(file_len);
    if let Some(Stop::Damaged(e)) = &stop {
        found.damage = Some(format!("{e} at byte {}", found.valid_len));
    } else if expected > file_len {
        found.damage = Some(format!(
            "{file_len} bytes, but {expected} were durable when it was sealed"
        ));
    }
    if found.damage.is_some() {
        // Kept as it is for the operator; trimming never deletes it.
        found.damaged_sealed = true;
    } else if file_len > found.valid_len {
        // Written after a failed sync and abandoned: the batch went to the next segment.
        found.ignored = file_len - found.valid_len;
        if writing {
            file.set_len(found.valid_len).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
    }
    Ok(found)
}

/// Each document's entries: ordered by incarnation, then where they were written (a
/// document is on one lane per incarnation; the lane count may change between runs), with
/// a later incarnation's entry replacing the tail from its seq on; gaps reported.
pub(super) fn assemble(mut placed: Vec<Placed>) -> BTreeMap<DocumentKey, RecoveredDocument> {
    placed.sort_by_key(|(at, _)| *at);
    let mut documents: BTreeMap<DocumentKey, RecoveredDocument> = BTreeMap::new();
    for (_, entry) in placed {
        let key = (entry.plugin.clone(), entry.document.clone());
        let doc = documents.entry(key).or_default();
        if let Some(last) = doc.entries.last()
            && entry.seq <= last.seq
        {
            // A later opening replaced the tail (records in flight when it was dropped).
            let keep = doc.entries.partition_point(|e| e.seq < entry.seq);
            doc.entries.truncate(keep);
        }
        doc.entries.push(entry);
    }
    for doc in documents.values_mut() {
        doc.gaps = doc
            .entries
            .windows(2)
            .filter(|w| w[1].seq != w[0].seq + 1)
            .map(|w| (w[0].seq, w[1].seq))
            .collect();
    }
    documents
}
