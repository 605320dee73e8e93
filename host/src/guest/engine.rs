//! The wasmtime engines of the process, shared by every lane, and the epoch ticker that
//! enforces the guest call deadline.
//!
//! There are two engines, one per [`MemorySetup`]: a plugin whose data segments are
//! small is compiled for the one that copies them into each instance, a larger one for
//! the one that maps a copy-on-write image (see [`crate::guest::initial_memory`]). Each
//! uses the pooling allocator, sized explicitly from [`Limits`]: instantiating a
//! document is then a few microseconds and never maps new memory, and the process cannot
//! exceed the `vm.max_map_count` of the kernel however many documents are live. Each pool
//! can hold every document (any plugin may have them all); what is reserved twice is
//! address space, not memory, and [`Slots`] counts the documents of both.
//!
//! Both engines make what a guest computes a function of its input alone, the same on
//! every host of a cluster (x86-64 or aarch64) and across wasmtime upgrades, so that a
//! document's inputs replayed give the same document: NaNs are canonical, relaxed SIMD
//! takes its deterministic semantics, there are no threads or shared memories, the Wasm
//! proposals a guest may use are [pinned](PROPOSALS) rather than left to wasmtime's
//! defaults, and the stack a call may use is [stated](MAX_WASM_STACK). NaN
//! canonicalization costs float-heavy code a few instructions per float operation;
//! the bundled consumers barely use floats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmFeatures};

use crate::config::Config;
use crate::guest::initial_memory::MemorySetup;

/// How often the epoch advances. The guest deadline is rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances, tables and memories one document may use. Rust components built for
/// wasm32-wasip2 need 1 memory, 2-3 core instances and 2-3 tables; componentize-qjs
/// (JavaScript) needs 9 core instances and componentize-py (Python) 14. The core
/// instance limit is only a counter in the pool (no memory is reserved for it), so it
/// leaves room for both.
const CORE_INSTANCES_PER_DOCUMENT: u32 = 16;
const TABLES_PER_DOCUMENT: u32 = 4;

/// Bytes of each table slot zeroed in place rather than given back to the kernel when
/// its document closes or migrates. What the pool then keeps resident is bounded by
/// this times the number of table slots ever used (16 KiB per document at most).
const TABLE_KEEP_RESIDENT: usize = 4096;

/// The WebAssembly proposals guests may use: exactly what wasmtime 48 enables by default
/// for components with this crate's wasmtime features (no `gc`, so no GC types or
/// exceptions), less threads (shared memories and atomics would make a guest's result
/// depend on scheduling). Stated, not inherited, so that a wasmtime upgrade cannot change
/// what a guest may do (and how a recorded document replays) without this line changing.
pub const PROPOSALS: WasmFeatures = WasmFeatures::FLOATS
    .union(WasmFeatures::MUTABLE_GLOBAL)
    .union(WasmFeatures::SATURATING_FLOAT_TO_INT)
    .union(WasmFeatures::SIGN_EXTENSION)
    .union(WasmFeatures::MULTI_VALUE)
    .union(WasmFeatures::BULK_MEMORY)
    .union(WasmFeatures::REFERENCE_TYPES)
    .union(WasmFeatures::SIMD)
    .union(WasmFeatures::RELAXED_SIMD)
    .union(WasmFeatures::TAIL_CALL)
    .union(WasmFeatures::EXTENDED_CONST)
    .union(WasmFeatures::FUNCTION_REFERENCES)
    .union(WasmFeatures::GC)
    .union(WasmFeatures::MULTI_MEMORY)
    .union(WasmFeatures::MEMORY64)
    .union(WasmFeatures::COMPONENT_MODEL);

/// The native stack one guest call may use (wasmtime 48's default), stated so that every
/// host of a cluster gives a deep recursion the same room. How deep that is also depends
/// on the code Cranelift makes of it, so it is the same only for the same wasmtime on the
/// same architecture.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// Makes `wasm` deterministic: NaN canonicalization, deterministic relaxed SIMD, the
/// [`PROPOSALS`] and nothing else, [`MAX_WASM_STACK`].
fn deterministic(wasm: &mut wasmtime::Config) {
    wasm.wasm_features(WasmFeatures::all(), false)
        .wasm_features(PROPOSALS, true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(MAX_WASM_STACK);
}

/// Why the engine could not be created.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create the WebAssembly engine (pool of {documents} documents of {memory} bytes): {source}"
)]
pub struct EngineError {
    documents: u32,
    memory: usize,
    source: wasmtime::Error,
}

/// The process's engines, one per [`MemorySetup`]. Cloning is cheap (the engines are
/// reference-counted).
#[derive(Clone)]
pub struct Engines {
    copied: Engine,
    mapped: Engine,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines").finish_non_exhaustive()
    }
}

impl Engines {
    /// Both engines for `config`.
    pub fn new(config: &Config) -> Result<Engines, EngineError> {
        Ok(Engines {
            copied: engine(config, MemorySetup::Copied)?,
            mapped: engine(config, MemorySetup::Mapped)?,
        })
    }

    /// The engine of plugins whose instances set up their memory this way.
    pub fn get(&self, setup: MemorySetup) -> &Engine {
        match setup {
            MemorySetup::Copied => &self.copied,
            MemorySetup::Mapped => &self.mapped,
        }
    }
}

/// Builds the engine for `config`: the pool holds `limits.max_documents` instances, plus
/// one per lane for migrations ([`Slots`]), whose memories may grow to the largest memory
/// cap of any plugin.
fn engine(config: &Config, setup: MemorySetup) -> Result<Engine, EngineError> {
    let documents = config
        .limits
        .max_documents
        .saturating_add(migration_reserve(config));
    let memory = config.largest_memory();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(documents)
        .total_core_instances(documents.saturating_mul(CORE_INSTANCES_PER_DOCUMENT))
        .total_memories(documents)
        .total_tables(documents.saturating_mul(TABLES_PER_DOCUMENT))
        // No memory pages are kept resident when a slot is given back (the default):
        // resetting them cost more than faulting them in on the next open, and made a hot
        // reload of 10,000 documents 0.4 s slower (every migration gives one slot back).
        .max_memory_size(memory)
        // A table's first page is zeroed in place instead: a Rust document's tables fit
        // in it, and the `madvise` plus the page faults on reuse cost more. It took a
        // fifth off the lane's CPU time in a hot reload of 10,000 documents.
        .table_keep_resident(TABLE_KEEP_RESIDENT);

    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        // Reserve only what a document may use instead of 4 GiB per slot: the pool then
        // needs max_documents x (max_memory + guard) of address space, not terabytes.
        .memory_reservation(memory as u64)
        .memory_guard_size(2 << 20)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(setup == MemorySetup::Mapped);
    deterministic(&mut wasm);
    Engine::new(&wasm).map_err(|source| EngineError {
        documents,
        memory,
        source,
    })
}

/// Slots kept for migrations: each lane migrates one document at a time.
fn migration_reserve(config: &Config) -> u32 {
    config.ports.len() as u32
}

/// The instance pool's slots, counted, so that a full server can still be upgraded:
/// documents take at most `max_documents`; the reserve above it (one slot per lane) is
/// for the second instance a document needs while it migrates to a new version.
#[derive(Debug)]
pub struct Slots {
    used: AtomicUsize,
    documents: usize,
    total: usize,
}

/// A slot of the pool, given back when dropped (with its instance).
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
}

impl Slots {
    /// The slots of `config`'s pool.
    pub fn new(config: &Config) -> Arc<Slots> {
        let documents = config.limits.max_documents as usize;
        Arc::new(Slots {
            used: AtomicUsize::new(0),
            documents,
            total: documents + migration_reserve(config) as usize,
        })
    }

    /// A slot for a document that opens; `None` when `max_documents` are live.
    pub fn for_document(self: &Arc<Self>) -> Option<Slot> {
        self.take(self.documents)
    }

    /// A slot for a migration's second instance, from the reserve if need be.
    pub fn for_migration(self: &Arc<Self>) -> Option<Slot> {
        self.take(self.total)
    }

    fn take(self: &Arc<Self>, limit: usize) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                slots: self.clone(),
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The number of epoch ticks to allow for `deadline`. A call starts somewhere inside a
/// tick, so one tick is added: the guest always gets its full deadline, and at most one
/// tick more.
pub fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread until dropped.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker thread, for both engines.
    pub fn start(engines: Engines) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engines.copied.increment_epoch();
                    engines.mapped.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_have_a_reserve_documents_cannot_take() {
        let config = Config {
            ports: vec![0, 0],
            ..Config::default()
        };
        let mut small = config.clone();
        small.limits.max_documents = 3;
        let slots = Slots::new(&small);
        let held: Vec<Slot> = (0..3).map(|_| slots.for_document().unwrap()).collect();
        assert!(slots.for_document().is_none());
        let m1 = slots.for_migration().unwrap();
        let _m2 = slots.for_migration().unwrap();
        assert!(slots.for_migration().is_none(), "one per lane");
        drop(m1);
        assert!(
            slots.for_document().is_none(),
            "the reserve is not for documents"
        );
        drop(held);
        assert!(slots.for_document().is_some());
    }

    use super::*;

    /// A core module (hand-assembled) exporting `nan(a: f64, b: f64) -> i64`, the bits
    /// of `a / b`, and `trunc(x: f32) -> i32`, lane 0 of
    /// `i32x4.relaxed_trunc_f32x4_s(f32x4.splat(x))`.
    const FLOATS_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x0c, 0x02, // types: 2
        0x60, 0x02, 0x7c, 0x7c, 0x01, 0x7e, // (f64, f64) -> i64
        0x60, 0x01, 0x7d, 0x01, 0x7f, // (f32) -> i32
        0x03, 0x03, 0x02, 0x00, 0x01, // functions: type 0, type 1
        0x07, 0x0f, 0x02, // exports: 2
        0x03, b'n', b'a', b'n', 0x00, 0x00, // "nan" = func 0
        0x05, b't', b'r', b'u', b'n', b'c', 0x00, 0x01, // "trunc" = func 1
        0x0a, 0x17, 0x02, // code: 2 bodies
        0x08, 0x00, 0x20, 0x00, 0x20, 0x01, 0xa3, 0xbd, 0x0b, // f64.div, i64.reinterpret
        0x0c, 0x00, 0x20, 0x00, 0xfd, 0x13, 0xfd, 0x81, 0x02, 0xfd, 0x1b, 0x00,
        0x0b, // f32x4.splat, i32x4.relaxed_trunc_f32x4_s, i32x4.extract_lane 0
    ];

    fn floats() -> (wasmtime::Store<()>, wasmtime::Instance) {
        let config = Config {
            ports: vec![0],
            ..Config::default()
        };
        let mut small = config.clone();
        small.limits.max_documents = 1;
        let engine = engine(&small, MemorySetup::Copied).unwrap();
        let module = wasmtime::Module::new(&engine, FLOATS_MODULE).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1000);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        (store, instance)
    }

    #[test]
    fn nans_are_canonical() {
        let (mut store, instance) = floats();
        let nan = instance
            .get_typed_func::<(f64, f64), i64>(&mut store, "nan")
            .unwrap();
        // x86-64 makes 0/0 a NaN with its sign bit set; Wasm's canonical NaN has none.
        let bits = nan.call(&mut store, (0.0, 0.0)).unwrap() as u64;
        assert_eq!(bits, 0x7ff8_0000_0000_0000, "{bits:#x}");
        // A NaN's payload is not carried through.
        let payload = f64::from_bits(0x7ff4_0000_0000_0001);
        let bits = nan.call(&mut store, (payload, 1.0)).unwrap() as u64;
        assert_eq!(bits, 0x7ff8_0000_0000_0000, "{bits:#x}");
    }

    #[test]
    fn relaxed_simd_is_deterministic() {
        let (mut store, instance) = floats();
        let trunc = instance
            .get_typed_func::<f32, i32>(&mut store, "trunc")
            .unwrap();
        // The deterministic semantics are the saturating ones: NaN is 0 everywhere (x86's
        // own instruction says i32::MIN).
        assert_eq!(trunc.call(&mut store, f32::NAN).unwrap(), 0);
        assert_eq!(trunc.call(&mut store, 1e10).unwrap(), i32::MAX);
    }

    #[test]
    fn the_pinned_proposals_are_wasmtimes_defaults_less_threads() {
        use std::hash::{Hash, Hasher};
        // Two engines compile alike only if their features (and the rest of their
        // compile settings) agree.
        let compatibility = |wasm: &wasmtime::Config| {
            let engine = Engine::new(wasm).unwrap();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.finish()
        };
        let mut pinned = wasmtime::Config::new();
        pinned.wasm_features(WasmFeatures::all(), false);
        pinned.wasm_features(PROPOSALS, true);
        assert_eq!(
            compatibility(&wasmtime::Config::new()),
            compatibility(&pinned),
            "wasmtime's default proposals changed: review PROPOSALS"
        );
        pinned.wasm_features(WasmFeatures::TAIL_CALL, false);
        assert_ne!(
            compatibility(&wasmtime::Config::new()),
            compatibility(&pinned)
        );
    }

    #[test]
    fn deadlines_round_up_to_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 11);
        assert_eq!(deadline_ticks(Duration::from_millis(101)), 12);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
    }
}
