//! Checkpoints written in batches: every save waiting when a writer is free goes into
//! one `UPDATE ... FROM unnest(...)` (up to [`MAX_BATCH`]), so ten thousand documents
//! that change all the time cost a few statements a second, not thousands. Each row is
//! written only if its epoch and holder still match; a row the statement did not
//! return was taken by another host (fenced).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::encode;
use crate::store::postgres::Inner;
use crate::store::{Lease, Snapshot, StorageError};

/// Saves written by one statement at most.
const MAX_BATCH: usize = 256;

const SAVE: &str = "
UPDATE wasmroom.documents AS d
SET snapshot = u.snapshot, plugin_version = u.version,
    size = coalesce(length(u.snapshot), 0), saved_at = now()
FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::bytea[], $6::text[])
     AS u(plugin, doc, epoch, holder, snapshot, version)
WHERE d.plugin = u.plugin AND d.doc = u.doc AND d.epoch = u.epoch AND d.owner = u.holder
RETURNING d.plugin, d.doc";

/// One save waiting for the writer.
#[derive(Debug)]
pub(super) struct SaveRequest {
    pub(super) plugin: String,
    pub(super) document: String,
    pub(super) lease: Lease,
    pub(super) snapshot: Snapshot,
    pub(super) reply: oneshot::Sender<Result<(), StorageError>>,
}

/// The writer: takes every waiting save, writes them in one statement, answers each.
/// Up to half the pool's connections write batches at once, so that PostgreSQL can
/// commit them together (one WAL flush for several) while the other half stays free for
/// heartbeats and opens. Batches never hold two saves of one document: a document has
/// at most one save in flight.
pub(super) async fn run(inner: Arc<Inner>, mut requests: mpsc::UnboundedReceiver<SaveRequest>) {
    let writers = Arc::new(Semaphore::new((inner.settings.pool_size / 2).max(1)));
    while let Some(first) = requests.recv().await {
        // Waiting for a writer lets more saves join this batch.
        let Ok(permit) = writers.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let written = write(&inner, &batch).await;
            drop(permit);
            answer(&inner, batch, &written);
        });
    }
}

/// Tells each save of `batch` how it went.
fn answer(
    inner: &Inner,
    batch: Vec<SaveRequest>,
    written: &Result<HashSet<(String, String)>, StorageError>,
) {
    for request in batch {
        let key = (request.plugin, request.document);
        let answer = match written {
            Ok(saved) if saved.contains(&key) => Ok(()),
            Ok(_) => {
                inner.metrics.fenced_write();
                Err(StorageError::Fenced {
                    document: format!("{}/{}", key.0, key.1),
                })
            }
            Err(e) => Err(StorageError::Unavailable(e.to_string())),
        };
        let _ = request.reply.send(answer);
    }
}

/// Writes a batch; returns the documents whose row matched.
async fn write(
    inner: &Inner,
    batch: &[SaveRequest],
) -> Result<HashSet<(String, String)>, StorageError> {
    let mut plugins = Vec::with_capacity(batch.len());
    let mut docs = Vec::with_capacity(batch.len());
    let mut epochs = Vec::with_capacity(batch.len());
    let mut holders = Vec::with_capacity(batch.len());
    let mut snapshots = Vec::with_capacity(batch.len());
    let mut versions = Vec::with_capacity(batch.len());
    for r in batch {
        plugins.push(r.plugin.clone());
        docs.push(r.document.clone());
        epochs.push(r.lease.epoch as i64);
        holders.push(r.lease.holder as i64);
        // As in the file store: nothing to keep is no snapshot at all.
        let empty = r.snapshot.keeps_nothing();
        snapshots.push((!empty).then(|| encode(&r.snapshot, &r.plugin, &r.document)));
        versions.push(r.snapshot.plugin_version.clone());
    }
    let client = inner.client().await?;
    let rows = inner
        .timed("save", async {
            // Prepared once per pooled connection: one round trip per batch.
            let save = client.prepare_cached(SAVE).await?;
            client
                .query(
                    &save,
                    &[&plugins, &docs, &epochs, &holders, &snapshots, &versions],
                )
                .await
        })
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
