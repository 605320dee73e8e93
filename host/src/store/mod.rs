//! Durable documents: where snapshots live, and who may write them.
//!
//! [`Storage`] is what a lane needs of a store: take a document (its lease, where the
//! store has leases) and read its snapshot, write a snapshot under that lease, let the
//! document go. [`FileStorage`] ([`file`]) is the embedded default for one machine: one
//! file per document under the data directory, no leases. [`postgres`] is the shared
//! store for several hosts: leases with fencing epochs, self-fencing by the
//! [`lease::LeaseClock`], hand-back between hosts. Both write the format of `wasmroom_wire::snapshot`.
//!
//! A lane only awaits these calls: the file store reads a snapshot inline (a small read,
//! from the page cache in the common case) and writes on the blocking pool; PostgreSQL
//! runs on the store's own thread.

use std::sync::Arc;

pub mod file;
pub mod journal;
pub mod journal_file;
pub mod lease;
pub mod postgres;

pub use file::FileStorage;
pub use lease::LeaseClock;
pub use wasmroom_wire::snapshot::{
    Continuity, FIRST_CONNECTION_ID, FORMAT_VERSION, SavedFrame, SavedSession, Snapshot, decode,
    encode,
};

/// A document held by this host, as the store knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lease {
    /// Bumped by every takeover; every write carries it and fails if the document has
    /// moved on. Always 0 in the file store.
    pub epoch: u64,
    /// The registration of this host that took it (0 in the file store).
    pub holder: u64,
}

/// What opening a document found.
#[derive(Debug)]
pub struct Opened {
    /// The document's lease, now this host's.
    pub lease: Lease,
    /// Its last snapshot, if it was ever saved.
    pub snapshot: Option<Snapshot>,
    /// A store that keeps the journal itself (PostgreSQL): the document's journal
    /// entries, read after its lease was taken (so nothing a former holder made durable
    /// is missed). `None`: the store keeps no journal (the file store's is the lanes').
    pub journal: Option<Vec<wasmroom_wire::journal::Entry>>,
}

/// What a shared store tells the rest of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Another host waits for a document this host holds: save it and let it go.
    ReleaseRequested {
        /// Its plugin.
        plugin: String,
        /// Its id.
        document: String,
        /// The epoch the asker saw it held under (none from hosts that do not send it):
        /// a document no longer in memory here is released only under that epoch.
        epoch: Option<u64>,
    },
    /// This host's lease ran out (the store was unreachable): every document it held
    /// must be dropped at once.
    Lapsed,
    /// The store answers again; this host serves again under a new registration.
    Resumed,
    /// A new version of a plugin was deployed.
    PluginDeployed {
        /// The plugin.
        name: String,
    },
    /// Versions may have been deployed while nobody listened: check every plugin.
    PluginsChanged,
}

/// Why a snapshot could not be saved or loaded, or a document not taken.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading or writing failed (disk full, permission denied, ...). Saves are retried;
    /// the document stays in memory meanwhile.
    #[error("{what}: {source}")]
    Io {
        /// The file or directory.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The saved snapshot is not one this build can read: corrupt, truncated, from
    /// another format version, or of another document. It is left untouched; the
    /// document refuses to open until an operator restores a good one.
    #[error("{what}: unreadable snapshot: {reason}")]
    Corrupt {
        /// The file or row.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Another host took the document since this one opened it: drop it at once (its
    /// clients get 1012 and reconnect to the new holder).
    #[error("{document} was taken by another host")]
    Fenced {
        /// `plugin/document`.
        document: String,
    },
    /// A live host holds the document: ask it to let go, then try again.
    #[error("held by host {host}")]
    HeldElsewhere {
        /// That host's registration.
        holder: u64,
        /// Its name.
        host: String,
        /// The epoch it holds the document under.
        epoch: u64,
    },
    /// The document was saved by a newer version of its plugin than this host runs: it
    /// is not opened here (and never overwritten by an older version). Deploy the new
    /// version here, or let a host that runs it serve the document.
    #[error("saved by plugin version {saved}, newer than this host's {running}")]
    NewerVersion {
        /// The version that saved it.
        saved: String,
        /// The version this host runs.
        running: String,
    },
    /// The store cannot be reached now, or this host's lease has lapsed: retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Where snapshots are kept. Implementations make `save` atomic: a later `open` sees
/// either the previous snapshot or the new one.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Takes the document (its lease, in a shared store) and reads its last snapshot.
    /// `version` is the plugin version that will serve it.
    async fn open(
        &self,
        plugin: &str,
        document: &str,
        version: &str,
    ) -> Result<Opened, StorageError>;

    /// Replaces the saved snapshot, if this host still holds the document under `lease`.
    async fn save(
        &self,
        plugin: &str,
        document: &str,
        lease: Lease,
        snapshot: Snapshot,
    ) -> Result<(), StorageError>;

    /// Lets the document go (after its last save): another host may take it at once.
    async fn release(&self, plugin: &str, document: &str, lease: Lease)
    -> Result<(), StorageError>;

    /// Lets go of a document this host holds in the store (under `epoch`, by its current
    /// registration) but not in memory.
    async fn release_unheld(
        &self,
        _plugin: &str,
        _document: &str,
        _epoch: u64,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// Asks host `holder`, which holds the document under `epoch`, to let it go.
    async fn ask_release(
        &self,
        _holder: u64,
        _plugin: &str,
        _document: &str,
        _epoch: u64,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// This host's lease clock, for a store with leases.
    fn leases(&self) -> Option<&Arc<LeaseClock>> {
        None
    }

    /// Where journal-mode documents make their records durable, if the store keeps
    /// the journal itself (PostgreSQL).
    fn journal(&self) -> Option<Arc<dyn journal::JournalSink>> {
        None
    }
}
