//! The life of one task, as a tokio task: wait for a slot, run an attempt
//! under its deadline, give the slot back, back off (outside any slot) and
//! re-queue on retryable failures, and deliver the [`TaskResult`].
//!
//! Cancellation is checked first at every await (`biased` selects): a task
//! cancelled while queued never calls its work closure, and a running
//! attempt's future is dropped right there, before the slot is released.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use crate::counters::{Counter, Counters};
use crate::events::{FinishStatus, TaskEventKind};
use crate::handle::TaskCtl;
use crate::retry::Backoff;
use crate::scheduler::{Inner, Slot};
use crate::task::{Attempt, AttemptOutcome, AttemptRecord, Failure, TaskError, TaskId, TaskResult, TaskSpec};

/// Everything one task's driver owns.
pub(crate) struct Driver<T, F> {
    pub inner: Arc<Inner>,
    pub id: TaskId,
    pub ctl: Arc<TaskCtl>,
    pub spec: TaskSpec,
    pub stage: Arc<str>,
    pub stage_counters: Arc<Counters>,
    pub seq: u64,
    pub work: F,
    pub result_tx: oneshot::Sender<TaskResult<T>>,
    pub queued_at: Instant,
}

impl<T, F, Fut> Driver<T, F>
where
    F: Fn(Attempt) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
{
    pub async fn run(self, first_grant: oneshot::Receiver<Slot>) {
        let inner = self.inner.clone();
        let policy = self.spec.retry.unwrap_or(inner.limits.retry);
        let timeout = self.spec.timeout.or(inner.limits.default_timeout);
        let mut grant = first_grant;
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut started_at = None;
        let mut backoff = Backoff { ceiling: Duration::ZERO, wait: Duration::ZERO };

        let outcome: Result<T, TaskError> = loop {
            let number = attempts.len() as u32 + 1;

            // 1. Wait for a slot (or cancellation / shutdown).
            let slot = tokio::select! {
                biased;
                reason = self.ctl.cancelled() => break Err(reason.error()),
                granted = &mut grant => match granted {
                    Ok(slot) => slot,
                    // Dropped from the queue by shutdown.
                    Err(_) => break Err(TaskError::ShuttingDown),
                },
            };

            // 2. Run one attempt while holding the slot.
            let start = Instant::now();
            let started_wall = SystemTime::now();
            started_at.get_or_insert(start);
            self.emit(TaskEventKind::Started { attempt: number });
            let attempt = Attempt {
                task_id: self.id,
                number,
                deadline: timeout.map(|t| start + t),
                stage: self.spec.stage.clone(),
                label: self.spec.label.clone(),
            };
            let span = tracing::info_span!(
                "task_attempt",
                task = %self.id,
                stage = %self.stage,
                label = %self.spec.label,
                attempt = number,
            );
            let work = start_attempt(&self.work, attempt, timeout).instrument(span.clone());
            let result = tokio::select! {
                biased;
                reason = self.ctl.cancelled() => Err(reason),
                r = work => Ok(r),
            };
            // The attempt future is gone (finished or dropped); free the slot.
            drop(slot);
            let finished_at = Instant::now();
            let mut record = AttemptRecord {
                number,
                started_wall,
                started_at: start,
                finished_at,
                duration: finished_at.duration_since(start),
                outcome: AttemptOutcome::Succeeded,
                backoff: backoff.wait,
                backoff_ceiling: backoff.ceiling,
            };

            // 3. Decide what comes next.
            match result {
                Err(reason) => {
                    span.in_scope(|| tracing::debug!("attempt cancelled"));
                    record.outcome = AttemptOutcome::Cancelled;
                    attempts.push(record);
                    break Err(reason.error());
                }
                Ok(Ok(value)) => {
                    span.in_scope(|| tracing::debug!(duration = ?record.duration, "attempt succeeded"));
                    attempts.push(record);
                    break Ok(value);
                }
                Ok(Err(failure)) => {
                    record.outcome = AttemptOutcome::Failed(failure.clone());
                    attempts.push(record);
                    if !policy.should_retry(&failure, number) {
                        span.in_scope(|| tracing::warn!(%failure, "attempt failed; giving up"));
                        break Err(TaskError::Failed { failure, attempts: number });
                    }
                    if !inner.retries_allowed() {
                        break Err(TaskError::ShuttingDown);
                    }
                    backoff = inner.backoff(&policy, number);
                    span.in_scope(|| tracing::info!(%failure, backoff = ?backoff.wait, "attempt failed; retrying"));
                    inner.count(&self.stage_counters, Counter::Retried);
                    self.emit(TaskEventKind::Retrying {
                        attempt: number,
                        failure: failure.clone(),
                        backoff: backoff.wait,
                    });
                    // Back off holding no slot.
                    tokio::select! {
                        biased;
                        reason = self.ctl.cancelled() => break Err(reason.error()),
                        () = inner.retries_stopped() => break Err(TaskError::ShuttingDown),
                        () = tokio::time::sleep(backoff.wait) => {}
                    }
                    match inner.requeue(self.id, &self.stage, &self.spec, self.seq) {
                        Some(next) => grant = next,
                        None => break Err(TaskError::ShuttingDown),
                    }
                }
            }
        };
        drop(grant);
        self.deliver(outcome, attempts, started_at);
    }

    fn emit(&self, kind: TaskEventKind) {
        self.inner.events().emit(self.id, &self.stage, &self.spec.label, kind);
    }

    fn deliver(self, outcome: Result<T, TaskError>, attempts: Vec<AttemptRecord>, started_at: Option<Instant>) {
        let (counter, status) = match &outcome {
            Ok(_) => (Counter::Completed, FinishStatus::Completed),
            Err(TaskError::Failed { .. }) => (Counter::Failed, FinishStatus::Failed),
            Err(TaskError::Cancelled) => (Counter::Cancelled, FinishStatus::Cancelled),
            Err(TaskError::ShuttingDown) => (Counter::Cancelled, FinishStatus::ShuttingDown),
        };
        self.inner.count(&self.stage_counters, counter);
        tracing::debug!(task = %self.id, stage = %self.stage, ?status, attempts = attempts.len(), "task finished");
        self.emit(TaskEventKind::Finished { status, attempts: attempts.len() as u32 });
        self.inner.finish(self.id);
        let result = TaskResult {
            id: self.id,
            outcome,
            attempts,
            queued_at: self.queued_at,
            started_at,
            finished_at: Instant::now(),
        };
        // The handle may be gone (dropped = cancelled); nobody to tell.
        let _ = self.result_tx.send(result);
    }
}

/// Calls the work closure and wraps its future with panic catching and the
/// deadline backstop. The closure is called here, synchronously, so the
/// driver never holds a borrow of it across an await.
fn start_attempt<T, F, Fut>(
    work: &F,
    attempt: Attempt,
    timeout: Option<Duration>,
) -> impl Future<Output = Result<T, Failure>> + Send + 'static
where
    F: Fn(Attempt) -> Fut,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
{
    let started = catch_unwind(AssertUnwindSafe(|| work(attempt))).map(|fut| CatchUnwind(Box::pin(fut)));
    async move {
        let fut = started.map_err(|p| panic_failure(&*p))?;
        match timeout {
            None => fut.await,
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Timeout(limit)),
            },
        }
    }
}

/// Turns a panic in an attempt into a permanent failure instead of losing
/// the task (and its slot accounting) with the driver.
struct CatchUnwind<T>(Pin<Box<dyn Future<Output = Result<T, Failure>> + Send>>);

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panic_failure(&*payload))),
        }
    }
}

fn panic_failure(payload: &(dyn Any + Send)) -> Failure {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    Failure::Permanent(format!("attempt panicked: {message}").into())
}
