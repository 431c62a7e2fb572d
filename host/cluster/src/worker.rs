//! A worker's loop: take a delivery when a slot is free, run the handler
//! on it while a ticker renews its lease, commit what the handler returns;
//! meanwhile reap expired leases (any worker may) and send heartbeats. On
//! shutdown it stops taking work and drains: jobs that finish within the
//! drain time are committed, the rest are handed back.

use crate::error::Result;
use crate::lease::{Lease, Outcome, Renewal};
use crate::queue::Queue;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The consumer name: unique in the cluster (host and process id).
    pub name: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// On shutdown, how long jobs in hand may take to finish before they
    /// are handed back.
    pub drain: Duration,
}

/// A job in a handler's hands.
#[derive(Clone)]
pub struct Job {
    lease: Arc<Lease>,
    cancel: CancellationToken,
}

impl Job {
    /// The job's id.
    pub fn id(&self) -> &str {
        self.lease.job()
    }
    /// What the submitter enqueued.
    pub fn payload(&self) -> &str {
        self.lease.payload()
    }
    /// Which delivery this is (1 on the first; more after a reclaim).
    pub fn delivery(&self) -> u64 {
        self.lease.delivery()
    }
    /// The delivery's epoch.
    pub fn epoch(&self) -> u64 {
        self.lease.epoch()
    }
    /// Cancelled when a cancel was asked for ([`Queue::cancel`]), which the
    /// worker learns at a renewal: the handler should stop and return
    /// [`Outcome::Cancelled`].
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }
    /// Appends an event to the job's stream (refused once the lease is lost).
    pub async fn event(&self, json: &str) -> Result<bool> {
        self.lease.event(json).await
    }
}

/// What a handler returns.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Succeeded or failed.
    pub outcome: Outcome,
    /// The job's result (the pipeline's report, say), stored with it.
    pub result: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a worker did, counted.
#[derive(Debug, Default)]
pub struct WorkerCounts {
    /// Deliveries taken.
    pub taken: AtomicU64,
    /// Final states written.
    pub committed: AtomicU64,
    /// Commits refused: the lease had been lost.
    pub refused: AtomicU64,
    /// Jobs dropped mid-run because a renewal found the lease lost.
    pub lost: AtomicU64,
    /// Jobs handed back while draining.
    pub handed_back: AtomicU64,
    /// Leases held now.
    pub holding: AtomicU64,
}

/// Runs a worker until `shutdown` is cancelled, then drains.
pub async fn run<H, F>(
    queue: Queue,
    config: WorkerConfig,
    handler: H,
    shutdown: CancellationToken,
    counts: Arc<WorkerCounts>,
) -> Result<()>
where
    H: Fn(Job) -> F + Send + Sync + 'static,
    F: Future<Output = Finished> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let lease_time = queue.config().lease;
    let draining = CancellationToken::new();
    let housekeeping = tokio::spawn(housekeep(queue.clone(), config.name.clone(), counts.clone(), draining.clone()));
    let mut consumer = queue.consumer(&config.name).await?;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let lease = tokio::select! {
            next = consumer.next() => next,
            _ = shutdown.cancelled() => break,
        };
        let lease = match lease {
            Ok(Some(lease)) => Arc::new(lease),
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(worker = %config.name, "reading the queue: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => break,
                }
                // The blocking connection may be the broken one.
                if let Ok(c) = queue.consumer(&config.name).await {
                    consumer = c;
                }
                continue;
            }
        };
        counts.taken.fetch_add(1, Ordering::Relaxed);
        counts.holding.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let work = handler(Job { lease: lease.clone(), cancel: cancel.clone() });
        let counts = counts.clone();
        let draining = draining.clone();
        let drain = config.drain;
        tasks.spawn(async move {
            hold(lease, work, cancel, lease_time, &counts, draining, drain).await;
            counts.holding.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        // Reap finished tasks as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    draining.cancel();
    while tasks.join_next().await.is_some() {}
    housekeeping.abort();
    queue.leave(&config.name).await?;
    Ok(())
}

/// Drives one job: the handler's future against a renewal ticker (a third
/// of the lease), then the commit. Biased toward the work, so a job that
/// finished is committed before another renewal is tried.
async fn hold<F>(
    lease: Arc<Lease>,
    work: F,
    cancel: CancellationToken,
    lease_time: Duration,
    counts: &WorkerCounts,
    draining: CancellationToken,
    drain: Duration,
) where
    F: Future<Output = Finished>,
{
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(lease_time / 3);
    ticker.tick().await;
    let drain_deadline = async {
        draining.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    tokio::pin!(drain_deadline);
    let finished = loop {
        tokio::select! {
            biased;
            finished = &mut work => break finished,
            _ = &mut drain_deadline => {
                match lease.hand_back().await {
                    Ok(true) => counts.handed_back.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => counts.lost.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        // The lease runs out and the reaper hands it on.
                        tracing::warn!(job = lease.job(), "handing back: {e}");
                        0
                    }
                };
                return;
            }
            _ = ticker.tick() => match lease.renew().await {
                Ok(Renewal::Renewed) => {}
                Ok(Renewal::CancelRequested) => cancel.cancel(),
                Ok(Renewal::Lost) => {
                    tracing::warn!(job = lease.job(), epoch = lease.epoch(), "lease lost; dropping the job");
                    counts.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Redis unreachable: keep working; the next tick tries again.
                Err(e) => tracing::warn!(job = lease.job(), "renewing the lease: {e}"),
            },
        }
    };
    // A commit that fails to reach Redis is tried again (until the lease
    // would have run out anyway); a refusal is final.
    let give_up = tokio::time::Instant::now() + lease_time;
    loop {
        match lease.commit(finished.outcome, &finished.result, finished.error.as_deref()).await {
            Ok(true) => {
                counts.committed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(false) => {
                tracing::warn!(job = lease.job(), epoch = lease.epoch(), "commit refused: the lease was lost");
                counts.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::warn!(job = lease.job(), "committing: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::error!(job = lease.job(), "committing: {e}; the reaper will hand the job on");
                return;
            }
        }
    }
}

/// Every third of a lease: a heartbeat, and a reap of expired leases.
async fn housekeep(queue: Queue, name: String, counts: Arc<WorkerCounts>, draining: CancellationToken) {
    let mut ticker = tokio::time::interval(queue.config().lease / 3);
    loop {
        ticker.tick().await;
        let holding = counts.holding.load(Ordering::Relaxed);
        if let Err(e) = queue.heartbeat(&name, holding, draining.is_cancelled()).await {
            tracing::warn!(worker = %name, "heartbeat: {e}");
        }
        match queue.reap(&name).await {
            Ok((0, 0)) => {}
            Ok((reclaimed, dead)) => tracing::info!(worker = %name, reclaimed, dead, "reaped expired leases"),
            Err(e) => tracing::warn!(worker = %name, "reaping: {e}"),
        }
    }
}
