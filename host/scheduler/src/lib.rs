//! # stagecraft-scheduler
//!
//! Schedules opaque async work (stage invocations, in practice) over
//! per-stage pools. It knows nothing of wasm: a task is a closure returning a
//! future, called once per attempt.
//!
//! * **Queue**: bounded (`max_queue`, then [`SubmitError::QueueFull`]);
//!   higher priority first, FIFO within a priority.
//! * **Pools**: a concurrency limit per stage plus a global `max_workers`;
//!   work-conserving and free of head-of-line blocking across stages; a
//!   task may ask for a dedicated slot ([`TaskSpec::dedicated`]: it runs
//!   alone in its stage, counting as one global worker).
//! * **Memory**: a budget for running tasks' estimates and host pressure
//!   through a [`MemoryProbe`] (policy in the `memory` module docs).
//! * **Retries**: exponential backoff with full jitter for
//!   [`Failure::Retryable`] and [`Failure::Timeout`], never for
//!   [`Failure::Permanent`]; backoff waits hold no slot.
//! * **Deadlines**: `tokio::time::timeout` around every attempt.
//! * **Cancellation**: [`TaskHandle::cancel`], [`Scheduler::cancel`], or
//!   dropping the handle; the attempt future is dropped and its slot freed.
//! * **Observability**: atomic [`Counters`], [`QueueStatus`] snapshots,
//!   [`TaskEvent`] broadcast, a `tracing` span per attempt.
//!
//! ```
//! use stagecraft_scheduler::{Failure, Scheduler, SchedulerConfig, TaskSpec};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let scheduler = Scheduler::new(SchedulerConfig::default());
//! let handle = scheduler
//!     .submit(TaskSpec::new("resize").priority(5).label("job-1/resize"), |attempt| async move {
//!         if attempt.number < 2 {
//!             return Err(Failure::Retryable("model warming up".into()));
//!         }
//!         Ok::<_, Failure>(attempt.number)
//!     })
//!     .expect("queue has room");
//! let result = handle.await;
//! assert_eq!(result.outcome.unwrap(), 2);
//! assert_eq!(result.attempts.len(), 2);
//! # }
//! ```

mod config;
mod counters;
mod driver;
mod events;
mod handle;
mod memory;
mod pool;
mod queue;
mod retry;
mod scheduler;
mod status;
mod task;

pub use config::{available_cores, SchedulerConfig, DEFAULT_IN_FLIGHT};
pub use counters::{CounterSnapshot, Counters};
pub use events::{FinishStatus, TaskEvent, TaskEventKind};
pub use handle::{CancelHandle, TaskHandle};
pub use memory::{parse_meminfo, ManualProbe, MemoryPolicy, MemoryProbe, MemorySample, PressureLevel, ProcMeminfo};
pub use pool::StagePoolConfig;
pub use retry::{Backoff, Jitter, RetryPolicy};
pub use scheduler::{Scheduler, ShutdownMode};
pub use status::{MemoryStatus, QueueStatus, StageStatus};
pub use task::{
    Attempt, AttemptOutcome, AttemptRecord, Cause, Failure, SubmitError, TaskError, TaskId, TaskResult, TaskSpec,
};
