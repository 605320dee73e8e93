//! The shared store as a lane sees it ([`Storage`]): every call runs on the store's
//! own runtime, and the lane only awaits the answer.

use std::sync::Arc;

use crate::store::lease::LeaseClock;
use tokio::sync::oneshot;

use crate::store::postgres::{PostgresStore, batch, journal, sql};
use crate::store::{Lease, Opened, Snapshot, Storage, StorageError};

#[async_trait::async_trait]
impl Storage for PostgresStore {
    async fn open(
        &self,
        plugin: &str,
        document: &str,
        version: &str,
    ) -> Result<Opened, StorageError> {
        let inner = self.inner.clone();
        let (plugin, document, version) =
            (plugin.to_owned(), document.to_owned(), version.to_owned());
        self.on_store(async move { inner.open(&plugin, &document, &version).await })
            .await
    }

    async fn save(
        &self,
        plugin: &str,
        document: &str,
        lease: Lease,
        snapshot: Snapshot,
    ) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        let request = batch::SaveRequest {
            plugin: plugin.to_owned(),
            document: document.to_owned(),
            lease,
            snapshot,
            reply,
        };
        if self.inner.saves.send(request).is_err() {
            return Err(StorageError::Unavailable("the store has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StorageError::Unavailable("the store has stopped".into())))
    }

    async fn release(
        &self,
        plugin: &str,
        document: &str,
        lease: Lease,
    ) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        let (plugin, document) = (plugin.to_owned(), document.to_owned());
        self.on_store(async move { inner.release(&plugin, &document, lease).await })
            .await
    }

    async fn release_unheld(
        &self,
        plugin: &str,
        document: &str,
        epoch: u64,
    ) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        let (plugin, document) = (plugin.to_owned(), document.to_owned());
        let lease = Lease {
            epoch,
            holder: inner.clock.holder(),
        };
        self.on_store(async move { inner.release(&plugin, &document, lease).await })
            .await
    }

    async fn ask_release(
        &self,
        holder: u64,
        plugin: &str,
        document: &str,
        epoch: u64,
    ) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        let payload = sql::release_request(epoch, plugin, document);
        self.on_store(async move {
            inner
                .notify(&format!("wasmroom_host_{holder}"), &payload)
                .await
        })
        .await
    }

    fn leases(&self) -> Option<&Arc<LeaseClock>> {
        Some(&self.inner.clock)
    }

    fn journal(&self) -> Option<Arc<dyn crate::store::journal::JournalSink>> {
        Some(Arc::new(journal::PostgresJournal {
            runtime: self.runtime.clone(),
            inner: self.inner.clone(),
        }))
    }
}
