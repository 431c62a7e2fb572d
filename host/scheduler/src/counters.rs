//! Live counters: lock-free atomics updated at every task transition, one set
//! for the whole scheduler and one per stage.
//!
//! `queued` and `running` are gauges (they go up and down); the others only
//! grow. Reading them never takes the dispatch lock, so monitoring is cheap.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One set of task counters (overall, or for one stage).
#[derive(Debug, Default)]
pub struct Counters {
    queued: AtomicU64,
    running: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    cancelled: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// Tasks waiting for a slot (first attempts and retries).
    pub queued: u64,
    /// Tasks holding a slot right now.
    pub running: u64,
    /// Tasks that finished successfully.
    pub completed: u64,
    /// Tasks that finished with a failure after their last attempt.
    pub failed: u64,
    /// Retries scheduled (attempts beyond the first).
    pub retried: u64,
    /// Tasks cancelled (by a handle, a dropped handle, or shutdown).
    pub cancelled: u64,
}

/// Which counter to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Queued,
    Running,
    Completed,
    Failed,
    Retried,
    Cancelled,
}

impl Counters {
    fn cell(&self, counter: Counter) -> &AtomicU64 {
        match counter {
            Counter::Queued => &self.queued,
            Counter::Running => &self.running,
            Counter::Completed => &self.completed,
            Counter::Failed => &self.failed,
            Counter::Retried => &self.retried,
            Counter::Cancelled => &self.cancelled,
        }
    }

    pub(crate) fn incr(&self, counter: Counter) {
        self.cell(counter).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn decr(&self, counter: Counter) {
        // Gauges only: saturate rather than wrap if a bug ever unbalanced them.
        let _ = self.cell(counter).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }

    /// Reads every counter (each read is atomic; the set is not one snapshot).
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            queued: get(&self.queued),
            running: get(&self.running),
            completed: get(&self.completed),
            failed: get(&self.failed),
            retried: get(&self.retried),
            cancelled: get(&self.cancelled),
        }
    }
}

/// Moves a counter in the overall set and in the stage's set together.
pub(crate) fn both(overall: &Counters, stage: &Counters, counter: Counter, up: bool) {
    for set in [overall, stage] {
        if up {
            set.incr(counter);
        } else {
            set.decr(counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_saturate_and_snapshot_reads() {
        let c = Counters::default();
        c.incr(Counter::Queued);
        c.decr(Counter::Queued);
        c.decr(Counter::Queued);
        c.incr(Counter::Completed);
        let s = c.snapshot();
        assert_eq!(s.queued, 0);
        assert_eq!(s.completed, 1);
    }
}
