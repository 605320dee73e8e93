//! The input journal on the shared store (journal mode with PostgreSQL; ARCHITECTURE.md,
//! "the input journal"). A lane's batch becomes one row per document in
//! `wasmroom.journal`, all inserted by one statement that is one commit: the batch is
//! durable once PostgreSQL answered.
//!
//! - **Fencing.** A row lands only while the document's row still names this host and
//!   the epoch its records carry (the lease's), and the batch lands whole or not at all:
//!   a host that lost a document learns it at its next commit, and its output for the
//!   batch never leaves. The key `(plugin, doc, first_seq)` closes the window between
//!   that check and a takeover: the new holder reads the journal after taking the lease
//!   and goes on from the last input it read, so a late row of the old holder and the new
//!   holder's next one claim the same number, and only the first to commit lands (the
//!   other host's commit fails, and it drops the document).
//! - **Takeover.** Opening a document reads its rows after taking the lease (a second
//!   statement: a CTE would read what was there before the lease was taken).
//! - **Trimming.** A checkpoint that covers a row's inputs deletes it, off the lane.

use std::collections::HashMap;
use std::sync::Arc;

use wasmroom_wire::journal::{Entry, Frames, Stop};

use crate::store::journal::{Batch, JournalSink};
use crate::store::postgres::{Inner, StoreError, Target, schema};
use crate::store::{Snapshot, StorageError, decode};

/// Inserts a batch's rows if every document's row is still this host's under the
/// epoch the records carry; returns the rows inserted (none unless all are).
const APPEND: &str = "
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::bytea[])
        AS u(plugin, doc, first_seq, last_seq, epoch, records)
), held AS (
    SELECT u.* FROM u JOIN wasmroom.documents d
    ON d.plugin = u.plugin AND d.doc = u.doc AND d.epoch = u.epoch AND d.owner = $7
)
INSERT INTO wasmroom.journal (plugin, doc, first_seq, last_seq, epoch, records)
SELECT plugin, doc, first_seq, last_seq, epoch, records FROM held
WHERE (SELECT count(*) FROM held) = $8
RETURNING plugin, doc";

const READ: &str = "
SELECT records FROM wasmroom.journal WHERE plugin = $1 AND doc = $2 ORDER BY first_seq";

const TRIM: &str = "
DELETE FROM wasmroom.journal WHERE plugin = $1 AND doc = $2 AND last_seq <= $3";

/// The journal sink of a host on the shared store.
#[derive(Debug)]
pub(super) struct PostgresJournal {
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) inner: Arc<Inner>,
}

#[async_trait::async_trait]
impl JournalSink for PostgresJournal {
    async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.append(&batch).await })
            .await
            .unwrap_or_else(|e| Err(StorageError::Unavailable(format!("store task: {e}"))))
    }

    fn checkpointed(&self, plugin: &str, document: &str, seq: u64) {
        let inner = self.inner.clone();
        let (plugin, document) = (plugin.to_owned(), document.to_owned());
        self.runtime.spawn(async move {
            if let Err(e) = inner.trim(&plugin, &document, seq).await {
                // The next checkpoint deletes these rows too.
                tracing::debug!(%plugin, doc = %document, "journal rows not trimmed: {e}");
            }
        });
    }
}

/// One document's part of a batch.
struct Row {
    plugin: String,
    doc: String,
    first_seq: u64,
    last_seq: u64,
    epoch: u64,
    records: Vec<u8>,
}

/// A batch's records, one row per document, in the order they came.
fn rows(batch: &Batch) -> Result<Vec<Row>, StorageError> {
    let mut rows: Vec<Row> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut frames = Frames::new(&batch.records);
    let mut start = 0;
    while let Some(entry) = frames.next() {
        // The record as it was framed: the row holds those bytes, not an encoding again.
        let framed = &batch.records[start..frames.valid_len()];
        start = frames.valid_len();
        let key = (entry.plugin.clone(), entry.document.clone());
        let at = *index.entry(key).or_insert_with(|| {
            rows.push(Row {
                plugin: entry.plugin.clone(),
                doc: entry.document.clone(),
                first_seq: entry.seq,
                last_seq: entry.seq,
                epoch: entry.incarnation,
                records: Vec::new(),
            });
            rows.len() - 1
        });
        let row = &mut rows[at];
        row.last_seq = entry.seq;
        row.records.extend_from_slice(framed);
    }
    match frames.stop() {
        Some(Stop::End) | None => Ok(rows),
        Some(Stop::Damaged(e)) => Err(StorageError::Corrupt {
            what: format!("journal batch {} of lane {}", batch.number, batch.lane),
            reason: e.to_string(),
        }),
    }
}

/// The entries of a document's journal rows, in order.
pub(super) fn entries(
    plugin: &str,
    document: &str,
    rows: &[Vec<u8>],
) -> Result<Vec<Entry>, StorageError> {
    let mut entries = Vec::new();
    for records in rows {
        let mut frames = Frames::new(records);
        entries.extend(frames.by_ref());
        if let Some(Stop::Damaged(e)) = frames.stop() {
            return Err(StorageError::Corrupt {
                what: format!("the journal of {plugin}/{document}"),
                reason: e.to_string(),
            });
        }
    }
    Ok(entries)
}

impl Inner {
    /// Makes `batch` durable as one statement, or fails it whole.
    async fn append(&self, batch: &Batch) -> Result<(), StorageError> {
        if !self.clock.valid_now() {
            return Err(StorageError::Unavailable(
                "this host's lease in the store has lapsed".into(),
            ));
        }
        let rows = rows(batch)?;
        if rows.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&Row) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let plugins: Vec<&str> = rows.iter().map(|r| r.plugin.as_str()).collect();
        let docs: Vec<&str> = rows.iter().map(|r| r.doc.as_str()).collect();
        let firsts = column(|r| r.first_seq as i64);
        let lasts = column(|r| r.last_seq as i64);
        let epochs = column(|r| r.epoch as i64);
        let records: Vec<&[u8]> = rows.iter().map(|r| r.records.as_slice()).collect();
        let holder = self.clock.holder() as i64;
        let count = rows.len() as i64;
        let client = self.client().await?;
        let inserted = self
            .timed("journal", async {
                let append = client.prepare_cached(APPEND).await?;
                client
                    .query(
                        &append,
                        &[
                            &plugins, &docs, &firsts, &lasts, &epochs, &records, &holder, &count,
                        ],
                    )
                    .await
            })
            .await?;
        if inserted.len() == rows.len() {
            return Ok(());
        }
        self.metrics.fenced_write();
        let document = rows
            .first()
            .map(|r| format!("{}/{}", r.plugin, r.doc))
            .unwrap_or_default();
        Err(StorageError::Fenced { document })
    }

    /// The journal rows of `plugin/document`, after its lease was taken.
    pub(super) async fn journal_of(
        &self,
        client: &deadpool_postgres::Object,
        plugin: &str,
        document: &str,
    ) -> Result<Vec<Entry>, StorageError> {
        let rows = self
            .timed("journal_read", async {
                let read = client.prepare_cached(READ).await?;
                client.query(&read, &[&plugin, &document]).await
            })
            .await?;
        let rows: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        entries(plugin, document, &rows)
    }

    /// Deletes the rows a durable checkpoint of `plugin/document` at `seq` covers.
    async fn trim(&self, plugin: &str, document: &str, seq: u64) -> Result<(), StorageError> {
        let client = self.client().await?;
        let seq = seq as i64;
        self.timed("journal_trim", async {
            let trim = client.prepare_cached(TRIM).await?;
            client.execute(&trim, &[&plugin, &document, &seq]).await
        })
        .await?;
        Ok(())
    }
}

/// A document's snapshot and journal entries as they are now, read without taking its
/// lease (`wasmroom replay`): one snapshot of the database, so the two agree (a checkpoint
/// that trimmed rows wrote the snapshot that covers them first).
pub async fn read_document(
    target: &Target,
    plugin: &str,
    document: &str,
) -> Result<(Option<Snapshot>, Vec<Entry>), StoreError> {
    let mut client = target.connect().await?;
    schema::migrate(&mut client).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(StoreError::query)?;
    let rows = tx
        .query(READ, &[&plugin, &document])
        .await
        .map_err(StoreError::query)?;
    let saved = tx
        .query_opt(
            "SELECT snapshot FROM wasmroom.documents WHERE plugin = $1 AND doc = $2",
            &[&plugin, &document],
        )
        .await
        .map_err(StoreError::query)?;
    let rows: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let entries = entries(plugin, document, &rows).map_err(|e| StoreError::Query(e.to_string()))?;
    let snapshot = match saved.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) {
        Some(bytes) => Some(decode(&bytes, plugin, document).map_err(|reason| {
            StoreError::Query(format!(
                "the snapshot of {plugin}/{document} does not decode: {reason}"
            ))
        })?),
        None => None,
    };
    Ok((snapshot, entries))
}
