//! A lane's journal buffer and its output gate (journal mode; see ARCHITECTURE.md,
//! "the input journal").
//!
//! Every guest call of a journaled document appends its record to the lane's *open
//! batch*, and everything the call causes outside the document (frames, a close, an HTTP
//! answer, a webhook event) is tagged with that batch. The lane's committer seals the
//! open batch, makes it durable, and only then *releases* it: its frames become writable,
//! the queues holding them go back to the lane's flusher, and what waited on it runs. So
//! a record that is not durable never produced output anyone saw.
//!
//! Batch 0 is always released: documents in checkpoint mode tag everything with it and
//! pay one comparison per frame. Outboxes never leave their lane's thread, so the state
//! is thread-local, like the flusher's list.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use tokio::sync::Notify;
use wasmroom_wire::journal::Entry;

/// A document: (plugin, document id).
type DocumentKey = (String, String);

/// What waits for a batch to be durable before it may write (a connection's queue).
pub trait Gated {
    /// The batch it waited for is durable.
    fn released(&self);
}

thread_local! {
    static JOURNAL: LaneJournal = LaneJournal::new();
}

/// A batch of records: its number and the records, concatenated.
#[derive(Debug, Default)]
pub struct Sealed {
    /// The batch's number (1, 2, ...).
    pub number: u64,
    /// The records appended while it was open.
    pub records: Vec<u8>,
    /// How many.
    pub count: usize,
}

/// The queues waiting for one batch.
type Waiting = Vec<Weak<dyn Gated>>;

/// What waits for a batch to be durable.
type Deferred = Box<dyn FnOnce()>;

/// A document's journal entries since its last checkpoint, each with the batch it went
/// into. Kept by its lane beyond the document's life in memory: a document that crashed
/// reopens from its snapshot and these.
#[derive(Debug, Default)]
pub struct Tail {
    entries: VecDeque<(u64, Entry)>,
}

impl Tail {
    /// An entry the document made, in `batch` (0: read back from a durable journal).
    pub fn push(&mut self, batch: u64, entry: Entry) {
        self.entries.push_back((batch, entry));
    }

    /// Entries read back from the durable journal at startup: before any made since,
    /// which keep their batches.
    pub fn put_first(&mut self, entries: Vec<Entry>) {
        for entry in entries.into_iter().rev() {
            self.entries.push_front((0, entry));
        }
    }

    /// The entries a shared store holds (whichever host wrote them), in place of any
    /// this lane kept: they are what is durable.
    pub fn replace(&mut self, entries: Vec<Entry>) {
        self.entries.clear();
        self.put_first(entries);
    }

    /// A snapshot holding every input up to `seq` is durable: those entries are needed
    /// no more.
    pub fn checkpointed(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|(_, e)| e.seq <= seq) {
            self.entries.pop_front();
        }
    }

    /// `batch` could not be made durable: its entries, and every later one, never were.
    pub fn forget_from(&mut self, batch: u64) {
        while self.entries.back().is_some_and(|(b, _)| *b >= batch) {
            self.entries.pop_back();
        }
    }

    /// The batch of the last entry (what a reopen waits for).
    pub fn last_batch(&self) -> u64 {
        self.entries.back().map_or(0, |(b, _)| *b)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|(_, e)| e)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A document's tail on this lane, made empty if it has none.
pub fn tail(key: &DocumentKey) -> Rc<RefCell<Tail>> {
    JOURNAL.with(|j| j.tails.borrow_mut().entry(key.clone()).or_default().clone())
}

/// Lets an empty tail go (the document left memory with everything checkpointed).
pub fn drop_tail_if_empty(key: &DocumentKey) {
    JOURNAL.with(|j| {
        let mut tails = j.tails.borrow_mut();
        if tails.get(key).is_some_and(|t| t.borrow().is_empty()) {
            tails.remove(key);
        }
    });
}

struct LaneJournal {
    /// Each journaled document's entries since its last checkpoint.
    tails: RefCell<HashMap<DocumentKey, Rc<RefCell<Tail>>>>,
    /// The batch records are appended to now.
    open: Cell<u64>,
    /// Every batch up to this one is durable (released).
    durable: Cell<u64>,
    records: RefCell<Vec<u8>>,
    count: Cell<usize>,
    /// Queues holding frames (or a close) of a batch not yet durable, by batch.
    waiting: RefCell<Vec<(u64, Waiting)>>,
    /// What runs once a batch is durable (webhook events), by batch.
    after: RefCell<Vec<(u64, Deferred)>>,
    /// The committer: the open batch got its first record.
    appended: Rc<Notify>,
    /// Waiters for durability: a batch was released.
    released: Rc<Notify>,
}

impl LaneJournal {
    fn new() -> LaneJournal {
        LaneJournal {
            tails: RefCell::new(HashMap::new()),
            open: Cell::new(1),
            durable: Cell::new(0),
            records: RefCell::new(Vec::new()),
            count: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
            after: RefCell::new(Vec::new()),
            appended: Rc::new(Notify::new()),
            released: Rc::new(Notify::new()),
        }
    }
}

/// Appends a record to this lane's open batch; returns the batch, which tags every output
/// of the call the record describes.
pub fn append(record: &[u8]) -> u64 {
    JOURNAL.with(|j| {
        j.records.borrow_mut().extend_from_slice(record);
        let count = j.count.get() + 1;
        j.count.set(count);
        if count == 1 {
            j.appended.notify_one();
        }
        j.open.get()
    })
}

/// Whether what was tagged with `batch` may leave the host now.
pub fn is_durable(batch: u64) -> bool {
    batch == 0 || JOURNAL.with(|j| batch <= j.durable.get())
}

/// The last batch made durable on this lane.
pub fn durable() -> u64 {
    JOURNAL.with(|j| j.durable.get())
}

/// Notified when the open batch gets its first record (the committer waits on it).
pub fn appended() -> Rc<Notify> {
    JOURNAL.with(|j| j.appended.clone())
}

/// Closes the open batch and hands its records to the committer; records appended from
/// now on go to the next one. An empty batch is sealed too (its number is then simply
/// released with nothing in it).
pub fn seal() -> Sealed {
    JOURNAL.with(|j| {
        let number = j.open.get();
        j.open.set(number + 1);
        Sealed {
            number,
            records: std::mem::take(&mut *j.records.borrow_mut()),
            count: j.count.replace(0),
        }
    })
}

/// Whether the open batch holds records.
pub fn has_open_records() -> bool {
    JOURNAL.with(|j| j.count.get() > 0)
}

/// `batch` is durable: every queue waiting on it (or an earlier one) goes back to its
/// writer, what waited runs, and waiters of [`wait_durable`] wake.
pub fn release(batch: u64) {
    let (queues, callbacks) = JOURNAL.with(|j| {
        j.durable.set(j.durable.get().max(batch));
        let durable = j.durable.get();
        let mut queues = Vec::new();
        j.waiting.borrow_mut().retain_mut(|(b, list)| {
            if *b <= durable {
                queues.append(list);
                false
            } else {
                true
            }
        });
        let mut callbacks = Vec::new();
        let mut after = j.after.borrow_mut();
        let mut i = 0;
        while i < after.len() {
            if after[i].0 <= durable {
                callbacks.push(after.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        (queues, callbacks)
    });
    // Outside the borrow: scheduling and callbacks may touch the journal again.
    for queue in queues.iter().filter_map(Weak::upgrade) {
        queue.released();
    }
    for callback in callbacks {
        callback();
    }
    JOURNAL.with(|j| j.released.notify_waiters());
}

/// Puts `outbox` on `batch`'s list: it holds frames (or a close) of that batch.
pub(crate) fn wait_for(batch: u64, outbox: Weak<dyn Gated>) {
    JOURNAL.with(|j| {
        let mut waiting = j.waiting.borrow_mut();
        match waiting.iter_mut().find(|(b, _)| *b == batch) {
            Some((_, list)) => list.push(outbox),
            None => waiting.push((batch, vec![outbox])),
        }
    });
}

/// Runs `f` once `batch` is durable (at once if it is).
pub fn after(batch: u64, f: impl FnOnce() + 'static) {
    if is_durable(batch) {
        f();
        return;
    }
    JOURNAL.with(|j| j.after.borrow_mut().push((batch, Box::new(f))));
}

/// Waits until `batch` is durable.
pub async fn wait_durable(batch: u64) {
    loop {
        let released = JOURNAL.with(|j| j.released.clone());
        let notified = released.notified();
        if is_durable(batch) {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_batch_is_durable_once_released_and_batch_zero_always() {
        assert!(is_durable(0));
        let batch = append(b"r1");
        append(b"r2");
        assert!(!is_durable(batch));
        assert!(has_open_records());
        let sealed = seal();
        assert_eq!((sealed.number, sealed.count), (batch, 2));
        assert_eq!(sealed.records, b"r1r2");
        assert!(!has_open_records());
        let next = append(b"r3");
        assert_eq!(
            next,
            batch + 1,
            "records after the seal go to the next batch"
        );
        let ran = Rc::new(Cell::new(0));
        let (a, b) = (ran.clone(), ran.clone());
        after(batch, move || a.set(a.get() + 1));
        after(next, move || b.set(b.get() + 10));
        assert_eq!(ran.get(), 0);
        release(batch);
        assert!(is_durable(batch) && !is_durable(next));
        assert_eq!(ran.get(), 1, "only what waited on the released batch ran");
        let _ = seal();
        release(next);
        assert_eq!(ran.get(), 11);
        after(next, {
            let ran = ran.clone();
            move || ran.set(ran.get() + 100)
        });
        assert_eq!(ran.get(), 111, "a durable batch runs at once");
    }
}
