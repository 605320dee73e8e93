//! The lane's table of live documents: opening a document on first use (its saved state
//! read first), waiting for a crashed one's last save, forgetting a document, and counting
//! traps for the crash-loop guard.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::document::{Document, DocumentCell, DocumentError, DocumentKey};
use crate::guest::plugin::Plugin;
use crate::lane::Lane;

/// How long a connection waits for a crashed document's last save before it is told to
/// come back later (1013 / 503).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

impl Lane {
    /// The live document `document` of `plugin`, opening it if needed.
    pub fn document(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
    ) -> Result<DocumentCell, DocumentError> {
        let key = (plugin.name.clone(), document.to_owned());
        let existing = self.documents.borrow().get(&key).cloned();
        if let Some(doc) = existing {
            if !doc.borrow().is_crashed() {
                return Ok(doc);
            }
            if doc.borrow().persistence.saving {
                // Its last checkpoint is still being written: reopening now would read the
                // file before that write lands, and the write would then overwrite what
                // the new instance saves.
                return Err(DocumentError::Settling);
            }
            self.forget(&key, &doc);
        }
        if let Some(retry_in) = self.crashes.backoff(&key, Instant::now()) {
            return Err(DocumentError::CrashLoop(retry_in));
        }
        // A small file read: from the page cache in the common case. Reading it before
        // opening keeps "one document, one instance" simple (no await between the lookup
        // and the insertion below).
        let saved = self
            .services
            .storage
            .load(&plugin.name, document)
            .map_err(|e| {
                tracing::error!(lane = self.index, plugin = %plugin.name, doc = %document, "refusing to open: {e}");
                DocumentError::Storage(e.to_string())
            })?;
        let started = Instant::now();
        let metrics = self.services.metrics.plugin(&plugin.name, self.index);
        let doc = match Document::open(
            plugin.clone(),
            document,
            self.limits_for(&plugin.name),
            metrics,
        )
        .and_then(|mut doc| {
            if let Some(snapshot) = &saved {
                doc.restore(snapshot)?;
            }
            Ok(doc)
        }) {
            Ok(doc) => doc,
            Err(e) => {
                if matches!(e, DocumentError::PoolExhausted(_)) {
                    tracing::warn!(
                        lane = self.index,
                        "instance pool exhausted: cannot open {}/{document}; raise limits.max_documents (now {}) ({e})",
                        plugin.name,
                        self.services.config.limits.max_documents
                    );
                }
                return Err(e);
            }
        };
        tracing::debug!(lane = self.index, plugin = %plugin.name, doc = %document, "opened in {:?}", started.elapsed());
        let wake = doc.wake.clone();
        let cell: DocumentCell = Rc::new(RefCell::new(doc));
        self.documents
            .borrow_mut()
            .insert(key.clone(), cell.clone());
        self.metrics.documents.set(self.document_count() as i64);
        tokio::task::spawn_local(crate::lane::housekeeping::drive(
            self.clone(),
            key,
            Rc::downgrade(&cell),
            wake,
        ));
        Ok(cell)
    }

    /// [`Lane::document`], waiting (briefly, without blocking the lane) while a crashed
    /// instance's last save is still being written, instead of refusing the client.
    pub async fn document_when_settled(
        self: &Rc<Self>,
        plugin: &Arc<Plugin>,
        document: &str,
    ) -> Result<DocumentCell, DocumentError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            match self.document(plugin, document) {
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
