//! The wasmtime engine every stage runs on, and its epoch ticker.
//!
//! The fast path shared by the serverless wasm hosts: the pooling instance
//! allocator (instances, memories and fiber stacks come from preallocated
//! slots, linear memories start copy-on-write from the module image), epoch
//! interruption for deadlines (cheaper than fuel) driven by ONE ticker
//! thread per engine, async calls so a long stage yields to the executor.

use crate::config::RuntimeConfig;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

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
