//! The waiting room: tasks that want a slot, ordered by priority then arrival.
//!
//! One ordered map per stage keeps each stage's queue sorted (higher priority
//! first, FIFO within a priority). The dispatcher looks at the *head of every
//! stage* and picks the best one whose stage has room, so a stage at its limit
//! never blocks other stages' tasks queued behind it (no head-of-line
//! blocking). An index by task id makes cancellation of a queued task
//! `O(log n)`.
//!
//! This module is a plain data structure: no locking, no counters, no limits.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Position of a task in the queue: priority (higher first), then sequence
/// number (lower, i.e. earlier, first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueKey {
    pub priority: i32,
    pub seq: u64,
}

impl QueueKey {
    fn sort_key(&self) -> (Reverse<i32>, u64) {
        (Reverse(self.priority), self.seq)
    }
}

impl Ord for QueueKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for QueueKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Per-stage priority queues with removal by id.
#[derive(Debug)]
pub(crate) struct StageQueues<E> {
    stages: HashMap<Arc<str>, BTreeMap<QueueKey, (u64, E)>>,
    index: HashMap<u64, (Arc<str>, QueueKey)>,
}

impl<E> Default for StageQueues<E> {
    fn default() -> Self {
        Self { stages: HashMap::new(), index: HashMap::new() }
    }
}

impl<E> StageQueues<E> {
    /// Number of queued entries, all stages together.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of queued entries of one stage.
    pub fn stage_len(&self, stage: &str) -> usize {
        self.stages.get(stage).map_or(0, BTreeMap::len)
    }

    /// Adds an entry. `id` must be unique among queued entries.
    pub fn push(&mut self, stage: Arc<str>, key: QueueKey, id: u64, entry: E) {
        self.index.insert(id, (stage.clone(), key));
        self.stages.entry(stage).or_default().insert(key, (id, entry));
    }

    /// Removes the entry with this id, if it is still queued.
    pub fn remove(&mut self, id: u64) -> Option<E> {
        let (stage, key) = self.index.remove(&id)?;
        let queue = self.stages.get_mut(&stage)?;
        let (_, entry) = queue.remove(&key)?;
        if queue.is_empty() {
            self.stages.remove(&stage);
        }
        Some(entry)
    }

    /// The best entry of every non-empty stage, in no particular order.
    pub fn heads(&self) -> impl Iterator<Item = (&Arc<str>, QueueKey, u64, &E)> {
        self.stages
            .iter()
            .filter_map(|(stage, queue)| queue.first_key_value().map(|(key, (id, entry))| (stage, *key, *id, entry)))
    }

    /// Removes and returns the best entry of `stage`.
    pub fn pop_stage(&mut self, stage: &str) -> Option<(u64, E)> {
        let queue = self.stages.get_mut(stage)?;
        let (_, (id, entry)) = queue.pop_first()?;
        if queue.is_empty() {
            self.stages.remove(stage);
        }
        self.index.remove(&id);
        Some((id, entry))
    }

    /// Removes every entry, returning them.
    pub fn drain(&mut self) -> Vec<(u64, E)> {
        self.index.clear();
        self.stages.drain().flat_map(|(_, queue)| queue.into_values()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(priority: i32, seq: u64) -> QueueKey {
        QueueKey { priority, seq }
    }

    #[test]
    fn orders_by_priority_then_fifo() {
        let mut q = StageQueues::default();
        let s: Arc<str> = "a".into();
        q.push(s.clone(), key(0, 1), 1, "low-1");
        q.push(s.clone(), key(5, 2), 2, "high-2");
        q.push(s.clone(), key(0, 3), 3, "low-3");
        q.push(s.clone(), key(5, 4), 4, "high-4");
        let order: Vec<_> = std::iter::from_fn(|| q.pop_stage("a").map(|(_, e)| e)).collect();
        assert_eq!(order, ["high-2", "high-4", "low-1", "low-3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn remove_by_id_and_heads_per_stage() {
        let mut q = StageQueues::default();
        q.push("a".into(), key(1, 1), 1, 'x');
        q.push("a".into(), key(2, 2), 2, 'y');
        q.push("b".into(), key(0, 3), 3, 'z');
        assert_eq!(q.len(), 3);
        assert_eq!(q.remove(2), Some('y'));
        assert_eq!(q.remove(2), None);
        let mut heads: Vec<_> = q.heads().map(|(s, _, id, e)| (s.to_string(), id, *e)).collect();
        heads.sort();
        assert_eq!(heads, [("a".to_string(), 1, 'x'), ("b".to_string(), 3, 'z')]);
        assert_eq!(q.stage_len("a"), 1);
        assert_eq!(q.drain().len(), 2);
        assert!(q.is_empty());
        assert_eq!(q.stage_len("a"), 0);
    }
}
