//! Per-stage pools: how many slots a stage may use and how many it uses.
//!
//! A normal task takes one slot of its stage (and one global worker, counted
//! by the scheduler). A **dedicated** task takes its stage's *whole* pool: it
//! starts only when no other task of the stage runs, and while it runs no
//! other task of that stage starts. It still counts as exactly one global
//! worker, so other stages go on. Use it for work that must not share its
//! stage's resources (a model that owns the GPU, an instance that uses all
//! cores). Within a stage the queue order is kept: a dedicated task at the
//! head waits for the stage to empty and later tasks of the stage wait behind
//! it, so it cannot be starved.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::counters::Counters;

/// Configuration of one stage's pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePoolConfig {
    /// Concurrency limit of the stage (clamped to at least 1). `None`: the
    /// scheduler's `default_stage_limit`.
    pub limit: Option<usize>,
    /// Per-instance memory estimate used when a task's `memory_bytes` is 0
    /// (the stage's declared or measured memory).
    pub memory_bytes: Option<u64>,
}

impl StagePoolConfig {
    /// The stage's limit: its own, else `default_limit`; at least 1.
    pub(crate) fn limit_or(&self, default_limit: usize) -> usize {
        self.limit.unwrap_or(default_limit).max(1)
    }
}

/// Live state of one stage's pool. Guarded by the scheduler's dispatch lock.
#[derive(Debug)]
pub(crate) struct StagePool {
    pub limit: usize,
    pub memory_bytes: Option<u64>,
    /// Tasks of this stage holding a slot.
    pub running: usize,
    /// Whether a dedicated task holds the whole pool.
    pub dedicated_running: bool,
    pub counters: Arc<Counters>,
}

impl StagePool {
    pub fn new(config: &StagePoolConfig, default_limit: usize) -> Self {
        Self {
            limit: config.limit_or(default_limit),
            memory_bytes: config.memory_bytes,
            running: 0,
            dedicated_running: false,
            counters: Arc::default(),
        }
    }

    /// Applies a new configuration; running tasks are not touched (a lower
    /// limit takes effect as they finish).
    pub fn reconfigure(&mut self, config: &StagePoolConfig, default_limit: usize) {
        self.limit = config.limit_or(default_limit);
        self.memory_bytes = config.memory_bytes;
    }

    /// Whether a task (dedicated or not) of this stage could start now.
    pub fn has_room(&self, dedicated: bool) -> bool {
        if self.dedicated_running {
            return false;
        }
        if dedicated {
            self.running == 0
        } else {
            self.running < self.limit
        }
    }

    pub fn occupy(&mut self, dedicated: bool) {
        debug_assert!(self.has_room(dedicated));
        self.running += 1;
        self.dedicated_running |= dedicated;
    }

    pub fn release(&mut self, dedicated: bool) {
        self.running = self.running.saturating_sub(1);
        if dedicated {
            self.dedicated_running = false;
        }
    }

    /// Slots in use: the whole pool while a dedicated task runs.
    pub fn slots_in_use(&self) -> usize {
        if self.dedicated_running {
            self.limit.max(self.running)
        } else {
            self.running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_and_dedicated_exclusivity() {
        let mut pool = StagePool::new(&StagePoolConfig { limit: Some(2), memory_bytes: None }, 8);
        assert!(pool.has_room(false));
        pool.occupy(false);
        assert!(!pool.has_room(true), "dedicated waits for the stage to empty");
        pool.occupy(false);
        assert!(!pool.has_room(false));
        pool.release(false);
        pool.release(false);
        pool.occupy(true);
        assert!(!pool.has_room(false));
        assert_eq!(pool.slots_in_use(), 2);
        pool.release(true);
        assert!(pool.has_room(false));
        assert_eq!(pool.slots_in_use(), 0);
    }

    #[test]
    fn default_limit_and_clamp() {
        assert_eq!(StagePool::new(&StagePoolConfig::default(), 3).limit, 3);
        assert_eq!(StagePool::new(&StagePoolConfig { limit: Some(0), memory_bytes: None }, 3).limit, 1);
    }
}
