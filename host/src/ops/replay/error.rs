//! Why `wasmroom replay` shows nothing: one typed refusal each, its text the line the
//! command prints.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::document::DocumentError;
use crate::guest::plugin::PluginError;
use crate::store::StorageError;

/// Why `wasmroom replay` shows nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The config file cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The shared store cannot be read (its URL, the server, the login, the schema).
    #[error(transparent)]
    SharedStore(#[from] crate::store::postgres::StoreError),
    /// No `PLUGIN.wasm` in the plugins directory.
    #[error("unknown plugin '{plugin}': no {plugin}.wasm in {}", dir.display())]
    UnknownPlugin {
        /// The name asked for.
        plugin: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The plugin's file does not load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The engine cannot start.
    #[error("cannot start the engine: {0}")]
    Engine(String),
    /// The snapshot or the journal cannot be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Neither a snapshot nor a journal entry of the document.
    #[error(
        "no such document: {plugin}/{document} has no snapshot and no journal entries under {}",
        data.display()
    )]
    NoSuchDocument {
        /// The plugin.
        plugin: String,
        /// The document.
        document: String,
        /// The data directory.
        data: PathBuf,
    },
    /// `--until` is before the document's snapshot.
    #[error(
        "{plugin}/{document} at input {until}: the journal before input {earliest} was trimmed by a checkpoint; the earliest point is {earliest}"
    )]
    Trimmed {
        /// The plugin.
        plugin: String,
        /// The document.
        document: String,
        /// The input asked for.
        until: u64,
        /// The input its snapshot holds the state after.
        earliest: u64,
    },
    /// `--until 0` of a document without a snapshot: it begins with its `open`, input 1.
    #[error("{plugin}/{document} at input {until}: the document begins at input 1 (its open)")]
    BeforeOpen {
        /// The plugin.
        plugin: String,
        /// The document.
        document: String,
        /// The input asked for.
        until: u64,
    },
    /// `--until` is past the journal's last entry.
    #[error("{plugin}/{document} at input {until}: its journal ends at input {last}")]
    BeyondEnd {
        /// The plugin.
        plugin: String,
        /// The document.
        document: String,
        /// The input asked for.
        until: u64,
        /// The last input there is.
        last: u64,
    },
    /// A document in checkpoint mode has only its snapshot: `--until` names another input.
    #[error(
        "{plugin}/{document} is in checkpoint mode: it has no journal, only its snapshot (after input {covered}), so --until {until} cannot be shown"
    )]
    CheckpointOnly {
        /// The plugin.
        plugin: String,
        /// The document.
        document: String,
        /// The input asked for.
        until: u64,
        /// The input its snapshot holds the state after.
        covered: u64,
    },
    /// The document cannot be rebuilt: its snapshot does not restore, its journal has a
    /// gap or damage, a replayed input traps or decides otherwise than when it was made.
    #[error("{plugin}/{document}: {source}")]
    Document {
        /// The plugin.
        plugin: String,
        /// The document.
        document: String,
        /// What failed.
        source: DocumentError,
    },
}
