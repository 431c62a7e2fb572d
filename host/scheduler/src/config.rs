//! Scheduler configuration and its defaults.

use std::collections::HashMap;
use std::time::Duration;

use crate::memory::MemoryPolicy;
use crate::pool::StagePoolConfig;
use crate::retry::RetryPolicy;

/// Everything the scheduler can be tuned with.
///
/// `max_workers` bounds tasks *in flight* (holding a slot), not cores: a
/// task here is an invocation, and most of what stagecraft runs waits (on
/// hosted models, the GPU, other machines) while holding no core. What
/// bounds the instances that compute is the runtime's CPU slots. The
/// default, [`DEFAULT_IN_FLIGHT`], is Spin's instance pool size; the
/// memory budget bounds it further by the tasks' estimates.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Global limit of tasks holding a slot (in flight), all stages
    /// together (>= 1).
    pub max_workers: usize,
    /// Limit of tasks *waiting* (not running); `submit` beyond it fails with
    /// `QueueFull`. Retries re-entering the queue are not refused (>= 1).
    pub max_queue: usize,
    /// Stage limit for stages without an entry in `per_stage` (default: no
    /// limit below `max_workers`).
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

/// Default in-flight limit: tasks holding a slot at once.
pub const DEFAULT_IN_FLIGHT: usize = 1000;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_workers: DEFAULT_IN_FLIGHT,
            max_queue: 1024,
            default_stage_limit: DEFAULT_IN_FLIGHT,
            per_stage: HashMap::new(),
            retry: RetryPolicy::default(),
            // None: a stagecraft invocation's deadline is the runtime's,
            // counted from its first CPU slot, so that waiting for a core
            // under load is never mistaken for a slow stage.
            default_timeout: None,
            memory: MemoryPolicy::default(),
            event_capacity: 1024,
        }
    }
}

impl SchedulerConfig {
    /// The pre-capacity defaults: one slot per core, globally and per stage
    /// (for callers whose tasks really are one core each).
    pub fn per_core() -> Self {
        let cores = available_cores();
        Self { max_workers: cores, default_stage_limit: cores, ..Self::default() }
    }

    /// Sets the pool configuration of one stage.
    pub fn stage(mut self, name: impl Into<String>, config: StagePoolConfig) -> Self {
        self.per_stage.insert(name.into(), config);
        self
    }
}
