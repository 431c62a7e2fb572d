//! The result of a run: per-step status and timings, and run-level figures
//! (makespan, sequential estimate, speedup, critical path). Serializable to a
//! JSON report; durations and offsets are written as seconds (floats), offsets
//! counted from the start of the run.

use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dag::{self, Pipeline};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The runner returned an output.
    Succeeded,
    /// The runner returned a failure, its params could not be rendered, or it panicked.
    Failed,
    /// Its group's or the run's timeout expired before it finished.
    TimedOut,
    /// Stopped while running: a sibling failed in a fail-fast group, or the run was cancelled.
    Cancelled,
    /// Never started: a dependency did not succeed, or its fail-fast group had already failed.
    Skipped,
}

impl StepStatus {
    /// True for [`StepStatus::Succeeded`].
    pub fn is_success(self) -> bool {
        self == StepStatus::Succeeded
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step succeeded.
    Succeeded,
    /// Some step did not succeed.
    Failed,
    /// The run's timeout expired.
    TimedOut,
    /// The run was cancelled through its token.
    Cancelled,
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Stage it runs.
    pub stage: String,
    /// Innermost enclosing group, if any.
    pub group: Option<String>,
    /// How it ended.
    pub status: StepStatus,
    /// When the runner was handed the step, from the start of the run. The
    /// runner may queue it (for a worker, or behind a retry backoff) before
    /// it starts.
    #[serde(with = "secs_opt", default)]
    pub queued: Option<Duration>,
    /// When it started running (as the runner reports it, else when the
    /// runner was handed it), from the start of the run; None if it never started.
    #[serde(with = "secs_opt")]
    pub started: Option<Duration>,
    /// When it ended (or its future was dropped), from the start of the run.
    #[serde(with = "secs_opt")]
    pub finished: Option<Duration>,
    /// `finished - started`.
    #[serde(with = "secs_opt")]
    pub duration: Option<Duration>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Whether the runner marked its failure as retryable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
    /// Names of the steps it waited for.
    pub depends_on: Vec<String>,
    /// What the runner reports about how it executed the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
}

/// How a runner executed a step: attempts, cache use, and runner-specific
/// details (for stagecraft: the component version and the artifacts written).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// When the work itself began (after any queueing inside the runner);
    /// the report's `started` is taken from it.
    #[serde(skip)]
    pub started_at: Option<Instant>,
    /// Attempts made (0 for a cache hit).
    pub attempts: u32,
    /// Whether a stored result was reused instead of running the stage.
    pub cache_hit: bool,
    /// Anything else the runner wants in the report, flattened into it.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// The outcome of a whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Run id given in the options.
    pub run_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// Wall time from start to the end of the last step.
    #[serde(with = "secs")]
    pub makespan: Duration,
    /// Sum of step durations: what running one step at a time would take.
    #[serde(with = "secs")]
    pub sequential_estimate: Duration,
    /// `sequential_estimate / makespan`; None for an empty makespan.
    pub speedup: Option<f64>,
    /// Longest chain of dependent steps by duration, as step names, first to last.
    pub critical_path: Vec<String>,
    /// Sum of the durations along the critical path.
    #[serde(with = "secs")]
    pub critical_path_duration: Duration,
    /// Every step, in declaration order.
    pub steps: Vec<StepReport>,
}

impl RunReport {
    /// A step's report by name.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report always serializes")
    }

    /// Computes the run-level figures from per-step reports (indexed like the pipeline's steps).
    pub(crate) fn summarize(
        pipeline: &Pipeline,
        run_id: String,
        status: RunStatus,
        makespan: Duration,
        steps: Vec<StepReport>,
    ) -> RunReport {
        let durations: Vec<Option<Duration>> = steps.iter().map(|s| s.duration).collect();
        let sequential_estimate: Duration = durations.iter().flatten().sum();
        let deps: Vec<Vec<usize>> = pipeline.steps().iter().map(|s| s.deps.clone()).collect();
        let (path, critical_path_duration) = dag::critical_path(&deps, pipeline.topological_order(), &durations);
        let speedup = (!makespan.is_zero()).then(|| sequential_estimate.as_secs_f64() / makespan.as_secs_f64());
        RunReport {
            pipeline: pipeline.name().to_owned(),
            run_id,
            status,
            makespan,
            sequential_estimate,
            speedup,
            critical_path: path.into_iter().map(|i| steps[i].name.clone()).collect(),
            critical_path_duration,
            steps,
        }
    }
}

/// `Duration` as float seconds.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let f = f64::deserialize(d)?;
        Duration::try_from_secs_f64(f).map_err(serde::de::Error::custom)
    }
}

/// `Option<Duration>` as float seconds or null.
pub(crate) mod secs_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|f| Duration::try_from_secs_f64(f).map_err(serde::de::Error::custom))
            .transpose()
    }
}
