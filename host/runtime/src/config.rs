//! Runtime configuration: where things live and the default sandbox limits.

use crate::http::HttpGrant;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Resource limits for one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Upper bound on the instance's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline for one call, enforced by epoch interruption.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_bytes: 512 << 20, timeout: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// Parent of the per-invocation scratch directories.
    pub scratch_dir: PathBuf,
    /// Defaults for every invocation; callers may lower or raise per call
    /// (memory up to `max_memory_bytes`).
    pub limits: Limits,
    /// Hard ceiling for any instance's memory (sizes the pooling allocator).
    pub max_memory_bytes: u64,
    /// Component instances that may exist at once (pooling allocator slots):
    /// at least the scheduler's in-flight limit, since a parked instance
    /// keeps its slot while it waits.
    pub max_instances: u32,
    /// Instances that may *compute* at once (see [`crate::capacity`]);
    /// default: the core count. Waiting instances hold no CPU slot.
    pub cpu_slots: usize,
    /// Whether waiting instances give their CPU slot back (the default) or
    /// hold it (the behaviour before CPU slots, for comparisons).
    pub park_policy: crate::capacity::ParkPolicy,
    /// How often the engine's epoch advances: the granularity of deadlines
    /// and of cooperative yields to the async executor.
    pub epoch_tick: Duration,
    /// Outgoing HTTP grants, by stage name (see [`crate::http`]). A stage
    /// not listed here has every `wasi:http` request refused.
    pub http: HashMap<String, HttpGrant>,
    /// The model repository behind the `inference` import (and the
    /// `segmentation` import's `model` option). `None`: every call gets
    /// `unavailable`, naming the missing repository.
    pub models: Option<Arc<stagecraft_inference::Models>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let base = std::env::var_os("STAGECRAFT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("stagecraft"));
        Self {
            cache_dir: Some(base.join("cache")),
            scratch_dir: base.join("scratch"),
            limits: Limits::default(),
            max_memory_bytes: 2 << 30,
            // The scheduler's default in-flight limit (1000, like Spin's
            // pool) plus room for `describe` at load and direct callers.
            // Slots are virtual reservations until used.
            max_instances: 1024,
            cpu_slots: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            park_policy: crate::capacity::ParkPolicy::default(),
            epoch_tick: Duration::from_millis(5),
            http: HashMap::new(),
            models: None,
        }
    }
}
