//! Each live document's driver task: fires its timers, saves it while it changes, drops it
//! once it has been idle for the grace period (only after a successful save), and forgets
//! it when it crashed.
//!
//! Saving takes the snapshot on the lane (a guest call, between two events of the
//! document) and hands it to the store (the file store writes on tokio's blocking pool,
//! PostgreSQL on the store's thread), so a slow disk or database never stalls the lane.
//! A write the store refuses because another host took the document ends the document
//! here at once.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::WebhookEvent;
use crate::document::{Document, DocumentCell, DocumentKey};
use crate::lane::Lane;
use crate::net::webhook::Event;
use crate::store::StorageError;

/// The longest wait between two attempts to save a document whose saves fail.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Outcome of [`save`].
#[derive(Debug)]
pub enum Saved {
    /// Written (or nothing had changed).
    Clean,
    /// The write failed; retried later.
    Failed(StorageError),
    /// Another save is in flight, or the document crashed.
    Skipped,
    /// Another host took the document: it was dropped here.
    Fenced,
}

/// Saves `cell` if it changed since its last save.
pub async fn save(lane: &Lane, key: &DocumentKey, cell: &DocumentCell) -> Saved {
    let (snapshot, generation, hash, export) = {
        let mut doc = cell.borrow_mut();
        if !doc.is_dirty() {
            return Saved::Clean;
        }
        if doc.persistence.saving {
            return Saved::Skipped;
        }
        let (snapshot, generation) = match doc.snapshot() {
            Ok(taken) => taken,
            Err(_) => return Saved::Skipped, // crashed: logged by the document
        };
        let hash = snapshot.content_hash();
        // Journal mode: entries since the last write go only with a write that covers
        // them (a document only read would otherwise keep them for good).
        let journal_waits = doc.tail().is_some_and(|t| !t.borrow().is_empty());
        if doc.persistence.saved_hash == Some(hash) && !doc.ids_unsaved() && !journal_waits {
            doc.mark_saved(generation);
            doc.persistence.next_save = Instant::now() + lane.services.config.checkpoint_interval();
            return Saved::Clean;
        }
        doc.persistence.saving = true;
        doc.persistence.saved_hash = None;
        // The backend's copy is taken with the snapshot, so both say the same.
        let export = lane
            .services
            .webhooks
            .wants(&key.0, WebhookEvent::Saved)
            .then(|| doc.export(&snapshot.state));
        (snapshot, generation, hash, export)
    };
    let timers = snapshot.timers.len();
    let ids = snapshot.continuity.map(|c| c.next_connection_id);
    let covered = snapshot.continuity.map_or(0, |c| c.inputs);
    let carries_sessions = !snapshot.sessions.is_empty();
    let lease = cell.borrow().persistence.lease;
    // Journal mode: once written, it is what a trap rebuilds the document from.
    let base = cell
        .borrow()
        .tail()
        .is_some()
        .then(|| std::sync::Arc::new(snapshot.clone()));
    // Journal mode: the snapshot holds inputs whose output waits for their records; it
    // is written only once they are durable, so no state outlives a journal write that
    // failed (the document is then dropped and reopens from what is durable).
    if !crate::lane::journal::durable(cell).await {
        cell.borrow_mut().persistence.saving = false;
        return Saved::Skipped;
    }
    let started = Instant::now();
    let written = lane
        .services
        .storage
        .save(&key.0, &key.1, lease, snapshot)
        .await;
    if let Err(StorageError::Fenced { .. }) = written {
        cell.borrow_mut().persistence.saving = false;
        lane.retire(key, cell, "fenced");
        return Saved::Fenced;
    }
    let mut doc = cell.borrow_mut();
    doc.persistence.saving = false;
    doc.metrics().saved(written.is_ok(), started.elapsed());
    let checkpoint = lane.services.config.checkpoint_interval();
    match written {
        Ok(()) => {
            doc.mark_saved(generation);
            if doc.tail().is_some() {
                doc.set_base(base);
            }
            if let Some(tail) = doc.tail() {
                tail.borrow_mut().checkpointed(covered);
                if let Some(journal) = &lane.services.journal {
                    journal.checkpointed(&key.0, &key.1, covered);
                }
            }
            doc.persistence.saved_hash = Some(hash);
            doc.persistence.sessions_written = carries_sessions;
            if let Some(ids) = ids {
                doc.persistence.saved_ids = ids;
            }
            doc.persistence.failures = 0;
            doc.persistence.next_save = Instant::now() + checkpoint;
            tracing::debug!(lane = lane.index, plugin = %key.0, doc = %key.1, "saved with {timers} timer(s) in {:?}", started.elapsed());
            if let Some(export) = export {
                // The export holds the state as of the document's last record: it leaves
                // once that record is durable (journal mode).
                let services = lane.services.clone();
                let (plugin, document) = key.clone();
                crate::document::journal::after(doc.last_batch(), move || {
                    services.webhooks.emit(
                        &plugin,
                        Event {
                            kind: WebhookEvent::Saved,
                            document,
                            connection: None,
                            code: None,
                            export: Some(export),
                        },
                    );
                });
            }
            Saved::Clean
        }
        Err(e) => {
            let p = &mut doc.persistence;
            p.failures += 1;
            let retry = Duration::from_secs(1 << (p.failures - 1).min(5)).min(MAX_RETRY);
            p.next_save = Instant::now() + retry;
            lane.count_failed_save();
            tracing::error!(
                lane = lane.index,
                plugin = %key.0,
                doc = %key.1,
                "save failed (attempt {}, retrying in {retry:?}; the document stays in memory): {e}",
                p.failures
            );
            Saved::Failed(e)
        }
    }
}

/// When `doc`, now without connections, may leave memory: its idle grace after the last
/// connection left, or, if no WebSocket ever joined it, the (shorter) HTTP grace after its
/// last request. `None` while it has connections.
fn idle_end(doc: &Document, (grace, http_grace): (Duration, Duration)) -> Option<Instant> {
    let since = doc.idle_since()?;
    Some(if doc.had_sockets() {
        since + grace
    } else {
        since.max(doc.last_activity()) + http_grace
    })
}

/// The idle graces of [`idle_end`], read from the configuration where they are needed
/// (kept, they would make every live document's task larger).
fn graces(lane: &Lane) -> (Duration, Duration) {
    let config = &lane.services.config;
    (config.idle_grace(), config.http_idle_grace())
}

/// Drives one document until it is dropped. Holds only a weak reference: the lane's table
/// owns the document.
pub async fn drive(
    lane: Rc<Lane>,
    key: DocumentKey,
    doc: Weak<RefCell<Document>>,
    wake: Rc<Notify>,
) {
    loop {
        let next = {
            let Some(cell) = doc.upgrade() else { return };
            let d = cell.borrow();
            if d.is_retired() {
                // Dropped by the lane already (fenced, lapsed, handed back).
                return;
            }
            if d.is_crashed() {
                let lease = d.persistence.lease;
                drop(d);
                lane.forget(&key, &cell);
                lane.release_later(&key, lease);
                return;
            }
            let idle_end = idle_end(&d, graces(&lane));
            // A changed document is saved at its checkpoint, or when its grace ends if
            // that is sooner (unless saves are failing: then it waits for its retry); an
            // unchanged one is dropped when its grace ends.
            let (save_at, drop_at) = if d.is_dirty() {
                let next = d.persistence.next_save;
                let sooner = idle_end.filter(|_| d.persistence.failures == 0);
                (Some(sooner.map_or(next, |end| end.min(next))), None)
            } else {
                (None, idle_end)
            };
            // A leaving document's timers wait for the host that takes it next.
            let timer = d.next_timer().filter(|_| !d.is_leaving());
            [timer, save_at, drop_at].into_iter().flatten().min()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => continue,
                }
            }
            None => {
                wake.notified().await;
                continue;
            }
        }
        let Some(cell) = doc.upgrade() else { return };
        if lane.is_shutting_down() {
            // The shutdown saved the document; from now on nothing may change it (a timer
            // firing now would be lost: it is in the saved state and fires after the
            // restart instead).
            return;
        }
        let lease = cell.borrow().persistence.lease;
        if !lane.holds(lease) {
            // Nothing may change a document whose lease does not hold any more.
            lane.retire(&key, &cell, "lapsed");
            return;
        }
        let now = Instant::now();
        if !cell.borrow().is_leaving() {
            cell.borrow_mut().fire_due_timers(now);
        }
        let (dirty, save_due) = {
            let d = cell.borrow();
            (d.is_dirty(), d.persistence.next_save <= now)
        };
        let idle_over =
            || idle_end(&cell.borrow(), graces(&lane)).is_some_and(|end| end <= Instant::now());
        if dirty && (save_due || idle_over()) {
            // Boxed: held inline, a save (most of this future) would make every live
            // document's task that much larger while it waits, which is most of the time.
            match Box::pin(save(&lane, &key, &cell)).await {
                Saved::Failed(_) => continue, // never drop a document whose latest state is unsaved
                Saved::Fenced => return,
                Saved::Clean | Saved::Skipped => {}
            }
        }
        if idle_over() && !cell.borrow().is_dirty() && !lane.is_shutting_down() {
            tracing::debug!(lane = lane.index, plugin = %key.0, doc = %key.1, "idle: saved and dropped");
            lane.forget(&key, &cell);
            lane.release_later(&key, lease);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::lane::task::future_size::{FutureSize, TaskCell};

    /// Every live document has a driver task, most of the time waiting for its next
    /// timer, save or drop. A save held inline made it 896 bytes.
    #[test]
    fn a_documents_driver_is_small_while_it_waits() {
        let driver = super::drive.task_cell();
        assert!(
            driver <= 512,
            "a driver's cell: {driver} (future {} bytes)",
            super::drive.future_size()
        );
    }
}
