//! Where a lane's journal batches are made durable (journal mode; see ARCHITECTURE.md,
//! "the input journal"). A lane hands over one batch at a time and releases its output
//! once the sink answers.
//!
//! The file and PostgreSQL journals land with their stages; until then the only sink is
//! [`MemoryJournal`], for the tests of the output gate: it keeps nothing, answers after
//! a delay, and fails on request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StorageError;

/// One lane's batch of records.
#[derive(Debug)]
pub struct Batch {
    /// The lane.
    pub lane: usize,
    /// The batch's number on its lane.
    pub number: u64,
    /// The records, concatenated.
    pub records: Vec<u8>,
    /// How many.
    pub count: usize,
}

/// Makes batches durable.
#[async_trait::async_trait]
pub trait JournalSink: Send + Sync + std::fmt::Debug {
    /// Returns once `batch` is durable, or why it could not be made so (its documents are
    /// then dropped: what they did since their last durable record never left the host).
    async fn commit(&self, batch: Batch) -> Result<(), StorageError>;

    /// A durable snapshot of `plugin`/`document` holds its inputs up to `seq`: the journal
    /// may let its entries up to there go.
    fn checkpointed(&self, _plugin: &str, _document: &str, _seq: u64) {}
}

/// A sink that keeps nothing, for the tests of the output gate: every commit takes
/// `delay`, and every `fail_every`-th one fails.
#[derive(Debug)]
pub struct MemoryJournal {
    delay: Duration,
    fail_every: u64,
    commits: AtomicU64,
}

impl MemoryJournal {
    /// A sink that answers after `delay`; every `fail_every`-th commit fails (0: never).
    pub fn new(delay: Duration, fail_every: u64) -> MemoryJournal {
        MemoryJournal {
            delay,
            fail_every,
            commits: AtomicU64::new(0),
        }
    }

    /// The sink the environment asks for, in debug builds only:
    /// `WASMROOM_TEST_JOURNAL=memory[:DELAY_MS[:FAIL_EVERY]]`.
    pub fn from_env() -> Option<MemoryJournal> {
        let spec = cfg!(debug_assertions)
            .then(|| std::env::var("WASMROOM_TEST_JOURNAL").ok())
            .flatten()?;
        let mut parts = spec.split(':');
        if parts.next() != Some("memory") {
            return None;
        }
        let delay = parts.next().and_then(|d| d.parse().ok()).unwrap_or(0);
        let fail_every = parts.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        Some(MemoryJournal::new(Duration::from_millis(delay), fail_every))
    }
}

#[async_trait::async_trait]
impl JournalSink for MemoryJournal {
    async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
            return Err(StorageError::Unavailable(format!(
                "the test journal fails commit {n} (batch {} of lane {})",
                batch.number, batch.lane
            )));
        }
        Ok(())
    }
}
