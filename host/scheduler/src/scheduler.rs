//! The [`Scheduler`]: admission (`submit`), dispatch (who gets the next
//! slot), slot release, status, cancellation and shutdown.
//!
//! All dispatch state sits behind one mutex ([`State`]), never held across an
//! await. Dispatch is event-driven: it runs synchronously whenever capacity
//! may have appeared (a submit, a slot released, a queued task removed, a
//! stage reconfigured) and hands slots to waiting task drivers through
//! oneshot channels. Nothing polls with sleeps; the only timer is the
//! memory-pressure re-check, armed only while pressure holds tasks back.
//!
//! Dispatch rule: among the heads of all stage queues whose stage has room,
//! take the best (highest priority, then earliest submitted); start it if the
//! global limit (reduced under memory pressure) and the memory budget allow.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle as RuntimeHandle;
use tokio::sync::{broadcast, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::config::SchedulerConfig;
use crate::counters::{self, Counter, CounterSnapshot, Counters};
use crate::driver::Driver;
use crate::events::{EventBus, TaskEvent, TaskEventKind};
use crate::handle::{CancelReason, TaskCtl, TaskHandle};
use crate::memory::PressureMonitor;
use crate::pool::{StagePool, StagePoolConfig};
use crate::queue::{QueueKey, StageQueues};
use crate::retry::{Backoff, RetryPolicy};
use crate::status::{MemoryStatus, QueueStatus, StageStatus};
use crate::task::{Attempt, Failure, SubmitError, TaskId, TaskSpec};

/// How [`Scheduler::shutdown`] treats work already accepted. In every mode
/// new submissions are refused with [`SubmitError::ShuttingDown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Run everything accepted to completion, retries included.
    Drain,
    /// Queued tasks and tasks waiting to retry end with `ShuttingDown`;
    /// running attempts finish, and one that fails retryably is not retried
    /// but ends with `ShuttingDown` (its failure is in the attempt records).
    Graceful,
    /// Like `Graceful`, and running attempts are cancelled (their futures
    /// dropped) and end with `ShuttingDown`.
    Cancel,
}

/// Schedules opaque async work over per-stage pools. Cheap to clone.
///
/// Dispatch rule, applied whenever capacity may have appeared: among the
/// heads of all stage queues whose stage has room, take the best (highest
/// priority, then earliest submitted) and start it if the global limit
/// (`max_workers`, reduced under memory pressure) and the memory budget
/// allow. A full stage therefore never blocks another stage's tasks. A retry
/// re-enters the queue at its original place (same priority and submission
/// order) and is not refused by `max_queue`.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("status", &self.status()).finish()
    }
}

/// Fixed limits, resolved from the config at construction.
#[derive(Debug)]
pub(crate) struct ResolvedLimits {
    pub max_workers: usize,
    pub max_queue: usize,
    pub default_stage_limit: usize,
    pub retry: RetryPolicy,
    pub default_timeout: Option<Duration>,
    pub memory_budget: u64,
}

/// A task waiting in the queue.
#[derive(Debug)]
struct Waiting {
    stage: Arc<str>,
    memory: u64,
    dedicated: bool,
    grant: oneshot::Sender<Slot>,
}

/// Everything dispatch decides on, behind one mutex.
#[derive(Debug)]
struct State {
    queue: StageQueues<Waiting>,
    stages: HashMap<Arc<str>, StagePool>,
    stage_configs: HashMap<String, StagePoolConfig>,
    /// Tasks holding a slot (global workers in use).
    running: usize,
    /// Sum of running tasks' memory estimates.
    memory_used: u64,
    /// Every task whose driver has not finished yet.
    live: HashMap<TaskId, Arc<TaskCtl>>,
    accepting: bool,
    shutdown: Option<ShutdownMode>,
    recheck_armed: bool,
    next_seq: u64,
}

impl State {
    fn pool(&mut self, stage: &Arc<str>, default_limit: usize) -> &mut StagePool {
        if !self.stages.contains_key(stage) {
            let config = self.stage_configs.get(&**stage).cloned().unwrap_or_default();
            self.stages.insert(stage.clone(), StagePool::new(&config, default_limit));
        }
        self.stages.get_mut(stage).expect("inserted above")
    }
}

pub(crate) struct Inner {
    state: Mutex<State>,
    pub(crate) limits: ResolvedLimits,
    counters: Counters,
    pressure: PressureMonitor,
    events: EventBus,
    runtime: RuntimeHandle,
    next_id: AtomicU64,
    /// Signalled when the last live task finishes.
    idle: Notify,
    /// The shutdown mode, for drivers sleeping in backoff.
    shutdown_tx: watch::Sender<Option<ShutdownMode>>,
    rng: Mutex<fastrand::Rng>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A granted slot: one global worker, stage room and memory budget. Dropping
/// it gives all three back and dispatches the next task.
#[derive(Debug)]
pub(crate) struct Slot {
    inner: Arc<Inner>,
    stage: Arc<str>,
    memory: u64,
    dedicated: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.release(&self.stage, self.memory, self.dedicated);
    }
}

impl Scheduler {
    /// Creates a scheduler on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime; use [`Scheduler::with_runtime`] there.
    pub fn new(config: SchedulerConfig) -> Self {
        Self::with_runtime(config, RuntimeHandle::current())
    }

    /// Creates a scheduler whose task drivers run on `runtime`. `submit` may
    /// then be called from any thread.
    pub fn with_runtime(config: SchedulerConfig, runtime: RuntimeHandle) -> Self {
        let default_stage_limit = config.default_stage_limit.max(1);
        let limits = ResolvedLimits {
            max_workers: config.max_workers.max(1),
            max_queue: config.max_queue.max(1),
            default_stage_limit,
            retry: config.retry,
            default_timeout: config.default_timeout,
            memory_budget: config.memory.resolve_budget(),
        };
        let stages = config
            .per_stage
            .iter()
            .map(|(name, c)| (Arc::from(name.as_str()), StagePool::new(c, default_stage_limit)))
            .collect();
        let state = State {
            queue: StageQueues::default(),
            stages,
            stage_configs: config.per_stage,
            running: 0,
            memory_used: 0,
            live: HashMap::new(),
            accepting: true,
            shutdown: None,
            recheck_armed: false,
            next_seq: 0,
        };
        let inner = Inner {
            state: Mutex::new(state),
            limits,
            counters: Counters::default(),
            pressure: PressureMonitor::new(config.memory),
            events: EventBus::new(config.event_capacity),
            runtime,
            next_id: AtomicU64::new(1),
            idle: Notify::new(),
            shutdown_tx: watch::channel(None).0,
            rng: Mutex::new(fastrand::Rng::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Queues `work` for `spec.stage`. `work` is called once per attempt and
    /// its future runs while holding a slot, under the attempt deadline.
    ///
    /// Fails at once with [`SubmitError::QueueFull`] when `max_queue` tasks
    /// are already waiting, and [`SubmitError::ShuttingDown`] after
    /// [`shutdown`](Self::shutdown). Dropping the returned handle cancels the
    /// task.
    pub fn submit<T, F, Fut>(&self, spec: TaskSpec, work: F) -> Result<TaskHandle<T>, SubmitError>
    where
        F: Fn(Attempt) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
        T: Send + 'static,
    {
        let inner = &self.inner;
        let id = TaskId(inner.next_id.fetch_add(1, Ordering::Relaxed));
        let ctl = Arc::new(TaskCtl::default());
        let stage: Arc<str> = spec.stage.as_str().into();
        let queued_at = Instant::now();
        let (grant, seq, stage_counters) = {
            let mut st = inner.lock();
            if !st.accepting {
                return Err(SubmitError::ShuttingDown);
            }
            if st.queue.len() >= inner.limits.max_queue {
                return Err(SubmitError::QueueFull { max: inner.limits.max_queue });
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.live.insert(id, ctl.clone());
            let grant = inner.enqueue(&mut st, id, &stage, &spec, seq);
            let stage_counters = st.stages[&stage].counters.clone();
            (grant, seq, stage_counters)
        };
        tracing::debug!(task = %id, stage = %stage, priority = spec.priority, label = %spec.label, "task queued");
        inner.events.emit(id, &stage, &spec.label, TaskEventKind::Queued { priority: spec.priority });
        let (tx, rx) = oneshot::channel();
        let driver = Driver {
            inner: inner.clone(),
            id,
            ctl: ctl.clone(),
            spec,
            stage,
            stage_counters,
            seq,
            work,
            result_tx: tx,
            queued_at,
        };
        inner.runtime.spawn(driver.run(grant));
        inner.dispatch();
        Ok(TaskHandle::new(id, ctl, Arc::downgrade(inner), rx, queued_at))
    }

    /// Cancels a task by id (queued: removed, never starts; running: its
    /// future is dropped). Returns `false` if it is unknown, finished, or
    /// already cancelled.
    pub fn cancel(&self, id: TaskId) -> bool {
        let ctl = self.inner.lock().live.get(&id).cloned();
        let Some(ctl) = ctl else { return false };
        let set = ctl.cancel(CancelReason::User);
        if set {
            self.inner.remove_queued(id);
        }
        set
    }

    /// Subscribes to task lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.inner.events.subscribe()
    }

    /// Sets (or replaces) one stage's pool configuration at run time. A
    /// lower limit takes effect as running tasks finish.
    pub fn configure_stage(&self, stage: &str, config: &StagePoolConfig) {
        {
            let mut st = self.inner.lock();
            let default_limit = self.inner.limits.default_stage_limit;
            st.stage_configs.insert(stage.to_owned(), config.clone());
            let key: Arc<str> = stage.into();
            st.pool(&key, default_limit).reconfigure(config, default_limit);
        }
        self.inner.dispatch();
    }

    /// The limit of tasks in flight for `stage`: its pool's, else the
    /// default stage limit.
    pub fn stage_limit(&self, stage: &str) -> usize {
        let st = self.inner.lock();
        match st.stages.get(stage) {
            Some(pool) => pool.limit,
            None => {
                st.stage_configs.get(stage).cloned().unwrap_or_default().limit_or(self.inner.limits.default_stage_limit)
            }
        }
    }

    /// The global limit of tasks in flight (`max_workers`).
    pub fn in_flight_limit(&self) -> usize {
        self.inner.limits.max_workers
    }

    /// Whether new tasks are accepted (false once shutdown began).
    pub fn is_running(&self) -> bool {
        self.inner.lock().accepting
    }

    /// Overall counters, read without taking the dispatch lock.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters.snapshot()
    }

    /// A snapshot of queue, pools, counters and memory.
    pub fn status(&self) -> QueueStatus {
        let inner = &self.inner;
        let level = inner.pressure.level();
        let (_, used_fraction) = inner.pressure.last();
        let counters = inner.counters.snapshot();
        let st = inner.lock();
        let mut stages: Vec<StageStatus> = st
            .stages
            .iter()
            .map(|(name, pool)| {
                let c = pool.counters.snapshot();
                StageStatus {
                    name: name.to_string(),
                    limit: pool.limit,
                    running: pool.running,
                    slots_in_use: pool.slots_in_use(),
                    queued: st.queue.stage_len(name),
                    completed: c.completed,
                    failed: c.failed,
                    retried: c.retried,
                    cancelled: c.cancelled,
                }
            })
            .collect();
        stages.sort_by(|a, b| a.name.cmp(&b.name));
        QueueStatus {
            queue_size: st.queue.len(),
            max_queue_size: inner.limits.max_queue,
            running_tasks: st.running,
            max_workers: inner.limits.max_workers,
            effective_workers: level.effective_workers(inner.limits.max_workers),
            completed: counters.completed,
            failed: counters.failed,
            retried: counters.retried,
            cancelled: counters.cancelled,
            is_running: st.accepting,
            stages,
            memory: MemoryStatus {
                budget_used_bytes: st.memory_used,
                budget_total_bytes: inner.limits.memory_budget,
                pressure: level,
                host_used_fraction: used_fraction,
            },
        }
    }

    /// Stops accepting tasks and waits until every accepted task's driver
    /// has finished, treating accepted work as `mode` says. Calling it again
    /// with a stronger mode (Drain < Graceful < Cancel) escalates.
    pub async fn shutdown(&self, mode: ShutdownMode) {
        let inner = &self.inner;
        let (dropped, to_cancel) = {
            let mut st = inner.lock();
            st.accepting = false;
            st.shutdown = Some(match st.shutdown {
                Some(prev) if rank(prev) >= rank(mode) => prev,
                _ => mode,
            });
            let mode = st.shutdown.expect("set above");
            let dropped = if mode == ShutdownMode::Drain { Vec::new() } else { st.queue.drain() };
            for (_, waiting) in &dropped {
                let pool = st.pool(&waiting.stage, inner.limits.default_stage_limit);
                counters::both(&inner.counters, &pool.counters, Counter::Queued, false);
            }
            let to_cancel: Vec<_> =
                if mode == ShutdownMode::Cancel { st.live.values().cloned().collect() } else { Vec::new() };
            inner.shutdown_tx.send_replace(Some(mode));
            (dropped, to_cancel)
        };
        tracing::info!(?mode, dropped = dropped.len(), cancelled = to_cancel.len(), "scheduler shutting down");
        // Dropping the grant senders wakes queued drivers with ShuttingDown.
        drop(dropped);
        for ctl in to_cancel {
            ctl.cancel(CancelReason::Shutdown);
        }
        loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if inner.lock().live.is_empty() {
                break;
            }
            idle.await;
        }
    }
}

fn rank(mode: ShutdownMode) -> u8 {
    match mode {
        ShutdownMode::Drain => 0,
        ShutdownMode::Graceful => 1,
        ShutdownMode::Cancel => 2,
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the lock is held, but do not cascade.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a task (first attempt or retry) into the queue; returns where its
    /// slot will arrive.
    fn enqueue(
        &self,
        st: &mut State,
        id: TaskId,
        stage: &Arc<str>,
        spec: &TaskSpec,
        seq: u64,
    ) -> oneshot::Receiver<Slot> {
        let pool = st.pool(stage, self.limits.default_stage_limit);
        let memory = if spec.memory_bytes > 0 { spec.memory_bytes } else { pool.memory_bytes.unwrap_or(0) };
        counters::both(&self.counters, &pool.counters, Counter::Queued, true);
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting { stage: stage.clone(), memory, dedicated: spec.dedicated, grant: tx };
        st.queue.push(stage.clone(), QueueKey { priority: spec.priority, seq }, id.0, waiting);
        rx
    }

    /// Re-queues a task for its next attempt, keeping its original place
    /// among equal priorities. Not bounded by `max_queue` (the task was
    /// accepted already). `None` once shutdown forbids more attempts.
    pub(crate) fn requeue(
        self: &Arc<Self>,
        id: TaskId,
        stage: &Arc<str>,
        spec: &TaskSpec,
        seq: u64,
    ) -> Option<oneshot::Receiver<Slot>> {
        let rx = {
            let mut st = self.lock();
            if !matches!(st.shutdown, None | Some(ShutdownMode::Drain)) {
                return None;
            }
            self.enqueue(&mut st, id, stage, spec, seq)
        };
        self.dispatch();
        Some(rx)
    }

    /// Removes a task from the queue if it is there (cancellation).
    pub(crate) fn remove_queued(self: &Arc<Self>, id: TaskId) {
        let removed = {
            let mut st = self.lock();
            let removed = st.queue.remove(id.0);
            if let Some(waiting) = &removed {
                let pool = st.pool(&waiting.stage, self.limits.default_stage_limit);
                counters::both(&self.counters, &pool.counters, Counter::Queued, false);
            }
            removed
        };
        if removed.is_some() {
            drop(removed);
            // The removed task may have been what blocked the memory budget.
            self.dispatch();
        }
    }

    /// Starts as many queued tasks as limits allow.
    pub(crate) fn dispatch(self: &Arc<Self>) {
        let level = self.pressure.level();
        let max_workers = self.limits.max_workers;
        let effective = level.effective_workers(max_workers);
        let mut grants = Vec::new();
        let mut arm_recheck = false;
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            while !st.queue.is_empty() {
                if st.running >= effective {
                    // Held back by pressure only: look again when it may
                    // have dropped, even if no task finishes meanwhile.
                    if effective < max_workers && st.running < max_workers && !st.recheck_armed {
                        st.recheck_armed = true;
                        arm_recheck = true;
                    }
                    break;
                }
                let stages = &st.stages;
                let best = st
                    .queue
                    .heads()
                    .filter(|(stage, _, _, w)| stages.get(*stage).is_some_and(|p| p.has_room(w.dedicated)))
                    .min_by_key(|(_, key, _, _)| *key)
                    .map(|(stage, _, _, w)| (stage.clone(), w.memory));
                let Some((stage, memory)) = best else { break };
                // Budget: wait for memory rather than let smaller, lower
                // priority tasks overtake; alone, a task always may start.
                if st.running > 0 && st.memory_used.saturating_add(memory) > self.limits.memory_budget {
                    break;
                }
                let (_, waiting) = st.queue.pop_stage(&stage).expect("head exists");
                let pool = st.stages.get_mut(&stage).expect("pool exists");
                counters::both(&self.counters, &pool.counters, Counter::Queued, false);
                if waiting.grant.is_closed() {
                    continue; // its driver is gone (cancelled); nothing to start
                }
                pool.occupy(waiting.dedicated);
                counters::both(&self.counters, &pool.counters, Counter::Running, true);
                st.running += 1;
                st.memory_used = st.memory_used.saturating_add(memory);
                let slot = Slot { inner: self.clone(), stage, memory, dedicated: waiting.dedicated };
                grants.push((waiting.grant, slot));
            }
        }
        // Outside the lock: a send to a driver that just went away returns
        // the slot, whose drop releases it and dispatches again.
        for (grant, slot) in grants {
            let _ = grant.send(slot);
        }
        if arm_recheck {
            let inner = self.clone();
            let delay = self.pressure.sample_interval().max(Duration::from_millis(10));
            self.runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                inner.lock().recheck_armed = false;
                inner.dispatch();
            });
        }
    }

    /// Gives a slot back (called by `Slot::drop`).
    fn release(self: &Arc<Self>, stage: &str, memory: u64, dedicated: bool) {
        {
            let mut st = self.lock();
            st.running = st.running.saturating_sub(1);
            st.memory_used = st.memory_used.saturating_sub(memory);
            if let Some(pool) = st.stages.get_mut(stage) {
                pool.release(dedicated);
                counters::both(&self.counters, &pool.counters, Counter::Running, false);
            }
        }
        self.dispatch();
    }

    /// Moves a per-task counter up (overall and the stage's set).
    pub(crate) fn count(&self, stage: &Counters, counter: Counter) {
        counters::both(&self.counters, stage, counter, true);
    }

    /// Whether a failed attempt may still be retried (not after a shutdown
    /// other than `Drain`).
    pub(crate) fn retries_allowed(&self) -> bool {
        matches!(*self.shutdown_tx.borrow(), None | Some(ShutdownMode::Drain))
    }

    /// Resolves when a shutdown that forbids retries begins.
    pub(crate) async fn retries_stopped(&self) {
        let mut rx = self.shutdown_tx.subscribe();
        let _ = rx.wait_for(|m| !matches!(m, None | Some(ShutdownMode::Drain))).await;
    }

    pub(crate) fn backoff(&self, policy: &RetryPolicy, retry: u32) -> Backoff {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        policy.backoff(retry, &mut rng)
    }

    pub(crate) fn events(&self) -> &EventBus {
        &self.events
    }

    /// Last step of a driver: forget the task, wake `shutdown` if idle.
    pub(crate) fn finish(self: &Arc<Self>, id: TaskId) {
        let (leftover, idle) = {
            let mut st = self.lock();
            st.live.remove(&id);
            let leftover = st.queue.remove(id.0);
            if let Some(waiting) = &leftover {
                let pool = st.pool(&waiting.stage, self.limits.default_stage_limit);
                counters::both(&self.counters, &pool.counters, Counter::Queued, false);
            }
            (leftover, st.live.is_empty())
        };
        drop(leftover);
        if idle {
            self.idle.notify_waiters();
        }
    }
}
