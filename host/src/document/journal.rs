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
use std::rc::{Rc, Weak};

use tokio::sync::Notify;

use crate::document::outbox::Outbox;

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

/// What waits for a batch to be durable.
type Deferred = Box<dyn FnOnce()>;

struct LaneJournal {
    /// The batch records are appended to now.
    open: Cell<u64>,
    /// Every batch up to this one is durable (released).
    durable: Cell<u64>,
    records: RefCell<Vec<u8>>,
    count: Cell<usize>,
    /// Queues holding frames (or a close) of a batch not yet durable, by batch.
    waiting: RefCell<Vec<(u64, Vec<Weak<Outbox>>)>>,
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

/// A guest call's journal record. Until records carry the inputs themselves (stage 3 of
/// the journal), it names the call and the document: enough for the output gate, which
/// needs a record per input and its size.
pub(crate) fn call_record(what: &str, document: &str) -> Vec<u8> {
    let mut record = Vec::with_capacity(5 + what.len() + document.len());
    record.push(what.len() as u8);
    record.extend_from_slice(what.as_bytes());
    record.extend_from_slice(&(document.len() as u32).to_le_bytes());
    record.extend_from_slice(document.as_bytes());
    record
}

/// Whether a guest call of this export is an input the journal records: everything but
/// `snapshot` and `restore`, which move state out of and into an instance.
pub(crate) fn is_input(export: &str) -> bool {
    !matches!(export, "snapshot" | "restore")
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
pub(crate) fn wait_for(batch: u64, outbox: Weak<Outbox>) {
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
