//! Scheduler configuration and its defaults.

use std::collections::HashMap;
use std::time::Duration;

use crate::memory::MemoryPolicy;
use crate::pool::StagePoolConfig;
use crate::retry::RetryPolicy;

/// Everything the scheduler can be tuned with. `Default` is sensible for a
/// single host: workers and stage limits follow the core count.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Global limit of tasks holding a slot, all stages together (>= 1).
    pub max_workers: usize,
    /// Limit of tasks *waiting* (not running); `submit` beyond it fails with
    /// `QueueFull`. Retries re-entering the queue are not refused (>= 1).
    pub max_queue: usize,
    /// Stage limit for stages without an entry in `per_stage`.
    pub default_stage_limit: usize,
    /// Per-stage pool configuration, by stage name.
    pub per_stage: HashMap<String, StagePoolConfig>,
    /// Retry policy for tasks that do not bring their own.
    pub retry: RetryPolicy,
    /// Per-attempt deadline for tasks that do not bring their own.
    pub default_timeout: Option<Duration>,
    /// Memory budget and pressure policy.
    pub memory: MemoryPolicy,
    /// Capacity of the event broadcast channel.
    pub event_capacity: usize,
}

/// The host's core count (1 if it cannot be read).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let cores = available_cores();
        Self {
            max_workers: cores,
            max_queue: 1024,
            default_stage_limit: cores,
            per_stage: HashMap::new(),
            retry: RetryPolicy::default(),
            default_timeout: Some(Duration::from_secs(300)),
            memory: MemoryPolicy::default(),
            event_capacity: 1024,
        }
    }
}

impl SchedulerConfig {
    /// Sets the pool configuration of one stage.
    pub fn stage(mut self, name: impl Into<String>, config: StagePoolConfig) -> Self {
        self.per_stage.insert(name.into(), config);
        self
    }
}
