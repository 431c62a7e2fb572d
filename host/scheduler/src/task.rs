//! Task vocabulary: what a caller submits ([`TaskSpec`]), what each attempt
//! sees ([`Attempt`]) and returns on error ([`Failure`], [`Cause`]), and what comes back
//! ([`TaskResult`], [`AttemptRecord`], [`TaskError`], [`SubmitError`]).

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::retry::RetryPolicy;

/// Identifier of a submitted task, unique within a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// What to run and under which constraints.
#[derive(Debug, Clone, Default)]
pub struct TaskSpec {
    /// Stage pool the task runs in.
    pub stage: String,
    /// Higher runs first; equal priorities run in submission order.
    pub priority: i32,
    /// Per-attempt deadline; `None`: the scheduler's `default_timeout`.
    pub timeout: Option<Duration>,
    /// Overrides the scheduler's retry policy for this task.
    pub retry: Option<RetryPolicy>,
    /// Memory estimate of one attempt; 0: the stage's configured estimate.
    pub memory_bytes: u64,
    /// Dedicated slot: the task takes its stage's *whole* pool. It starts
    /// only when no other task of its stage runs, and while it runs no other
    /// task of the stage starts; it counts as one global worker, so other
    /// stages go on. Tasks of the same stage queued behind it wait (it is
    /// never starved). For work that must not share its stage's resources
    /// (a model owning the GPU, an instance using every core).
    pub dedicated: bool,
    /// Free text for logs and events (job/step name).
    pub label: String,
}

impl TaskSpec {
    /// A spec for `stage` with default everything else.
    #[must_use]
    pub fn new(stage: impl Into<String>) -> Self {
        Self { stage: stage.into(), ..Self::default() }
    }

    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    #[must_use]
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    #[must_use]
    pub fn dedicated(mut self, dedicated: bool) -> Self {
        self.dedicated = dedicated;
        self
    }

    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// How one attempt failed. Maps from the WIT `stage-error`:
/// `invalid-input` → `Permanent`, `unavailable` → `Retryable`.
///
/// The scheduler only needs the class (retry or not) and a message for
/// logs and events; the caller's own error travels along in the [`Cause`]
/// (see [`Failure::permanent`], [`Failure::error`]) so that whoever awaits
/// the task gets it back typed instead of as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Failure {
    /// Never retried (bad input, a stage fault that would repeat).
    Permanent(Cause),
    /// Transient: retried with backoff.
    Retryable(Cause),
    /// The attempt ran past its deadline: retried with backoff.
    Timeout(Duration),
}

impl Failure {
    /// A permanent failure carrying the caller's `error` (its `Display` is
    /// the message).
    pub fn permanent<E: fmt::Display + Send + Sync + 'static>(error: E) -> Self {
        Failure::Permanent(Cause::from_error(error))
    }

    /// A retryable failure carrying the caller's `error`.
    pub fn retryable<E: fmt::Display + Send + Sync + 'static>(error: E) -> Self {
        Failure::Retryable(Cause::from_error(error))
    }

    /// Whether the retry policy may retry this failure.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Failure::Permanent(_))
    }

    /// The caller's error of type `E` this failure carries, if any (none for
    /// [`Failure::Timeout`], a panic, or a failure built from a message).
    pub fn error<E: Send + Sync + 'static>(&self) -> Option<Arc<E>> {
        match self {
            Failure::Permanent(cause) | Failure::Retryable(cause) => cause.error(),
            Failure::Timeout(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Permanent(m) => write!(f, "permanent failure: {m}"),
            Failure::Retryable(m) => write!(f, "retryable failure: {m}"),
            Failure::Timeout(d) => write!(f, "deadline of {d:?} exceeded"),
        }
    }
}

impl std::error::Error for Failure {}

/// Why an attempt failed: a message, and optionally the caller's error
/// value (shared, so failures stay cheap to clone into records and events).
/// Equality and serialization look at the message only.
#[derive(Clone)]
pub struct Cause {
    message: String,
    error: Option<Arc<dyn Any + Send + Sync>>,
}

impl Cause {
    /// A cause holding `error`, with its `Display` as the message.
    pub fn from_error<E: fmt::Display + Send + Sync + 'static>(error: E) -> Self {
        Self { message: error.to_string(), error: Some(Arc::new(error)) }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The caller's error, if it is an `E`.
    pub fn error<E: Send + Sync + 'static>(&self) -> Option<Arc<E>> {
        self.error.clone()?.downcast::<E>().ok()
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self { message, error: None }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl std::ops::Deref for Cause {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
    }
}

/// Passed to the work closure for each attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub task_id: TaskId,
    /// 1 for the first attempt.
    pub number: u32,
    /// When the scheduler will drop the attempt (the runtime should set its
    /// own epoch deadline to this, so wasm stops on its own first).
    pub deadline: Option<Instant>,
    pub stage: String,
    pub label: String,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "failure", rename_all = "kebab-case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed(Failure),
    /// Dropped mid-run by cancellation or shutdown.
    Cancelled,
}

/// Record of one attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub number: u32,
    /// Wall-clock start (for reports).
    pub started_wall: SystemTime,
    /// Monotonic start.
    #[serde(skip)]
    pub started_at: Instant,
    /// Monotonic end.
    #[serde(skip)]
    pub finished_at: Instant,
    /// `finished_at - started_at`.
    pub duration: Duration,
    pub outcome: AttemptOutcome,
    /// Backoff waited before this attempt (zero for the first).
    pub backoff: Duration,
    /// The ceiling that backoff was drawn under (zero for the first).
    pub backoff_ceiling: Duration,
}

/// Why a task did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskError {
    /// The last attempt failed (permanently, or retries ran out).
    Failed { failure: Failure, attempts: u32 },
    /// Cancelled through a handle or by dropping the result handle.
    Cancelled,
    /// The scheduler shut down before the task could finish.
    ShuttingDown,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed { failure, attempts } => {
                write!(f, "{failure} (after {attempts} attempt(s))")
            }
            TaskError::Cancelled => f.write_str("task cancelled"),
            TaskError::ShuttingDown => f.write_str("scheduler shutting down"),
        }
    }
}

impl std::error::Error for TaskError {}

impl TaskError {
    /// The caller's error of type `E` the last failed attempt carried, if any.
    pub fn error<E: Send + Sync + 'static>(&self) -> Option<Arc<E>> {
        match self {
            TaskError::Failed { failure, .. } => failure.error(),
            TaskError::Cancelled | TaskError::ShuttingDown => None,
        }
    }
}

/// What a finished task hands back.
#[derive(Debug)]
pub struct TaskResult<T> {
    pub id: TaskId,
    pub outcome: Result<T, TaskError>,
    pub attempts: Vec<AttemptRecord>,
    pub queued_at: Instant,
    /// Start of the first attempt (`None` if it never started).
    pub started_at: Option<Instant>,
    pub finished_at: Instant,
}

impl<T> TaskResult<T> {
    /// Time from submission to the first attempt's start.
    pub fn queue_wait(&self) -> Option<Duration> {
        self.started_at.map(|s| s.duration_since(self.queued_at))
    }

    /// The value, dropping the records.
    pub fn into_result(self) -> Result<T, TaskError> {
        self.outcome
    }
}

/// Why `submit` refused a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SubmitError {
    /// The queue holds `max` waiting tasks already (HTTP: 429 + Retry-After).
    QueueFull { max: usize },
    /// `shutdown` was called (HTTP: 503).
    ShuttingDown,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::QueueFull { max } => write!(f, "queue full ({max} tasks waiting)"),
            SubmitError::ShuttingDown => f.write_str("scheduler shutting down"),
        }
    }
}

impl std::error::Error for SubmitError {}
