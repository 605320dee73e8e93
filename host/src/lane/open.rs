//! The lane's table of live documents: opening a document on first use (its lease taken
//! and its snapshot read first, while other connections for it wait), waiting for a
//! crashed one's last save, asking another host to hand a document back, forgetting a
//! document, retiring documents this host may no longer serve, and counting traps for
//! the crash-loop guard.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::WebhookEvent;
use crate::document::{Document, DocumentCell, DocumentError, DocumentKey};
use crate::guest::plugin::Plugin;
use crate::lane::Lane;
use crate::store::{Lease, Opened, StorageError};

/// How long a connection waits for a crashed document's last save before it is told to
/// come back later (1013 / 503).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a host waiting for a document another host holds asks again.
const HANDOFF_POLL: Duration = Duration::from_millis(150);

/// The close a document this host may no longer serve ends its sockets with: 1012
/// (service restart), so that clients reconnect and reach its new host. Unlike a
/// hand-back's close, it says that what the client sent lately may not have applied.
const LEASE_LOST: (u16, &str) = (
    1012,
    "this host lost the document's lease: messages since its last save may be lost",
);

impl Lane {
    /// Whether this host may apply anything to a document opened under `lease`: always
    /// with the file store; with a shared store, while that lease holds.
    pub fn holds(&self, lease: Lease) -> bool {
        self.services
            .storage
            .leases()
            .is_none_or(|clock| clock.holds(lease))
    }

    /// The live document `document` of `plugin`, opening it if needed for `client`
    /// (which may open only so many documents a second). Connections that ask while it
    /// opens wait for that one opening.
    pub async fn document(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
        client: IpAddr,
    ) -> Result<DocumentCell, DocumentError> {
        self.document_for(plugin, document, Some(client)).await
    }

    /// [`Lane::document`] for the host itself (reopening what the journal holds after a
    /// restart): no client's open rate applies.
    pub async fn document_unlimited(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
    ) -> Result<DocumentCell, DocumentError> {
        self.document_for(plugin, document, None).await
    }

    async fn document_for(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
        client: Option<IpAddr>,
    ) -> Result<DocumentCell, DocumentError> {
        let key = (plugin.name.clone(), document.to_owned());
        loop {
            if self.is_shutting_down() {
                return Err(DocumentError::Moved);
            }
            let existing = self.documents.borrow().get(&key).cloned();
            if let Some(doc) = existing {
                let (ended, saving, lease, leaving) = {
                    let d = doc.borrow();
                    (
                        d.is_crashed() || d.is_retired(),
                        d.persistence.saving,
                        d.persistence.lease,
                        d.is_leaving(),
                    )
                };
                if !ended && leaving {
                    // Its sockets are draining before it leaves: nobody joins meanwhile.
                    return Err(DocumentError::Moved);
                }
                if !ended && self.holds(lease) {
                    return Ok(doc);
                }
                if !ended {
                    // Opened under a lease this host no longer holds.
                    self.retire(&key, &doc, "lapsed");
                } else if saving {
                    // Its last checkpoint is still being written: reopening now would
                    // read the old state, and the write would then overwrite what the
                    // new instance saves.
                    return Err(DocumentError::Settling);
                }
                self.forget(&key, &doc);
            }
            let opening = self.opening.borrow().get(&key).cloned();
            match opening {
                Some(done) => done.notified().await,
                None => break,
            }
        }
        if let Some(retry_in) = self.crashes.backoff(&key, Instant::now()) {
            return Err(DocumentError::CrashLoop(retry_in));
        }
        if let Some(clock) = self.services.storage.leases()
            && !clock.valid_now()
        {
            return Err(DocumentError::StoreUnavailable(
                "this host's lease in the shared store has lapsed; retry".into(),
            ));
        }
        if let Some(client) = client {
            self.opens
                .take(client, Instant::now())
                .map_err(DocumentError::OpenRateLimited)?;
        }
        let done = Rc::new(Notify::new());
        self.opening.borrow_mut().insert(key.clone(), done.clone());
        let opened = self.open_new(plugin, &key).await;
        self.opening.borrow_mut().remove(&key);
        done.notify_waiters();
        opened
    }

    /// Takes the document in the store, instantiates it and puts it in the table.
    async fn open_new(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        key: &DocumentKey,
    ) -> Result<DocumentCell, DocumentError> {
        let document = key.1.as_str();
        let limits = self.limits_for(&plugin.name);
        // Journal mode: what the document did on this lane, made durable first (a crash
        // with records still in flight must not fork the journal, and a shared store's
        // takeover would fence them). A plugin back in checkpoint mode still replays
        // what its journal held at startup.
        let local = if limits.journaled || self.services.has_recovered(key) {
            let tail = self.journal_tail(key).inspect_err(|e| {
                self.metrics.journal.unreplayable();
                tracing::error!(lane = self.index, plugin = %plugin.name, doc = %document, "refusing to open: {e}");
            })?;
            let last = tail.borrow().last_batch();
            crate::document::journal::wait_durable(last).await;
            Some(tail)
        } else {
            None
        };
        let Opened {
            lease,
            snapshot,
            journal,
        } = self.take(plugin, document).await?;
        // A shared store's journal is what is durable, whichever host wrote it.
        let tail = match (local, journal) {
            (local, Some(entries)) if local.is_some() || !entries.is_empty() => {
                let tail = local.unwrap_or_else(|| crate::document::journal::tail(key));
                tail.borrow_mut().replace(entries);
                Some(tail)
            }
            (local, _) => local,
        };
        let incarnation = match self.services.storage.leases() {
            Some(_) => lease.epoch,
            None => crate::guest::clock::unix_ms(),
        };
        let started = Instant::now();
        let metrics = self.services.metrics.plugin(&plugin.name, self.index);
        let versions = self
            .replay_versions(plugin, snapshot.as_ref(), tail.as_ref())
            .await;
        let created = versions.and_then(|(opener, versions)| {
            let slot = self.services.slots.for_document().ok_or_else(|| {
                DocumentError::PoolExhausted(format!(
                    "{} documents are live",
                    self.services.config.limits.max_documents
                ))
            })?;
            let mut doc = Document::open(
                opener,
                document,
                limits.clone(),
                metrics,
                slot,
                snapshot.as_ref(),
                tail,
                incarnation,
            )?;
            if let Some(snapshot) = snapshot {
                doc.restore(&snapshot)?;
                // Before the replay: it goes on from them, and reports gone the
                // connections it leaves open but sessions'.
                doc.restore_sessions(&snapshot);
                if doc.tail().is_some() {
                    doc.set_base(Some(Arc::new(snapshot)));
                }
            }
            // After `mark_opened`: what the replay changes is saved at the next
            // checkpoint, which lets the journal go.
            doc.mark_opened()?;
            Ok((doc, versions))
        });
        let opened = match created {
            Ok((mut doc, versions)) => match self.replay(&mut doc, &versions).await {
                Ok(replayed) => {
                    if replayed > 0 {
                        self.metrics.journal.replayed(replayed);
                        tracing::info!(lane = self.index, plugin = %plugin.name, doc = %document, "replayed {replayed} input(s) from the journal");
                    }
                    doc.set_versions(versions);
                    self.move_replayed_to(&mut doc, plugin, &limits);
                    doc.persistence.lease = lease;
                    let carried = doc.socketless_sessions();
                    Ok((doc, carried))
                }
                Err(e) => {
                    self.metrics.journal.unreplayable();
                    tracing::error!(lane = self.index, plugin = %plugin.name, doc = %document, "refusing to open: {e}");
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let (doc, carried) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                if matches!(e, DocumentError::PoolExhausted(_)) {
                    tracing::warn!(
                        lane = self.index,
                        "instance pool exhausted: cannot open {}/{document}; raise limits.max_documents (now {}) ({e})",
                        plugin.name,
                        self.services.config.limits.max_documents
                    );
                }
                // Not served here after all: another host may take it at once.
                self.release_later(key, lease);
                return Err(e);
            }
        };
        tracing::debug!(lane = self.index, plugin = %plugin.name, doc = %document, epoch = lease.epoch, "opened in {:?}", started.elapsed());
        let wake = doc.wake.clone();
        let cell: DocumentCell = Rc::new(RefCell::new(doc));
        self.documents
            .borrow_mut()
            .insert(key.clone(), cell.clone());
        self.metrics.documents.set(self.document_count() as i64);
        self.webhook(&plugin.name, WebhookEvent::Opened, document, None, None);
        crate::lane::departure::park_carried(self, key, &cell, carried);
        crate::lane::task::spawn(
            &self.services.health,
            "housekeeping",
            crate::lane::housekeeping::drive(self.clone(), key.clone(), Rc::downgrade(&cell), wake),
        );
        Ok(cell)
    }

    /// Takes the document's lease and reads its snapshot. A document another live host
    /// holds is asked back from it (it saves and lets go), for up to the hand-off
    /// timeout.
    async fn take(&self, plugin: &Plugin, document: &str) -> Result<Opened, DocumentError> {
        let storage = &self.services.storage;
        let deadline = Instant::now() + self.services.config.store.handoff_timeout();
        loop {
            match storage.open(&plugin.name, document, &plugin.version).await {
                Ok(opened) => return Ok(opened),
                Err(StorageError::HeldElsewhere {
                    holder,
                    host,
                    epoch,
                }) => {
                    if Instant::now() >= deadline {
                        return Err(DocumentError::HeldElsewhere(host));
                    }
                    tracing::debug!(lane = self.index, plugin = %plugin.name, doc = %document, "held by host {host}: asking it to let go");
                    // Asked again on every try: a notification sent while that host's
                    // listener reconnected is lost.
                    let _ = storage
                        .ask_release(holder, &plugin.name, document, epoch)
                        .await;
                    tokio::time::sleep(HANDOFF_POLL).await;
                }
                Err(StorageError::Unavailable(why)) => {
                    return Err(DocumentError::StoreUnavailable(why));
                }
                Err(e @ StorageError::NewerVersion { .. }) => {
                    return Err(DocumentError::NewerVersion(format!(
                        "{}/{document} was {e}",
                        plugin.name
                    )));
                }
                Err(e) => {
                    tracing::error!(lane = self.index, plugin = %plugin.name, doc = %document, "refusing to open: {e}");
                    return Err(DocumentError::Storage(e.to_string()));
                }
            }
        }
    }

    /// A journal-mode document's tail on this lane, with what the journal found of it
    /// at startup put first (once).
    fn journal_tail(
        &self,
        key: &DocumentKey,
    ) -> Result<Rc<RefCell<crate::document::journal::Tail>>, DocumentError> {
        let tail = crate::document::journal::tail(key);
        if let Some(recovered) = self.services.recovered_entries(key) {
            let recovered = recovered.map_err(DocumentError::Unreplayable)?;
            tail.borrow_mut().put_first(recovered);
        }
        Ok(tail)
    }

    /// Keeps every open of `key` on this lane waiting until the guard is dropped (while
    /// its lease is released: an open in between would take it anew, and the release
    /// would then free that new lease).
    pub(super) fn hold_opens(self: &Rc<Self>, key: &DocumentKey) -> OpensHeld {
        let done = Rc::new(Notify::new());
        self.opening.borrow_mut().insert(key.clone(), done.clone());
        OpensHeld {
            lane: self.clone(),
            key: key.clone(),
            done,
        }
    }

    /// Lets the store know a document is not served here any more (off this task: the
    /// caller goes on at once).
    pub fn release_later(&self, key: &DocumentKey, lease: Lease) {
        if self.services.storage.leases().is_none() {
            return;
        }
        let storage = self.services.storage.clone();
        let (plugin, document) = key.clone();
        crate::lane::task::spawn(&self.services.health, "release", async move {
            if let Err(e) = storage.release(&plugin, &document, lease).await {
                tracing::warn!(plugin = %plugin, doc = %document, "cannot release the lease: {e}");
            }
        });
    }

    /// Ends a document this host may no longer serve (`why`: `fenced`, another host
    /// took it; `lapsed`, this host's lease ran out): its sockets close with 1012 and it
    /// leaves the table without a save.
    pub fn retire(&self, key: &DocumentKey, cell: &DocumentCell, why: &'static str) {
        if cell.borrow().is_retired() {
            return;
        }
        tracing::warn!(lane = self.index, plugin = %key.0, doc = %key.1, "dropping the document: {}", if why == "fenced" { "another host took it" } else { "this host's lease lapsed" });
        cell.borrow_mut().retire(LEASE_LOST.0, LEASE_LOST.1);
        self.forget(key, cell);
        self.services.metrics.store().leases_lost(why, 1);
    }

    /// Ends every live document (this host's lease lapsed).
    pub fn retire_all(&self, why: &'static str) {
        for (key, doc) in self.live_documents() {
            self.retire(&key, &doc, why);
        }
    }

    /// [`Lane::document`], waiting (briefly, without blocking the lane) while a crashed
    /// instance's last save is still being written, instead of refusing the client.
    pub async fn document_when_settled(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
        client: IpAddr,
    ) -> Result<DocumentCell, DocumentError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            match self.document(plugin, document, client).await {
                Err(DocumentError::Settling) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(DocumentError::Settling) => {
                    return Err(DocumentError::CrashLoop(Duration::from_secs(1)));
                }
                other => return other,
            }
        }
    }

    /// Removes `cell` from the table (if it is still the document under `key`); a crashed
    /// document counts towards the crash-loop guard once.
    pub fn forget(&self, key: &DocumentKey, cell: &DocumentCell) {
        let removed = {
            let mut docs = self.documents.borrow_mut();
            let current = docs.get(key).is_some_and(|d| Rc::ptr_eq(d, cell));
            if current {
                docs.remove(key);
            }
            current
        };
        self.metrics.documents.set(self.document_count() as i64);
        if removed {
            self.webhook(&key.0, WebhookEvent::Closed, &key.1, None, None);
            crate::document::journal::drop_tail_if_empty(key);
        }
        if removed && cell.borrow().is_crashed() {
            self.record_crash(key);
        }
    }

    fn record_crash(&self, key: &DocumentKey) {
        if let Some(backoff) = self.crashes.record(key, Instant::now()) {
            tracing::warn!(
                lane = self.index,
                plugin = %key.0,
                doc = %key.1,
                "{} traps within {:?}: refusing connections for {backoff:?}",
                self.crashes.traps(),
                self.crashes.window()
            );
        }
    }
}

/// Opens of a document wait while this lives ([`Lane::hold_opens`]).
pub(super) struct OpensHeld {
    lane: Rc<Lane>,
    key: DocumentKey,
    done: Rc<Notify>,
}

impl Drop for OpensHeld {
    fn drop(&mut self) {
        let mut opening = self.lane.opening.borrow_mut();
        if opening
            .get(&self.key)
            .is_some_and(|d| Rc::ptr_eq(d, &self.done))
        {
            opening.remove(&self.key);
        }
        drop(opening);
        self.done.notify_waiters();
    }
}
