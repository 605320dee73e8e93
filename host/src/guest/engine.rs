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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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

    #[test]
    fn deadlines_round_up_to_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 11);
        assert_eq!(deadline_ticks(Duration::from_millis(101)), 12);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
    }
}
