//! `wasmroom replay PLUGIN DOCUMENT [--until SEQ]`: a document as it was after one of its
//! inputs, for debugging and history (see docs/operations.md, "Replaying a document").
//!
//! Its snapshot goes into a fresh instance of the plugin as the config gives it, the
//! journal's entries after the snapshot are replayed up to input `SEQ`
//! ([`Document::replay_until`]: outputs go nowhere, nothing is journaled, the connections
//! open there are not cut), and the consumer is asked for its export
//! ([`Document::export`]: its answer to `GET /docs/{plugin}/{document}`, what a `saved`
//! webhook carries).
//!
//! It only reads the data directory: the snapshot file, the journal's segments
//! ([`FileJournal::read_only`]: no lock, no fsync, nothing cut or trimmed) and the
//! compiled-plugin cache, so it runs beside a server that serves the document; or, with
//! a shared store, the document's row and journal rows in one read-only transaction,
//! without taking its lease. Every input is replayed on the plugin version that made it:
//! the file in the plugins directory, or a version the data directory's version store
//! kept (`crate::guest::versions`). What it cannot do: go back past the document's
//! snapshot (a checkpoint lets the journal before it go).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use wasmroom_wire::journal::Entry;

use crate::config::Config;
use crate::document::journal::Tail;
use crate::document::versions::{ReplayVersions, needed};
use crate::document::{Document, DocumentConfig, DocumentError};
use crate::guest::context::SettingsTable;
use crate::guest::engine::{Engines, EpochTicker, Slots};
use crate::guest::plugin::{CacheWrite, PluginError, PluginFile, Runtimes, load_with};
use crate::guest::versions::VersionStore;
use crate::metrics::Metrics;
use crate::net::route::valid_plugin_name;
use crate::net::webhook::Export;
use crate::store::journal_file::FileJournal;
use crate::store::{FileStorage, Snapshot};

mod error;
mod span;

pub use error::ReplayError;
use span::Span;

/// The environment variable `serve` reads the shared store's URL from.
const STORE_VAR: &str = "WASMROOM_STORE";

/// `wasmroom replay`'s command line.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The plugin: its file PLUGIN.wasm in the plugins directory, as it is now.
    pub plugin: String,
    /// The document's id.
    pub document: String,
    /// Show the document as it was after input SEQ [default: the journal's last].
    #[arg(long, value_name = "SEQ")]
    pub until: Option<u64>,
    /// The config file `serve` uses: its data and plugins directories, its limits and
    /// the plugin's settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory of `serve --data DIR` [default: the config's, else `data`].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The directory of {plugin}.wasm files [default: the config's, else `plugins`].
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,
    /// The shared store of `serve --store` (postgres://USER@HOST:PORT/DB) to read the
    /// document from instead of the data directory [default: the config's, or
    /// `$WASMROOM_STORE`].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

impl ReplayArgs {
    /// The configuration `serve` would run with: the file, then the flags (and the
    /// shared store's URL from `$WASMROOM_STORE`, as `serve` reads it).
    pub fn config(&self) -> Result<Config, ReplayError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data {
            config.data = dir.clone();
        }
        if let Some(dir) = &self.plugins {
            config.plugins = dir.clone();
        }
        if let Ok(url) = std::env::var(STORE_VAR) {
            config.store.url = Some(url);
        }
        if let Some(url) = &self.store {
            config.store.url = Some(url.clone());
        }
        Ok(config)
    }
}

/// A document as it was after one of its inputs.
#[derive(Debug)]
pub struct Replayed {
    /// The consumer's export there (its `GET` answer, else its snapshot's state).
    pub export: Export,
    /// The input its snapshot holds the state after, and the version that saved it
    /// (none: no snapshot).
    pub snapshot: Option<(u64, String)>,
    /// Journal entries replayed after the snapshot.
    pub replayed: u64,
    /// The input shown.
    pub at: u64,
    /// The document's last input on disk.
    pub last: u64,
    /// The plugin version the document was on at the input shown (the one that made it).
    pub version: String,
    /// The plugin is in checkpoint mode and the journal holds nothing of the document.
    pub checkpoint_only: bool,
}

impl Replayed {
    /// The one line `wasmroom replay` writes to stderr.
    pub fn summary(&self, plugin: &str, document: &str) -> String {
        let snapshot = match &self.snapshot {
            Some((covered, version)) => {
                format!("snapshot after input {covered} (saved by version {version})")
            }
            None => "no snapshot".to_owned(),
        };
        let mut line = format!(
            "{plugin}/{document}: {snapshot}, {} journal entries replayed, shown at input {} (the last is {}), plugin version {}",
            self.replayed, self.at, self.last, self.version
        );
        if self.checkpoint_only {
            line.push_str("; checkpoint mode: no journal, this is its last snapshot");
        }
        if matches!(self.export, Export::Snapshot(_)) {
            line.push_str(&format!(
                "; the consumer answers GET /docs/{plugin}/{document} without a 200: this is its snapshot's state"
            ));
        }
        line
    }
}

/// `wasmroom replay`: the export to stdout (its bytes as they are), the summary to stderr.
pub fn run(args: &ReplayArgs) -> Result<(), ReplayError> {
    let config = args.config()?;
    let replayed = replay(&config, &args.plugin, &args.document, args.until)?;
    let body = match &replayed.export {
        Export::Consumer { body, .. } => body,
        Export::Snapshot(state) => state,
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is no error of the replay.
    let _ = stdout.write_all(body).and_then(|()| stdout.flush());
    eprintln!("{}", replayed.summary(&args.plugin, &args.document));
    Ok(())
}

/// Rebuilds `plugin`'s `document` under `config` as it was after input `until` (default:
/// its last) and asks the consumer for its export. Reads the data directory only.
pub fn replay(
    config: &Config,
    plugin: &str,
    document: &str,
    until: Option<u64>,
) -> Result<Replayed, ReplayError> {
    let file = config.plugins.join(format!("{plugin}.wasm"));
    if !valid_plugin_name(plugin) || !file.is_file() {
        return Err(ReplayError::UnknownPlugin {
            plugin: plugin.to_owned(),
            dir: config.plugins.clone(),
        });
    }
    let (entries, snapshot) = match &config.store.url {
        Some(url) => shared_document(url, plugin, document)?,
        None => {
            // The journal is read first: a segment trimmed meanwhile was covered by a
            // snapshot written before its deletion, which the snapshot read next is or
            // follows.
            let entries = journal_entries(config, plugin, document)?;
            (
                entries,
                FileStorage::new(&config.data).load(plugin, document)?,
            )
        }
    };
    let span = Span::of(config, plugin, document, snapshot.as_ref(), &entries)?;
    let at = span.check(until)?;
    rebuild(config, &span, &file, snapshot, entries, at)
}

/// The document's journal rows and snapshot in the shared store at `url`, read without
/// taking it.
fn shared_document(
    url: &str,
    plugin: &str,
    document: &str,
) -> Result<(Vec<Entry>, Option<Snapshot>), ReplayError> {
    let target = crate::store::postgres::Target::parse(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplayError::Engine(format!("no runtime for the store: {e}")))?;
    let (snapshot, entries) = runtime.block_on(crate::store::postgres::read_document(
        &target, plugin, document,
    ))?;
    Ok((entries, snapshot))
}

/// Version `version` of `plugin` in the shared store at `url`, if a host kept it.
fn shared_version(url: &str, plugin: &str, version: &str) -> Result<Option<Vec<u8>>, ReplayError> {
    let target = crate::store::postgres::Target::parse(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplayError::Engine(format!("no runtime for the store: {e}")))?;
    Ok(runtime.block_on(crate::store::postgres::read_version(
        &target, plugin, version,
    ))?)
}

/// The document's entries in the journal under `{data}/journal/`.
fn journal_entries(
    config: &Config,
    plugin: &str,
    document: &str,
) -> Result<Vec<Entry>, ReplayError> {
    let mut recovered = FileJournal::read_only(&config.data.join("journal"))?;
    let Some(found) = recovered
        .documents
        .remove(&(plugin.to_owned(), document.to_owned()))
    else {
        return Ok(Vec::new());
    };
    if found.damaged {
        return Err(ReplayError::Document {
            plugin: plugin.to_owned(),
            document: document.to_owned(),
            source: DocumentError::Unreplayable("its journal has a damaged segment".into()),
        });
    }
    // A gap is found by the replay, if it lies after the snapshot.
    Ok(found.entries)
}

/// A fresh instance of the plugin file, the snapshot restored, the entries replayed up
/// to input `at`, the export asked for.
fn rebuild(
    config: &Config,
    span: &Span<'_>,
    file: &std::path::Path,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    at: u64,
) -> Result<Replayed, ReplayError> {
    let (plugin, document) = (span.plugin, span.document);
    let engine_error = |e: &dyn std::fmt::Display| ReplayError::Engine(e.to_string());
    // One document: a pool of one.
    let mut config = config.clone();
    config.limits.max_documents = 1;
    let engines = Engines::new(&config).map_err(|e| engine_error(&e))?;
    let runtimes = Runtimes::new(engines.clone()).map_err(|e| engine_error(&format!("{e:#}")))?;
    let cache = config.data.join(".compiled");
    let loaded = load_with(&runtimes, file, Some(&cache), None, CacheWrite::Never)?
        .expect("no current version to compare with");
    let loaded = Arc::new(loaded);
    // Every input on the version that made it: those the journal names, from the
    // version store.
    let store = VersionStore::new(&config.data.join("versions"), BTreeSet::new());
    let mut plugins = vec![loaded.clone()];
    let needed = needed(snapshot.as_ref(), entries.iter());
    for version in &needed {
        if plugins.iter().any(|p| p.version == *version) {
            continue;
        }
        let path = store.path(plugin, version);
        let kept = match (path.is_file(), &config.store.url) {
            (true, _) => PluginFile::read_as(&path, plugin)?,
            (false, Some(url)) => {
                let bytes = shared_version(url, plugin, version)?.ok_or_else(|| {
                    PluginError::VersionGone {
                        plugin: plugin.to_owned(),
                        version: version.clone(),
                        store: path.clone(),
                    }
                })?;
                PluginFile::of_bytes(&path, plugin, bytes)
            }
            (false, None) => {
                return Err(ReplayError::Plugin(PluginError::VersionGone {
                    plugin: plugin.to_owned(),
                    version: version.clone(),
                    store: path,
                }));
            }
        };
        plugins.push(Arc::new(kept.compile(
            &runtimes,
            Some(&cache),
            CacheWrite::Never,
        )?));
    }
    let opener = needed
        .first()
        .and_then(|v| plugins.iter().find(|p| p.version == *v))
        .unwrap_or(&loaded)
        .clone();
    // A guest call's deadline needs the epoch to move.
    let _ticker = EpochTicker::start(engines).map_err(|e| engine_error(&e))?;
    let settings = SettingsTable::load(&config)?.for_plugin(plugin);
    let limits = DocumentConfig {
        // Nothing is journaled and no output is gated.
        journaled: false,
        ..DocumentConfig::of(&config, plugin, settings)
    };
    let metrics = Metrics::new().plugin(plugin, 0);
    let slots = Slots::new(&config);
    let slot = slots.for_document().expect("a pool of one has a slot");
    let versions = ReplayVersions::new(plugins, slots.clone());
    let mut tail = Tail::default();
    tail.put_first(entries);
    let failed = |source: DocumentError| ReplayError::Document {
        plugin: plugin.to_owned(),
        document: document.to_owned(),
        source,
    };
    let mut doc = Document::open(
        opener,
        document,
        limits,
        metrics,
        slot,
        snapshot.as_ref(),
        Some(Rc::new(RefCell::new(tail))),
        // Nothing is journaled here.
        0,
    )
    .map_err(failed)?;
    if let Some(snapshot) = &snapshot {
        doc.restore(snapshot).map_err(failed)?;
    }
    doc.replay_until(Some(at), &versions).map_err(failed)?;
    if doc.inputs() != at {
        return Err(failed(DocumentError::Unreplayable(format!(
            "its journal ends at input {} before input {at}",
            doc.inputs()
        ))));
    }
    let (state, _) = doc.snapshot().map_err(failed)?;
    let export = doc.export(&state.state);
    let covered = span.covered.unwrap_or(0);
    Ok(Replayed {
        export,
        replayed: at - covered,
        snapshot: snapshot.map(|s| (covered, s.plugin_version)),
        at,
        last: span.last,
        version: doc.plugin().version.clone(),
        checkpoint_only: span.checkpoint_only,
    })
}
