//! Why an orchestrated invocation produced no output: the runtime's own
//! [`InvokeError`] (kept typed through the scheduler), or the scheduler
//! refusing or dropping the task.

use stagecraft_runtime::InvokeError;
use stagecraft_scheduler::{Failure, SubmitError, TaskError};
use std::sync::Arc;

/// The orchestrator's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stage ran (or was looked up) and failed: the runtime's error,
    /// shared because the scheduler keeps it in its attempt records too.
    #[error("{0}")]
    Invoke(Arc<InvokeError>),
    /// The scheduler did not take the task (queue full, shutting down).
    #[error("the scheduler refused the task: {0}")]
    Refused(SubmitError),
    /// Cancelled through its handle.
    #[error("the invocation was cancelled")]
    Cancelled,
    /// The scheduler shut down before the task finished.
    #[error("the scheduler shut down before the invocation finished")]
    ShuttingDown,
}

/// The orchestrator's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The scheduler's verdict on a task whose attempts call the runtime.
    pub(crate) fn from_task(e: TaskError) -> Self {
        match e {
            TaskError::Failed { failure, .. } => Error::Invoke(invoke_error(&failure)),
            TaskError::Cancelled => Error::Cancelled,
            TaskError::ShuttingDown => Error::ShuttingDown,
        }
    }
}

/// The runtime error an attempt failed with. Failures the scheduler made
/// itself carry none: its deadline backstop is the invocation's timeout,
/// and a panicking attempt is a host fault.
pub(crate) fn invoke_error(failure: &Failure) -> Arc<InvokeError> {
    if let Some(e) = failure.error::<InvokeError>() {
        return e;
    }
    Arc::new(match failure {
        Failure::Timeout(d) => InvokeError::Timeout(*d),
        Failure::Retryable(cause) => InvokeError::Unavailable(cause.to_string()),
        Failure::Permanent(cause) => InvokeError::Host(anyhow::anyhow!("{cause}")),
    })
}

/// How the scheduler should treat a runtime error: `unavailable` and
/// deadlines are retried, everything else is permanent. The error itself
/// travels in the failure, for [`invoke_error`] to take back out.
pub fn to_failure(e: InvokeError) -> Failure {
    match e {
        InvokeError::Timeout(d) => Failure::Timeout(d),
        e if e.is_retryable() => Failure::retryable(e),
        e => Failure::permanent(e),
    }
}
