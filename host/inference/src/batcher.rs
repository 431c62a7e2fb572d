//! Dynamic batching, Triton style: calls to one model that arrive within
//! `batch_delay` of the oldest waiting call, and whose item shapes agree,
//! are stacked along the batch dimension (up to `max_batch` rows), run once
//! and scattered back, each caller getting its own rows.
//!
//! `instances` worker threads (plain OS threads, never the async executor)
//! share one queue. One idle worker at a time "forms" a batch: it waits for
//! the window of the oldest call to close or for the queue to hold the
//! largest preferred batch size (`preferred_batch_size`, Triton's; without
//! it, `max_batch`), takes the rows and runs them while the next idle
//! worker forms the next batch. Under load every worker is busy, calls pile
//! up, and the next batch forms at once and full: batches grow with load,
//! latency stays bounded by `batch_delay` when idle.
//!
//! What one batch takes ([`batch_cap`]): the queue's rows split evenly over
//! the idle workers (so a burst of 32 calls on 2 instances runs as two
//! batches of 16 on both cores, not one of 32 on one core while the other
//! waits), then rounded down to the largest preferred size that fits.
//!
//! A caller that goes away (its future dropped, or its deadline passed)
//! drops its reply channel; the queue prunes such calls before counting
//! rows for a batch or refusing a call as "queue full", so they cost no
//! slot and no work.

use crate::config::ModelConfig;
use crate::engine::CompiledModel;
use crate::error::InferError;
use crate::tensor::Tensor;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a caller gets back.
pub type Reply = Result<Vec<Tensor>, InferError>;

/// Per-model counters, kept across reloads of the model.
#[derive(Debug, Default)]
pub struct Counters {
    pending: AtomicU64,
    running: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    rows: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ModelStats {
    /// Calls waiting in the queue.
    pub pending: u64,
    /// Batches executing now.
    pub running: u64,
    /// Calls answered with outputs.
    pub completed: u64,
    /// Calls answered with an error by the model.
    pub failed: u64,
    /// Calls whose caller went away before their batch ran.
    pub cancelled: u64,
    /// Calls that passed their deadline (queue time plus execution).
    pub timed_out: u64,
    /// Calls refused because the queue was full.
    pub rejected: u64,
    /// Batches run.
    pub batches: u64,
    /// Rows run, over all batches.
    pub rows: u64,
    /// `rows / batches`.
    pub mean_batch: f64,
}

impl Counters {
    pub fn snapshot(&self) -> ModelStats {
        let batches = self.batches.load(Relaxed);
        let rows = self.rows.load(Relaxed);
        ModelStats {
            pending: self.pending.load(Relaxed),
            running: self.running.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            batches,
            rows,
            mean_batch: if batches == 0 { 0.0 } else { rows as f64 / batches as f64 },
        }
    }

    /// Called by the caller's side when its deadline passed first.
    pub fn timed_out(&self) {
        self.timed_out.fetch_add(1, Relaxed);
    }
}

/// One queued call: its inputs in model order, already validated.
struct Request {
    inputs: Vec<Tensor>,
    rows: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

impl Request {
    /// Calls with the same item shapes can share a batch.
    fn fits_with(&self, other: &Request) -> bool {
        self.inputs.iter().zip(&other.inputs).all(|(a, b)| a.shape[1..] == b.shape[1..])
    }

    fn gone(&self, now: Instant) -> bool {
        self.reply.is_closed() || now >= self.deadline
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Request>,
    queued_rows: usize,
    /// A worker is waiting for the current batch window to close.
    forming: bool,
    /// Workers running a batch now.
    running: usize,
    /// No more calls; workers drain the queue and exit.
    closed: bool,
}

struct Shared {
    model: String,
    engine: Arc<CompiledModel>,
    max_batch: usize,
    max_queue: usize,
    delay: Duration,
    instances: usize,
    /// Ascending; empty: `max_batch` alone.
    preferred: Vec<usize>,
    counters: Arc<Counters>,
    state: Mutex<State>,
    wake: Condvar,
}

/// Why [`Batcher::submit`] did not queue a call.
pub enum Refused {
    /// The queue holds `max_queue` rows already.
    Full(String),
    /// The batcher was closed (its model reloaded): the inputs come back to
    /// be sent to the new one.
    Closed(Vec<Tensor>),
}

/// The queue and workers of one loaded model version.
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// Starts `config.instances` worker threads for `engine`.
    pub fn start(engine: Arc<CompiledModel>, config: &ModelConfig, counters: Arc<Counters>) -> anyhow::Result<Batcher> {
        let shared = Arc::new(Shared {
            model: config.name.clone(),
            engine,
            max_batch: config.max_batch,
            max_queue: config.max_queue,
            delay: config.batch_delay,
            instances: config.instances,
            preferred: config.preferred_batch.clone(),
            counters,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        for i in 0..config.instances {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("infer-{}-{i}", config.name))
                .spawn(move || worker(&shared))
                .map_err(|e| anyhow::anyhow!("cannot start inference worker {i} of '{}': {e}", config.name))?;
        }
        Ok(Batcher { shared })
    }

    /// Queues one call of `rows` rows; the receiver gets its outputs.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Reply>, Refused> {
        let s = &self.shared;
        let mut st = lock(&s.state);
        if st.closed {
            return Err(Refused::Closed(inputs));
        }
        if st.queued_rows + rows > s.max_queue {
            prune(&mut st, &s.counters);
            if st.queued_rows + rows > s.max_queue {
                s.counters.rejected.fetch_add(1, Relaxed);
                return Err(Refused::Full(format!(
                    "model '{}' has {} rows queued (max_queue {}); retry later",
                    s.model, st.queued_rows, s.max_queue
                )));
            }
        }
        let (reply, rx) = oneshot::channel();
        st.queue.push_back(Request { inputs, rows, enqueued: Instant::now(), deadline, reply });
        st.queued_rows += rows;
        s.counters.pending.fetch_add(1, Relaxed);
        drop(st);
        s.wake.notify_all();
        Ok(rx)
    }

    /// Stops taking calls; the workers finish what is queued, then exit.
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A worker panicking inside tract is caught (see run_batch); the state
    // itself is always left consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops calls whose caller went away or whose deadline passed.
fn prune(st: &mut State, counters: &Counters) {
    let now = Instant::now();
    if !st.queue.iter().any(|r| r.gone(now)) {
        return;
    }
    let mut kept = VecDeque::with_capacity(st.queue.len());
    for r in st.queue.drain(..) {
        if r.gone(now) {
            st.queued_rows -= r.rows;
            counters.pending.fetch_sub(1, Relaxed);
            if r.reply.is_closed() && now < r.deadline {
                counters.cancelled.fetch_add(1, Relaxed);
            }
        } else {
            kept.push_back(r);
        }
    }
    st.queue = kept;
}

/// Rows of the queued calls that can join the oldest one's batch.
fn batchable_rows(st: &State, max_batch: usize) -> usize {
    let Some(head) = st.queue.front() else { return 0 };
    let mut rows = 0;
    for r in st.queue.iter().filter(|r| r.fits_with(head)) {
        if rows + r.rows > max_batch {
            break;
        }
        rows += r.rows;
    }
    rows
}

/// Rows the next batch may take, given `rows` that could join it, `idle`
/// workers (the forming one included) and the preferred sizes (ascending):
/// an even share per idle worker, at most `max_batch`, rounded down to the
/// largest preferred size that fits when one does.
pub fn batch_cap(rows: usize, idle: usize, max_batch: usize, preferred: &[usize]) -> usize {
    let share = if idle > 1 { rows.div_ceil(idle) } else { rows };
    let cap = share.clamp(1, max_batch);
    preferred.iter().rev().copied().find(|&p| p <= cap).unwrap_or(cap)
}

/// Takes the oldest call and the later ones that fit with it, in order, up
/// to `max_batch` rows (the oldest call always, whatever its rows).
fn take_batch(st: &mut State, max_batch: usize) -> Vec<Request> {
    let Some(head) = st.queue.pop_front() else { return Vec::new() };
    let mut rows = head.rows;
    let mut batch = vec![head];
    let mut ix = 0;
    while ix < st.queue.len() && rows < max_batch {
        let r = &st.queue[ix];
        if r.fits_with(&batch[0]) && rows + r.rows <= max_batch {
            rows += r.rows;
            batch.push(st.queue.remove(ix).expect("index checked"));
        } else {
            ix += 1;
        }
    }
    st.queued_rows -= rows;
    batch
}

fn worker(s: &Shared) {
    loop {
        let batch = {
            let mut st = lock(&s.state);
            loop {
                prune(&mut st, &s.counters);
                if !st.forming && !st.queue.is_empty() {
                    break;
                }
                if st.closed && st.queue.is_empty() {
                    return;
                }
                st = s.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.forming = true;
            let window_end = st.queue.front().map_or_else(Instant::now, |r| r.enqueued + s.delay);
            let goal = s.preferred.last().copied().unwrap_or(s.max_batch);
            loop {
                prune(&mut st, &s.counters);
                let now = Instant::now();
                if st.queue.is_empty() || st.closed || now >= window_end || batchable_rows(&st, s.max_batch) >= goal {
                    break;
                }
                st = s.wake.wait_timeout(st, window_end - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            let idle = s.instances.saturating_sub(st.running).max(1);
            let cap = batch_cap(batchable_rows(&st, s.max_batch), idle, s.max_batch, &s.preferred);
            let batch = take_batch(&mut st, cap);
            s.counters.pending.fetch_sub(batch.len() as u64, Relaxed);
            st.forming = false;
            if !batch.is_empty() {
                st.running += 1;
            }
            batch
        };
        s.wake.notify_all();
        if !batch.is_empty() {
            run_batch(s, batch);
            lock(&s.state).running -= 1;
        }
    }
}

/// Stacks the calls' inputs, runs them once and scatters the outputs.
fn run_batch(s: &Shared, batch: Vec<Request>) {
    let rows: usize = batch.iter().map(|r| r.rows).sum();
    let span = tracing::debug_span!("infer_batch", model = %s.model, calls = batch.len(), rows);
    let _enter = span.enter();
    let stacked: Vec<Tensor> = (0..batch[0].inputs.len())
        .map(|ix| {
            let first = &batch[0].inputs[ix];
            let mut shape = first.shape.clone();
            shape[0] = rows;
            let mut data = Vec::with_capacity(batch.iter().map(|r| r.inputs[ix].data.len()).sum());
            for r in &batch {
                data.extend_from_slice(&r.inputs[ix].data);
            }
            Tensor { name: first.name.clone(), shape, dtype: first.dtype, data }
        })
        .collect();
    s.counters.running.fetch_add(1, Relaxed);
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.engine.run(&stacked)));
    s.counters.running.fetch_sub(1, Relaxed);
    s.counters.batches.fetch_add(1, Relaxed);
    s.counters.rows.fetch_add(rows as u64, Relaxed);
    tracing::debug!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "batch ran");
    let outputs = match result {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(e)) => return fail_all(s, batch, format!("model '{}' failed on a batch of {rows}: {e:#}", s.model)),
        Err(_) => return fail_all(s, batch, format!("model '{}' panicked on a batch of {rows}", s.model)),
    };
    if let Some(bad) = outputs.iter().find(|t| t.shape.first() != Some(&rows)) {
        let shape = crate::tensor::shape_str(&bad.shape);
        return fail_all(
            s,
            batch,
            format!("model '{}' output '{}' has shape {shape} for a batch of {rows} rows", s.model, bad.name),
        );
    }
    let mut offset = 0;
    for r in batch {
        let mine = outputs
            .iter()
            .map(|t| {
                let row_bytes = t.data.len() / rows;
                let mut shape = t.shape.clone();
                shape[0] = r.rows;
                let data = t.data[offset * row_bytes..(offset + r.rows) * row_bytes].to_vec();
                Tensor { name: t.name.clone(), shape, dtype: t.dtype, data }
            })
            .collect();
        offset += r.rows;
        s.counters.completed.fetch_add(1, Relaxed);
        let _ = r.reply.send(Ok(mine));
    }
}

fn fail_all(s: &Shared, batch: Vec<Request>, message: String) {
    tracing::warn!("{message}");
    for r in batch {
        s.counters.failed.fetch_add(1, Relaxed);
        let _ = r.reply.send(Err(InferError::Failed(message.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::batch_cap;

    #[test]
    fn a_batch_is_split_over_idle_workers_and_rounded_to_a_preferred_size() {
        // 32 rows, 2 idle workers, no preference: 16 each.
        assert_eq!(batch_cap(32, 2, 32, &[]), 16);
        // One idle worker takes all it may.
        assert_eq!(batch_cap(32, 1, 32, &[]), 32);
        assert_eq!(batch_cap(40, 1, 32, &[]), 32);
        // Rounded down to the largest preferred size that fits.
        assert_eq!(batch_cap(20, 1, 32, &[4, 8, 16]), 16);
        assert_eq!(batch_cap(7, 1, 32, &[4, 8, 16]), 4);
        // Fewer rows than any preferred size: take them.
        assert_eq!(batch_cap(3, 1, 32, &[4, 8]), 3);
        // An odd number split: the first batch takes the larger half.
        assert_eq!(batch_cap(5, 2, 32, &[]), 3);
        assert_eq!(batch_cap(0, 2, 32, &[]), 1);
    }
}
