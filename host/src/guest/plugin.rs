//! One plugin version: a `{plugin}.wasm` file compiled once, checked against the contract,
//! and shared by every lane.
//!
//! Loading a plugin does all the expensive and fallible work up front: compile (or load
//! the compiled artifact from the on-disk cache), link the host imports, type-check the
//! exports ([`RoomPre`]). A document then only instantiates, which with the pooling
//! allocator costs microseconds.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};

use crate::guest::bindings::{Batch, BatchIndices, RoomIndices};
use crate::guest::engine::Engines;
use crate::guest::initial_memory::MemorySetup;
use crate::guest::{GuestState, Room, RoomPre};
use crate::net::route::valid_plugin_name;

/// Why a plugin could not be loaded. The old version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file name is not `{name}.wasm` with a valid name (letters, digits, `-`, `_`).
    #[error("{0}: plugin files are named {{name}}.wasm, with letters, digits, '-' and '_'")]
    BadName(PathBuf),
    /// Not a WebAssembly component, or one that wasmtime cannot compile. Build consumers
    /// with `cargo build --target wasm32-wasip2` or another component toolchain.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// wasmtime's explanation.
        reason: String,
    },
    /// A valid component that does not implement the `wasmroom:consumer/room` world:
    /// an export is missing or has the wrong type, or it imports something the host does
    /// not provide.
    #[error("{path} does not implement the wasmroom:consumer/room world: {reason}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A journaled plugin's version could not be kept in the version store, so a replay
    /// could not find it: it is not served. Free or fix the data directory's disk.
    #[error("cannot keep {plugin} version {version} in the version store: {source}")]
    NotKept {
        /// The plugin.
        plugin: String,
        /// The version.
        version: String,
        /// Why.
        source: std::io::Error,
    },
    /// A journal names a version of the plugin that is neither loaded nor in the
    /// version store (never kept, or pruned since): what it recorded cannot be replayed.
    #[error(
        "{plugin} version {version} is neither loaded nor in the version store ({}): the inputs it made cannot be replayed",
        store.display()
    )]
    VersionGone {
        /// The plugin.
        plugin: String,
        /// The version.
        version: String,
        /// Where it was looked for.
        store: PathBuf,
    },
}

/// One loaded version of a plugin.
pub struct Plugin {
    /// The plugin name (the file stem), which is also its route.
    pub name: String,
    /// The first 16 hex digits of the SHA-256 of the file.
    pub version: String,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// Ready-to-instantiate, type-checked component.
    pub pre: RoomPre<GuestState>,
    /// Where the `room` world's exports are (what `pre` instantiates with).
    pub(crate) indices: RoomIndices,
    /// Where its `on-messages` is, if it exports the optional `batch` interface (WIT
    /// 0.1.2): then the messages of one read of a connection reach it in one call.
    pub(crate) batch: Option<BatchIndices>,
    /// Live documents on this version, across all lanes.
    pub live: AtomicUsize,
    /// How its instances get their initial memory (which engine compiled it).
    pub memory: MemorySetup,
    /// The plugin's last failure: one cell per plugin name, which the registry gives
    /// every version it installs, so that a document reports its trap without knowing
    /// the registry.
    pub last_error: Arc<LastError>,
}

/// A plugin's last failure, as `GET /plugins` shows it (`last_error`): a file that did
/// not load, documents that could not migrate, a consumer that trapped (a short text:
/// the backtrace is in the log). Written rarely; read by `/plugins`.
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<Arc<str>>>);

impl LastError {
    /// Replaces the last failure with `text`.
    pub fn set(&self, text: impl Into<Arc<str>>) {
        *self.lock() = Some(text.into());
    }

    /// Forgets it (a new version loaded).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// The last failure, if any.
    pub fn get(&self) -> Option<Arc<str>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<str>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Plugin {
    /// Instantiates the component in `store`: the `room` world's exports, and the
    /// `batch` export if it has one (its types are checked here, like the others').
    pub fn instantiate(
        &self,
        store: &mut Store<GuestState>,
    ) -> wasmtime::Result<(Room, Option<Batch>)> {
        let instance = self.pre.instance_pre().instantiate(&mut *store)?;
        let room = self.indices.load(&mut *store, &instance)?;
        let batch = match &self.batch {
            Some(batch) => Some(batch.load(&mut *store, &instance)?),
            None => None,
        };
        Ok((room, batch))
    }

    /// Whether the consumer takes a connection's messages in batches (`on-messages`).
    pub fn takes_batches(&self) -> bool {
        self.batch.is_some()
    }

    /// The WIT world it implements: `batched-room` with `on-messages`, else `room`.
    pub fn world(&self) -> &'static str {
        if self.takes_batches() {
            "batched-room"
        } else {
            "room"
        }
    }
}

/// The optional `batch` export's name, as `bindgen!` looks it up (any 0.1.x with it is
/// found by semver).
const BATCH_EXPORT: &str = "wasmroom:consumer/batch@0.1.2";

/// Where `pre`'s `batch` export is: `None` if it has none (consumers built against 0.1.0,
/// 0.1.1, or the `room` world), an error if it has one without `on-messages`.
fn batch_export(pre: &InstancePre<GuestState>) -> wasmtime::Result<Option<BatchIndices>> {
    match BatchIndices::new(pre) {
        Ok(indices) => Ok(Some(indices)),
        Err(_)
            if pre
                .component()
                .get_export_index(None, BATCH_EXPORT)
                .is_none() =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The host imports every plugin is linked against: WASI (granting nothing) and the
/// `wasmroom:consumer/host` interface.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    crate::guest::wasi::add_to_linker(&mut linker)?;
    Room::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// What loading a plugin needs: the engines, and for each the linker of the host
/// imports.
pub struct Runtimes {
    engines: Engines,
    copied: Linker<GuestState>,
    mapped: Linker<GuestState>,
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtimes").finish_non_exhaustive()
    }
}

impl Runtimes {
    /// The linkers for `engines`.
    pub fn new(engines: Engines) -> wasmtime::Result<Runtimes> {
        Ok(Runtimes {
            copied: linker(engines.get(MemorySetup::Copied))?,
            mapped: linker(engines.get(MemorySetup::Mapped))?,
            engines,
        })
    }

    fn get(&self, setup: MemorySetup) -> (&Engine, &Linker<GuestState>) {
        let linker = match setup {
            MemorySetup::Copied => &self.copied,
            MemorySetup::Mapped => &self.mapped,
        };
        (self.engines.get(setup), linker)
    }
}

/// The largest plugin file accepted (a Python component is about 18 MB).
const MAX_PLUGIN_BYTES: u64 = 256 << 20;

/// Compiles (or loads from `cache`) and checks one component file.
pub fn load(runtimes: &Runtimes, path: &Path, cache: Option<&Path>) -> Result<Plugin, PluginError> {
    let loaded = load_with(runtimes, path, cache, None, CacheWrite::Aside)?;
    Ok(loaded.expect("no current version to compare with"))
}

/// How a fresh compilation reaches the cache: aside (a server: documents waiting for the
/// new version need not wait for the disk), before the load returns (`wasmroom check`,
/// which exits right after), or not at all (`wasmroom replay`, which only reads the data
/// directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheWrite {
    /// On a thread of its own.
    Aside,
    /// Before the load returns.
    Before,
    /// Not at all.
    Never,
}

pub(crate) fn load_with(
    runtimes: &Runtimes,
    path: &Path,
    cache: Option<&Path>,
    current: Option<&str>,
    write: CacheWrite,
) -> Result<Option<Plugin>, PluginError> {
    let file = PluginFile::read(path)?;
    if current == Some(file.version.as_str()) {
        return Ok(None);
    }
    file.compile(runtimes, cache, write).map(Some)
}

/// A plugin file's bytes, read once: what is compiled is what is hashed (and kept in
/// the version store).
pub struct PluginFile {
    /// Where it was read.
    pub path: PathBuf,
    /// The plugin's name.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its version ([`version_of`]).
    pub version: String,
    digest: Vec<u8>,
}

impl std::fmt::Debug for PluginFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl PluginFile {
    /// Reads `path`, named by its file name.
    pub fn read(path: &Path) -> Result<PluginFile, PluginError> {
        let name = plugin_name(path).ok_or_else(|| PluginError::BadName(path.to_owned()))?;
        PluginFile::read_as(path, &name)
    }

    /// Reads `path` as plugin `name` (a file of the version store is named by its plugin,
    /// in a directory named by its version).
    pub fn read_as(path: &Path, name: &str) -> Result<PluginFile, PluginError> {
        let read_error = |source| PluginError::Read {
            path: path.to_owned(),
            source,
        };
        // Only regular files of a sane size: a FIFO would block the reader forever, a
        // link to /dev/zero would never end.
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if !meta.is_file() || meta.len() > MAX_PLUGIN_BYTES {
            return Err(read_error(std::io::Error::other(format!(
                "not a regular file of at most {} MiB",
                MAX_PLUGIN_BYTES >> 20
            ))));
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        Ok(PluginFile::of_bytes(path, name, bytes))
    }

    /// `bytes` as plugin `name`, from `path` (named in errors).
    pub fn of_bytes(path: &Path, name: &str, bytes: Vec<u8>) -> PluginFile {
        let digest = Sha256::digest(&bytes).to_vec();
        PluginFile {
            path: path.to_owned(),
            name: name.to_owned(),
            version: version_of_digest(&digest),
            bytes,
            digest,
        }
    }

    /// Compiles (or loads from `cache`) and checks it against the contract.
    pub fn compile(
        &self,
        runtimes: &Runtimes,
        cache: Option<&Path>,
        write: CacheWrite,
    ) -> Result<Plugin, PluginError> {
        let (path, name, bytes) = (&self.path, &self.name, &self.bytes);
        let setup = MemorySetup::for_component(bytes);
        let (engine, linker) = runtimes.get(setup);
        let component = match cache {
            Some(dir) => compile_cached(engine, setup, (name, bytes), &self.digest, dir, write),
            None => {
                compiling(name, bytes);
                Component::new(engine, bytes)
            }
        }
        .map_err(|e| PluginError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let contract = |e: wasmtime::Error| PluginError::Contract {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let pre = linker.instantiate_pre(&component).map_err(contract)?;
        let indices = RoomIndices::new(&pre).map_err(contract)?;
        let batch = batch_export(&pre).map_err(contract)?;
        let pre = RoomPre::new(pre).map_err(contract)?;
        Ok(Plugin {
            name: name.clone(),
            version: self.version.clone(),
            loaded_at: SystemTime::now(),
            pre,
            indices,
            batch,
            live: AtomicUsize::new(0),
            memory: setup,
            last_error: Arc::default(),
        })
    }
}

/// The version of a plugin file: the first 16 hex digits of its SHA-256. The same bytes
/// are the same version on every host.
pub fn version_of(bytes: &[u8]) -> String {
    version_of_digest(&Sha256::digest(bytes))
}

fn version_of_digest(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles `bytes`, or loads the artifact an earlier compilation left in `dir`. The file
/// name carries the content hash and the engine's compatibility hash (wasmtime version
/// and settings), so an artifact is only ever loaded by the engine that produced it.
fn compile_cached(
    engine: &Engine,
    setup: MemorySetup,
    (name, bytes): (&str, &[u8]),
    digest: &[u8],
    dir: &Path,
    write: CacheWrite,
) -> wasmtime::Result<Component> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let file = dir.join(format!(
        "{hex}-{:016x}-{}.cwasm",
        hasher.finish(),
        setup.name()
    ));
    if file.exists() {
        // SAFETY: wasmroom writes this file only here, synced and renamed into place, named
        // by the hash of its source and of this engine's settings; the data directory is
        // trusted like the binary (whoever can write it can run code as the server).
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!("ignoring cached {}: {e}", file.display()),
        }
    }
    compiling(name, bytes);
    let component = Component::new(engine, bytes)?;
    if write == CacheWrite::Never {
        return Ok(component);
    }
    if write == CacheWrite::Before {
        if let Err(e) = write_cache(&component, dir, &file) {
            tracing::warn!("cannot cache the compiled plugin in {}: {e}", dir.display());
        }
        return Ok(component);
    }
    // Written on a thread of its own: the documents waiting for this version (a hot
    // reload) need not wait for the disk. The cache is an optimisation: failing to write
    // it is not an error.
    let (artifact, dir) = (component.clone(), dir.to_owned());
    let spawned = std::thread::Builder::new()
        .name("plugin-cache".into())
        .spawn(move || {
            if let Err(e) = write_cache(&artifact, &dir, &file) {
                tracing::warn!("cannot cache the compiled plugin in {}: {e}", dir.display());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot cache the compiled plugin: {e}");
    }
    Ok(component)
}

/// Says that `name` is being compiled: seconds for a JavaScript component, tens of
/// seconds for a Python one, which would otherwise pass without a word.
fn compiling(name: &str, bytes: &[u8]) {
    let size = match bytes.len() {
        n if n < 1_000_000 => format!("{} KB", n.div_ceil(1000)),
        n => format!("{:.1} MB", n as f64 / 1e6),
    };
    tracing::info!(
        plugin = %name,
        "compiling {name} ({size}); a large component takes a while the first time (Python: tens of seconds)"
    );
}

/// Writes `component`'s compiled code to `file` in `dir`: a unique temporary file
/// (removed if anything fails), synced before it is renamed into place, so the cache never
/// holds a torn artifact under a final name.
fn write_cache(component: &Component, dir: &Path, file: &Path) -> wasmtime::Result<()> {
    let artifact = component.serialize()?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &artifact)?;
    tmp.as_file().sync_all()?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// `relay` for `.../relay.wasm`; `None` for other files or invalid names.
pub fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    valid_plugin_name(stem).then(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_stems() {
        assert_eq!(
            plugin_name(Path::new("/p/relay.wasm")).as_deref(),
            Some("relay")
        );
        assert_eq!(plugin_name(Path::new("/p/relay.wat")), None);
        assert_eq!(plugin_name(Path::new("/p/re lay.wasm")), None);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let mut config = crate::config::Config::default();
        config.limits.max_documents = 4;
        let runtimes = Runtimes::new(Engines::new(&config).unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("wasmroom-plugin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("junk.wasm");
        std::fs::write(&path, b"not wasm at all").unwrap();
        let err = load(&runtimes, &path, None).unwrap_err();
        assert!(matches!(err, PluginError::Invalid { .. }), "{err}");
        // A core module (not a component) is refused too.
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        let err = load(&runtimes, &path, None).unwrap_err();
        assert!(err.to_string().contains("junk.wasm"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
