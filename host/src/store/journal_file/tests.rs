use std::path::{Path, PathBuf};

use wasmroom_wire::journal::{Entry, Record, SEGMENT_HEADER_LEN, frame};

use super::*;

fn entry(document: &str, incarnation: u64, seq: u64) -> Entry {
    Entry {
        plugin: "chat".into(),
        document: document.into(),
        incarnation,
        seq,
        clock_ms: 1_700_000_000_000 + seq,
        record: Record::Message {
            connection: 1,
            text: true,
            data: format!("{document} #{seq} of {incarnation}").into_bytes(),
        },
    }
}

fn batch(lane: usize, entries: &[Entry]) -> Batch {
    Batch {
        lane,
        number: 0,
        records: entries.iter().flat_map(frame).collect(),
        count: entries.len(),
    }
}

fn open(dir: &Path, segment_bytes: u64) -> (FileJournal, Recovered) {
    FileJournal::open_with(dir, segment_bytes).unwrap()
}

/// The recovered entries of `document`.
fn entries_of(recovered: &Recovered, document: &str) -> Vec<Entry> {
    recovered.documents[&("chat".to_owned(), document.to_owned())]
        .entries
        .clone()
}

/// Every segment file under the journal folder, in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn commit_then_reopen_recovers_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<Entry> = (1..=5).map(|s| entry("a", 1, s)).collect();
    let b: Vec<Entry> = (1..=3).map(|s| entry("b", 1, s)).collect();
    {
        let (journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        assert!(recovered.documents.is_empty());
        journal.commit(batch(0, &a[..2])).await.unwrap();
        journal.commit(batch(1, &b)).await.unwrap();
        journal.commit(batch(0, &a[2..])).await.unwrap();
        journal.commit(batch(0, &[])).await.unwrap();
        assert_eq!(journal.segments(), 2);
        assert!(journal.bytes_written() > 0);
    }
    let (journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), a);
    assert_eq!(entries_of(&recovered, "b"), b);
    assert!(
        recovered
            .documents
            .values()
            .all(|d| d.gaps.is_empty() && !d.damaged)
    );
    assert_eq!((recovered.torn_bytes, recovered.damaged.len()), (0, 0));
    // Writing goes on in a new segment after the ones found.
    let more = entry("a", 1, 6);
    journal
        .commit(batch(0, std::slice::from_ref(&more)))
        .await
        .unwrap();
    drop(journal);
    let (_journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), [a, vec![more]].concat());
    assert_eq!(segment_files(dir.path()).len(), 3);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_writing_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let kept: Vec<Entry> = (1..=3).map(|s| entry("a", 1, s)).collect();
    {
        let (journal, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        journal.commit(batch(0, &kept)).await.unwrap();
    }
    let last = segment_files(dir.path()).pop().unwrap();
    let synced_len = std::fs::metadata(&last).unwrap().len();
    // Half of the next frame reached the disk.
    let torn = frame(&entry("a", 1, 4));
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&last, &bytes).unwrap();

    let (journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), kept);
    assert_eq!(recovered.torn_bytes, (torn.len() / 2) as u64);
    assert_eq!(journal.torn_bytes(), recovered.torn_bytes);
    assert!(recovered.damaged.is_empty());
    assert_eq!(std::fs::metadata(&last).unwrap().len(), synced_len);
    let next = entry("a", 1, 4);
    journal
        .commit(batch(0, std::slice::from_ref(&next)))
        .await
        .unwrap();
    drop(journal);
    let (_journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), [kept, vec![next]].concat());
    assert_eq!(recovered.torn_bytes, 0);
    assert!(recovered.damaged.is_empty());
}

#[tokio::test]
async fn a_later_incarnation_replaces_the_tail_and_gaps_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<Entry> = (1..=5).map(|s| entry("a", 1, s)).collect();
    let second: Vec<Entry> = (4..=6).map(|s| entry("a", 2, s)).collect();
    let third = entry("a", 3, 7);
    let gappy = [entry("g", 1, 1), entry("g", 1, 2), entry("g", 1, 4)];
    {
        let (journal, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        journal.commit(batch(3, &first)).await.unwrap();
        journal.commit(batch(3, &second)).await.unwrap();
        // After a restart with another lane count the document moved to lane 0, whose
        // segments sort before lane 3's: its incarnation orders it.
        journal
            .commit(batch(0, std::slice::from_ref(&third)))
            .await
            .unwrap();
        journal.commit(batch(1, &gappy)).await.unwrap();
    }
    let (_journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    let expected = [first[..3].to_vec(), second, vec![third]].concat();
    assert_eq!(entries_of(&recovered, "a"), expected);
    let a = &recovered.documents[&("chat".to_owned(), "a".to_owned())];
    assert!(a.gaps.is_empty());
    let g = &recovered.documents[&("chat".to_owned(), "g".to_owned())];
    assert_eq!(g.entries, gappy);
    assert_eq!(g.gaps, [(2, 4)]);
}

#[tokio::test]
async fn sealed_segments_go_once_every_document_in_them_is_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    // One batch per segment: any second batch passes 1 byte.
    let (journal, _) = open(dir.path(), 1);
    journal.commit(batch(0, &[entry("a", 1, 1)])).await.unwrap();
    journal
        .commit(batch(0, &[entry("b", 1, 1), entry("a", 1, 2)]))
        .await
        .unwrap();
    journal.commit(batch(0, &[entry("a", 1, 3)])).await.unwrap();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    assert_eq!(journal.segments(), 3);

    journal.checkpointed("chat", "a", 1);
    journal.settle_trimming();
    assert!(!files[0].exists(), "a is checkpointed at 1: the first goes");
    journal.checkpointed("chat", "b", 1);
    journal.settle_trimming();
    assert!(
        files[1].exists(),
        "a is checkpointed at 1, the second holds its 2"
    );
    journal.checkpointed("chat", "a", 3);
    journal.settle_trimming();
    assert!(!files[1].exists());
    assert!(files[2].exists(), "the active segment stays");
    assert_eq!((journal.segments(), journal.trimmed_segments()), (1, 2));

    // The next batch seals the third: covered, it goes at once.
    journal.commit(batch(0, &[entry("c", 1, 1)])).await.unwrap();
    journal.settle_trimming();
    assert!(!files[2].exists());
    drop(journal);

    // A segment found at startup is sealed; forgetting its only document deletes it.
    let (journal, recovered) = open(dir.path(), 1);
    assert_eq!(entries_of(&recovered, "c"), [entry("c", 1, 1)]);
    assert_eq!(journal.segments(), 1);
    journal.checkpointed("chat", "a", 10);
    journal.settle_trimming();
    assert_eq!(journal.segments(), 1);
    journal.forget("chat", "c");
    journal.settle_trimming();
    assert_eq!(journal.segments(), 0);
    assert!(segment_files(dir.path()).is_empty());
}

#[test]
fn a_second_open_of_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    let refused = FileJournal::open(dir.path()).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("another process holds this journal"),
        "{refused}"
    );
    drop(first);
    FileJournal::open(dir.path()).unwrap();
}

/// Copies the journal folder `from` into `to`, every segment cut to `len(path)`.
fn copy_cut(from: &Path, to: &Path, len: impl Fn(&Path) -> u64) {
    for file in segment_files(from) {
        let relative = file.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(relative).parent().unwrap()).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(to.join(relative), &bytes[..len(&file) as usize]).unwrap();
    }
}

#[tokio::test]
async fn a_power_cut_keeps_exactly_the_synced_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    let acknowledged: Vec<Entry> = (1..=4).map(|s| entry("a", 1, s)).collect();
    journal.commit(batch(0, &acknowledged[..2])).await.unwrap();
    journal.commit(batch(0, &acknowledged[2..])).await.unwrap();
    let in_flight = [entry("a", 1, 5), entry("a", 1, 6)];
    let (written, release) = journal.shared.faults.hold_next_sync();
    let cuts = tempfile::tempdir().unwrap();
    let (power_cut, half_written, killed) = (
        cuts.path().join("power-cut"),
        cuts.path().join("half"),
        cuts.path().join("kill"),
    );
    let cut = async {
        // The batch is in the page cache, not yet synced: the moment of the cut.
        written.await.unwrap();
        let synced = journal.shared.faults.synced_lengths();
        let synced = |p: &Path| synced[p];
        copy_cut(dir.path(), &power_cut, synced);
        // Part of the first frame reached the disk.
        let half = |p: &Path| synced(p) + (std::fs::metadata(p).unwrap().len() - synced(p)) / 3;
        copy_cut(dir.path(), &half_written, half);
        copy_cut(dir.path(), &killed, |p| std::fs::metadata(p).unwrap().len());
        release.send(()).unwrap();
    };
    let (committed, ()) = tokio::join!(journal.commit(batch(0, &in_flight)), cut);
    committed.unwrap();

    let (_j, recovered) = open(&power_cut, DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), acknowledged);
    assert_eq!(recovered.torn_bytes, 0);
    let (_j, recovered) = open(&half_written, DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), acknowledged);
    assert!(recovered.torn_bytes > 0);
    // `kill -9` at the same moment keeps the page cache: the batch is there (it was never
    // answered, so nothing it caused was seen; replaying it is harmless).
    let (_j, recovered) = open(&killed, DEFAULT_SEGMENT_BYTES);
    let all = [acknowledged.clone(), in_flight.to_vec()].concat();
    assert_eq!(entries_of(&recovered, "a"), all);
}

#[tokio::test]
async fn a_failed_sync_moves_the_batch_to_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<Entry> = (1..=4).map(|s| entry("a", 1, s)).collect();
    {
        let (journal, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        journal.commit(batch(0, &a[..2])).await.unwrap();
        let first = segment_files(dir.path()).pop().unwrap();
        let durable = std::fs::metadata(&first).unwrap().len();
        journal.shared.faults.fail_next_syncs(1);
        journal.commit(batch(0, &a[2..])).await.unwrap();
        // Cut back to what was durable; the batch is in the next segment.
        assert_eq!(std::fs::metadata(&first).unwrap().len(), durable);
        assert_eq!(segment_files(dir.path()).len(), 2);
        // Both attempts fail: the commit fails, and the next batch starts a third segment.
        journal.shared.faults.fail_next_syncs(2);
        let lost = [entry("a", 1, 5)];
        assert!(journal.commit(batch(0, &lost)).await.is_err());
        journal.commit(batch(0, &[entry("b", 1, 1)])).await.unwrap();
        // The third held nothing: trimming deletes it.
        journal.settle_trimming();
        let names: Vec<String> = segment_files(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["000000000001.wal", "000000000002.wal", "000000000004.wal"]
        );
    }
    let (_journal, recovered) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    assert_eq!(entries_of(&recovered, "a"), a);
    assert_eq!(entries_of(&recovered, "b"), [entry("b", 1, 1)]);
    assert_eq!((recovered.torn_bytes, recovered.damaged.len()), (0, 0));
}

#[tokio::test]
async fn damage_in_a_sealed_segment_marks_the_documents_seen_in_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (journal, _) = open(dir.path(), 1);
        journal
            .commit(batch(0, &[entry("b", 1, 1), entry("a", 1, 1)]))
            .await
            .unwrap();
        journal.commit(batch(0, &[entry("a", 1, 2)])).await.unwrap();
        journal.commit(batch(0, &[entry("c", 1, 1)])).await.unwrap();
    }
    let files = segment_files(dir.path());
    // A bit flips in the first segment's second frame (a's).
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let second_frame = SEGMENT_HEADER_LEN + frame(&entry("b", 1, 1)).len();
    bytes[second_frame + 12] ^= 1;
    std::fs::write(&files[0], &bytes).unwrap();
    // Bytes past the second segment's durable length (named by the third's header) are
    // an abandoned write, not damage.
    let mut abandoned = std::fs::read(&files[1]).unwrap();
    abandoned.extend_from_slice(b"written after a failed sync");
    std::fs::write(&files[1], &abandoned).unwrap();

    let (journal, recovered) = open(dir.path(), 1);
    assert_eq!(recovered.damaged.len(), 1);
    let damage = &recovered.damaged[0];
    assert_eq!((damage.lane, damage.number), (0, 1));
    assert_eq!(damage.valid_len, second_frame as u64);
    assert_eq!(damage.documents, [("chat".to_owned(), "b".to_owned())]);
    let doc = |d: &str| &recovered.documents[&("chat".to_owned(), d.to_owned())];
    assert!(doc("b").damaged);
    // a's first entry is lost: its entries start past what its snapshot covers.
    assert_eq!(doc("a").entries, [entry("a", 1, 2)]);
    assert!(!doc("a").damaged && !doc("c").damaged);
    assert_eq!(recovered.torn_bytes, 27);
    assert_eq!(
        std::fs::metadata(&files[1]).unwrap().len() as usize,
        abandoned.len() - 27
    );
    // The damaged segment is kept for the operator, whatever is checkpointed.
    journal.checkpointed("chat", "b", 5);
    journal.checkpointed("chat", "a", 5);
    journal.settle_trimming();
    assert!(files[0].exists());
    assert!(!files[1].exists());
    assert_eq!(std::fs::read(&files[0]).unwrap(), bytes);
}

#[tokio::test]
async fn reading_only_changes_nothing_and_needs_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<Entry> = (1..=3).map(|s| entry("a", 1, s)).collect();
    let (journal, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
    journal.commit(batch(0, &a)).await.unwrap();
    // The writer is in the middle of its next write: half a frame is in the file.
    let active = segment_files(dir.path()).pop().unwrap();
    let torn = frame(&entry("a", 1, 4));
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&active, &bytes).unwrap();
    // Another lane's segment was just created, its header not written yet.
    let fresh = dir.path().join("lane-1").join("000000000001.wal");
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    std::fs::write(&fresh, b"").unwrap();

    // `journal` holds the lock meanwhile.
    let read = FileJournal::read_only(dir.path()).unwrap();
    assert_eq!(
        entries_of(&read, "a"),
        a,
        "the journal ends at the torn tail"
    );
    assert_eq!(read.torn_bytes, (torn.len() / 2) as u64);
    assert_eq!(std::fs::read(&active).unwrap(), bytes, "nothing is cut");
    assert!(fresh.exists(), "nothing is removed");
    let missing = FileJournal::read_only(&dir.path().join("none")).unwrap();
    assert!(missing.documents.is_empty());
}
