//! The wasmtime engine every stage runs on, and its epoch ticker.
//!
//! The fast path shared by the serverless wasm hosts: the pooling instance
//! allocator (instances, memories and fiber stacks come from preallocated
//! slots, linear memories start copy-on-write from the module image), epoch
//! interruption for deadlines (cheaper than fuel) driven by ONE ticker
//! thread per engine, async calls so a long stage yields to the executor.

use crate::config::RuntimeConfig;
use anyhow::Context;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::{CacheStore, Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// Core module instances one component may create (CPython needs 14).
const MAX_CORE_INSTANCES: u32 = 20;

pub struct StageEngine {
    engine: Engine,
    tick: Duration,
    stop: Arc<AtomicBool>,
    instantiations: AtomicU64,
}

impl StageEngine {
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = config.max_instances.max(1);
        pool.total_component_instances(instances)
            // Core module instances per component, as the toolchains build
            // them (counted in the bundled and example stages): Rust wasip2 3
            // (the stage plus two adapter shims), SpiderMonkey
            // (componentize-js 0.23) 4, QuickJS (componentize-qjs 0.4 --sync)
            // 8, CPython (componentize-py 0.25: libpython, libc, the
            // extension modules) 14. The totals must let every instance be a
            // Python one: a slot is only address space until it is used.
            .max_core_instances_per_component(MAX_CORE_INSTANCES)
            // QuickJS defines two memories, the others one; each toolchain
            // two tables at most.
            .max_memories_per_component(2)
            .max_tables_per_component(4)
            .total_core_instances(instances * MAX_CORE_INSTANCES)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(config.max_memory_bytes as usize)
            // Reset a slot's first MiB with memset instead of madvise, and
            // scan for resident pages (Linux 6.7+): a fresh instance then
            // starts without page faults or TLB shootdowns for its stack and
            // first heap pages. Batch the decommits that remain.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(128 << 10)
            .decommit_batch_size(32)
            .pagemap_scan(Enabled::Auto);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(bytes) = config.function_cache_bytes {
            wasm.enable_incremental_compilation(Arc::new(FunctionCache::new(bytes)))
                .map_err(anyhow::Error::from)
                .context("enabling incremental compilation")?;
        }
        let engine = Engine::new(&wasm).map_err(anyhow::Error::from).context("configuring the wasmtime engine")?;

        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), config.epoch_tick, stop.clone());
        Ok(Self { engine, tick: config.epoch_tick, stop, instantiations: AtomicU64::new(0) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Time between two epoch increments.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    pub(crate) fn count_instantiation(&self) {
        self.instantiations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn instantiations(&self) -> u64 {
        self.instantiations.load(Ordering::Relaxed)
    }
}

impl Drop for StageEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One thread per engine advances the epoch; stores compare against it.
fn spawn_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("stagecraft-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Cranelift's incremental cache: compiled functions by the hash of their
/// body (Cranelift computes the key; the store only keeps bytes). Bounded:
/// when the next entry would pass the budget the cache starts over, so a
/// long-running dev server holds at most `budget` bytes.
#[derive(Debug)]
struct FunctionCache {
    budget: usize,
    entries: Mutex<FunctionEntries>,
}

#[derive(Debug, Default)]
struct FunctionEntries {
    by_key: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl FunctionCache {
    fn new(budget: usize) -> Self {
        Self { budget, entries: Mutex::new(FunctionEntries::default()) }
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.by_key.get(key).map(|value| Cow::Owned(value.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > self.budget {
            return false;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.bytes + size > self.budget {
            entries.by_key.clear();
            entries.bytes = 0;
        }
        if let Some(old) = entries.by_key.insert(key.to_vec(), value) {
            entries.bytes -= key.len() + old.len();
        }
        entries.bytes += size;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_cache_keeps_to_its_budget() {
        let cache = FunctionCache::new(100);
        assert!(cache.insert(b"a", vec![0; 40]));
        assert!(cache.insert(b"b", vec![1; 40]));
        assert_eq!(cache.get(b"a").as_deref(), Some(&[0u8; 40][..]));
        // A third entry would pass 100 bytes: the cache starts over with it.
        assert!(cache.insert(b"c", vec![2; 40]));
        assert!(cache.get(b"a").is_none() && cache.get(b"b").is_none());
        assert_eq!(cache.get(b"c").map(|v| v.len()), Some(40));
        // Replacing an entry counts its new size only.
        assert!(cache.insert(b"c", vec![3; 50]));
        assert_eq!(cache.entries.lock().unwrap().bytes, 51);
        assert!(!cache.insert(b"huge", vec![0; 200]), "an entry over the whole budget is refused");
    }
}
