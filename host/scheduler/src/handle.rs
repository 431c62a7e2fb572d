//! Handles to submitted tasks: awaiting the result, cancelling, and the
//! per-task cancellation flag the driver listens to.
//!
//! Dropping a [`TaskHandle`] before it resolved cancels the task (unless it
//! was [`detach`](TaskHandle::detach)ed): a queued task is removed and never
//! starts, a running attempt's future is dropped and its slot freed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::scheduler::Inner;
use crate::task::{TaskError, TaskId, TaskResult};

/// Why a task was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReason {
    User = 1,
    Shutdown = 2,
}

impl CancelReason {
    pub fn error(self) -> TaskError {
        match self {
            CancelReason::User => TaskError::Cancelled,
            CancelReason::Shutdown => TaskError::ShuttingDown,
        }
    }
}

/// Cancellation flag shared by handles and the task's driver.
#[derive(Debug, Default)]
pub(crate) struct TaskCtl {
    reason: AtomicU8,
    notify: Notify,
}

impl TaskCtl {
    /// Sets the flag (first reason wins). Returns whether this call set it.
    pub fn cancel(&self, reason: CancelReason) -> bool {
        let set = self.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if set {
            self.notify.notify_waiters();
        }
        set
    }

    pub fn reason(&self) -> Option<CancelReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(CancelReason::User),
            2 => Some(CancelReason::Shutdown),
            _ => None,
        }
    }

    /// Resolves once the flag is set.
    pub async fn cancelled(&self) -> CancelReason {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }
}

/// Cancels a task; cheap to clone, does not own the result.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    id: TaskId,
    ctl: Arc<TaskCtl>,
    inner: Weak<Inner>,
}

impl CancelHandle {
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Cancels the task. Returns `false` if it was already cancelled. A task
    /// that already finished is not affected.
    pub fn cancel(&self) -> bool {
        let set = self.ctl.cancel(CancelReason::User);
        if set {
            if let Some(inner) = self.inner.upgrade() {
                inner.remove_queued(self.id);
            }
        }
        set
    }
}

/// The result of a submitted task: a future resolving to [`TaskResult`].
/// Dropping it before it resolves cancels the task.
#[must_use = "dropping a TaskHandle cancels the task; use detach() to let it run"]
#[derive(Debug)]
pub struct TaskHandle<T> {
    cancel: CancelHandle,
    rx: oneshot::Receiver<TaskResult<T>>,
    queued_at: Instant,
    /// Resolved or detached: drop does not cancel.
    settled: bool,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(
        id: TaskId,
        ctl: Arc<TaskCtl>,
        inner: Weak<Inner>,
        rx: oneshot::Receiver<TaskResult<T>>,
        queued_at: Instant,
    ) -> Self {
        Self { cancel: CancelHandle { id, ctl, inner }, rx, queued_at, settled: false }
    }

    pub fn id(&self) -> TaskId {
        self.cancel.id
    }

    /// Cancels the task; awaiting the handle then yields
    /// [`TaskError::Cancelled`] (or the result, if it finished first).
    pub fn cancel(&self) -> bool {
        self.cancel.cancel()
    }

    /// A cancel-only handle (e.g. for an HTTP `DELETE`).
    pub fn canceller(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Lets the task run to completion without anyone awaiting it.
    pub fn detach(mut self) {
        self.settled = true;
    }

    /// Awaits the result (same as `.await` on the handle).
    pub async fn wait(self) -> TaskResult<T> {
        self.await
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = TaskResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            // The driver vanished without a result: its runtime shut down.
            Poll::Ready(Err(_)) => TaskResult {
                id: this.cancel.id,
                outcome: Err(TaskError::ShuttingDown),
                attempts: Vec::new(),
                queued_at: this.queued_at,
                started_at: None,
                finished_at: Instant::now(),
            },
        };
        this.settled = true;
        Poll::Ready(result)
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if !self.settled {
            self.cancel.cancel();
        }
    }
}
