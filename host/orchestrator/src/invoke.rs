//! One stage invocation as a scheduler task. Every way of running a stage
//! comes through here: [`Orchestrator::invoke`](crate::Orchestrator::invoke)
//! (`POST /v1/stages/{name}/invoke`, `stagecraft invoke`) and each pipeline
//! step ([`crate::runner`]). So all of them get the same queue, pool,
//! memory estimate and deadline, and the runtime's error back typed.

use crate::error::{to_failure, Error, Result};
use stagecraft_runtime::{
    Artifact, InvokeError, InvokeOptions, Runtime, StageEvent, StageInput, StageOutput, StageVersion,
};
use stagecraft_scheduler::{RetryPolicy, Scheduler, TaskHandle, TaskSpec};
use std::sync::Arc;
use std::time::Duration;

/// Receives what a running stage reports (progress, logs).
pub type EventFn = Arc<dyn Fn(StageEvent) + Send + Sync>;

/// Called when an attempt fails, with its number and the runtime's error,
/// before the scheduler decides whether to retry.
pub type AttemptFailedFn = Arc<dyn Fn(u32, &InvokeError) + Send + Sync>;

/// Which stage to run: the current version of a name, or a version pinned
/// earlier (so that a cache key, a report and the run agree on it even if
/// an operator swaps the stage in between).
#[derive(Debug, Clone)]
pub enum Target {
    Name(String),
    Version(Arc<StageVersion>),
}

impl From<&str> for Target {
    fn from(name: &str) -> Self {
        Target::Name(name.to_owned())
    }
}

impl From<String> for Target {
    fn from(name: String) -> Self {
        Target::Name(name)
    }
}

impl From<Arc<StageVersion>> for Target {
    fn from(version: Arc<StageVersion>) -> Self {
        Target::Version(version)
    }
}

impl From<&Arc<StageVersion>> for Target {
    fn from(version: &Arc<StageVersion>) -> Self {
        Target::Version(version.clone())
    }
}

/// How to run one invocation. Anything left `None` takes the runtime's
/// limits (`RuntimeConfig::limits`).
#[derive(Clone, Default)]
pub struct InvokeRequest {
    /// Deadline of each attempt, enforced by the runtime from the moment
    /// the instance first gets a CPU slot; it covers waits in host calls.
    pub timeout: Option<Duration>,
    /// Higher runs first.
    pub priority: i32,
    /// Memory limit of the instance. The scheduler's budget is charged the
    /// component's observed use ([`Runtime::memory_estimate`]), at most this.
    pub memory_bytes: Option<u64>,
    /// Attempts after the first; retryable failures only (`unavailable`,
    /// deadlines). The backoff is the orchestrator's.
    pub retries: u32,
    /// For logs and scheduler events.
    pub label: Option<String>,
    /// Receives progress and log events while the stage runs.
    pub events: Option<EventFn>,
    /// Told about every failed attempt.
    pub on_attempt_failed: Option<AttemptFailedFn>,
}

impl InvokeRequest {
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    #[must_use]
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    #[must_use]
    pub fn events(mut self, f: impl Fn(StageEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(f));
        self
    }

    #[must_use]
    pub fn on_attempt_failed(mut self, f: impl Fn(u32, &InvokeError) + Send + Sync + 'static) -> Self {
        self.on_attempt_failed = Some(Arc::new(f));
        self
    }
}

/// Resolves a [`Target`] to the version that will run.
pub(crate) fn resolve(runtime: &Runtime, target: Target) -> Result<Arc<StageVersion>> {
    match target {
        Target::Version(version) => Ok(version),
        Target::Name(name) => {
            runtime.stage(&name).ok_or_else(|| Error::Invoke(Arc::new(InvokeError::UnknownStage(name))))
        }
    }
}

/// Queues `input` for `version` as one scheduler task: the spec (priority,
/// memory estimate, retries) and the attempt closure (the deadline and
/// memory limit handed to the runtime, events forwarded, each error kept
/// typed in the scheduler's failure).
pub(crate) fn submit(
    runtime: &Arc<Runtime>,
    scheduler: &Scheduler,
    backoff: RetryPolicy,
    version: &Arc<StageVersion>,
    inputs: Vec<Arc<Artifact>>,
    params: serde_json::Value,
    request: InvokeRequest,
) -> Result<TaskHandle<StageOutput>> {
    let config = runtime.config();
    // The instance's limit; the runtime caps it at `max_memory_bytes`.
    let memory_limit = request.memory_bytes.unwrap_or(config.limits.memory_bytes).min(config.max_memory_bytes);
    // The scheduler's memory budget is charged what the component has been
    // seen to use, not its limit, so that many small instances can wait at once.
    let charge = runtime.memory_estimate(version).min(memory_limit);
    // No scheduler deadline: the runtime enforces the attempt's own, from the
    // moment its instance gets a CPU slot (waits in host calls count, waiting
    // for a core does not).
    let timeout = request.timeout.unwrap_or(config.limits.timeout);
    let spec = TaskSpec::new(version.info.name.clone())
        .priority(request.priority)
        .retry(RetryPolicy { max_attempts: request.retries.saturating_add(1), ..backoff })
        .memory_bytes(charge)
        .label(request.label.clone().unwrap_or_else(|| format!("invoke {}", version.info.name)));
    let runtime = runtime.clone();
    let version = version.clone();
    let work = move |attempt: stagecraft_scheduler::Attempt| {
        let runtime = runtime.clone();
        let version = version.clone();
        // Each attempt gets its own copy: the sandbox takes the bytes.
        let input = StageInput::new(inputs.iter().map(|a| Artifact::clone(a)).collect(), params.clone());
        let request = request.clone();
        async move {
            let mut options = InvokeOptions::default().with_memory(memory_limit).with_timeout(timeout);
            options.on_event = request.events.clone();
            runtime.invoke_version(&version, input, options).await.map_err(|e| {
                if let Some(hook) = &request.on_attempt_failed {
                    hook(attempt.number, &e);
                }
                to_failure(e)
            })
        }
    };
    scheduler.submit(spec, work).map_err(Error::Refused)
}
