//! Serializable snapshots of the scheduler's state, for `/status`-style
//! endpoints and the CLI.

use serde::Serialize;

use crate::memory::PressureLevel;

/// The whole scheduler at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    /// Tasks waiting for a slot.
    pub queue_size: usize,
    pub max_queue_size: usize,
    /// Tasks holding a slot (= global workers in use).
    pub running_tasks: usize,
    pub max_workers: usize,
    /// Global limit after memory-pressure reduction.
    pub effective_workers: usize,
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    /// Accepting new tasks.
    pub is_running: bool,
    /// Per-stage pools, sorted by name.
    pub stages: Vec<StageStatus>,
    pub memory: MemoryStatus,
}

/// One stage's pool.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub name: String,
    pub limit: usize,
    pub running: usize,
    /// Slots in use: `limit` while a dedicated task runs, else `running`.
    pub slots_in_use: usize,
    pub queued: usize,
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
}

/// Memory budget and host pressure.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryStatus {
    /// Sum of running tasks' estimates.
    pub budget_used_bytes: u64,
    /// The budget (`u64::MAX`: unlimited).
    pub budget_total_bytes: u64,
    pub pressure: PressureLevel,
    /// Host memory in use at the last sample, in `[0, 1]`.
    pub host_used_fraction: Option<f64>,
}
