//! Runs pipeline steps as sandboxed stage invocations: each step becomes a
//! scheduler task (priority, per-stage pool, retries with backoff, deadline)
//! whose attempts call the runtime on one pinned component version, with
//! the result cache consulted first and filled after.

use crate::blobs::sha256_hex;
use crate::events::{AttemptFailedEvent, LogEvent, ProgressEvent, RunEvent, RunObserver};
use crate::invoke::{self, InvokeRequest};
use crate::result_cache::ResultCache;
use serde_json::{json, Map, Value};
use stagecraft_pipeline::{BoxFuture, Execution, ReadyStep, StepFailure, StepOutput, StepRunner};
use stagecraft_runtime::{Artifact, Runtime, StageEvent, StageVersion};
use stagecraft_scheduler::{AttemptOutcome, Failure, RetryPolicy, Scheduler, TaskError, TaskResult};
use std::sync::Arc;
use tracing::Instrument;

/// Artifacts flow between steps by reference; each invocation copies them
/// into the sandbox anyway.
pub type SharedArtifact = Arc<Artifact>;

/// The host's [`StepRunner`]: scheduler + runtime + result cache.
#[derive(Clone)]
pub struct StageRunner {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) scheduler: Scheduler,
    pub(crate) cache: Option<Arc<ResultCache>>,
    pub(crate) reuse: Arc<crate::ReusePolicy>,
    pub(crate) retry: RetryPolicy,
    pub(crate) observer: Option<RunObserver>,
}

impl StepRunner<SharedArtifact> for StageRunner {
    fn run_step(
        &self,
        step: ReadyStep<SharedArtifact>,
    ) -> BoxFuture<'static, Result<StepOutput<SharedArtifact>, StepFailure>> {
        let runner = self.clone();
        let span = tracing::info_span!("run_step", run = %step.run_id, step = %step.name, stage = %step.stage);
        Box::pin(async move { runner.run(step).await }.instrument(span))
    }
}

impl StageRunner {
    async fn run(self, step: ReadyStep<SharedArtifact>) -> Result<StepOutput<SharedArtifact>, StepFailure> {
        // Pin the version now: every attempt, and the cache key, use it even
        // if an operator swaps the stage mid-run.
        let version = self
            .runtime
            .stage(&step.stage)
            .ok_or_else(|| StepFailure::new(format!("unknown stage '{}'", step.stage)))?;
        let mut details = Map::new();
        details.insert("version".into(), json!(version.info.version));
        details.insert("digest".into(), json!(version.digest));

        // The report says `hit`, `miss` or `off`, and why off.
        let reuse = match &self.cache {
            None => crate::Reuse::Off("the result cache is off (--no-cache)".to_owned()),
            Some(_) => self.reuse.decide(&version, &step.params, step.cache),
        };
        if let Some(reason) = reuse.reason() {
            details.insert("cache".into(), json!("off"));
            details.insert("cache_off_reason".into(), json!(reason));
        }
        let cache_key =
            reuse.is_on().then(|| ResultCache::key(&version.digest, &step.params, step.inputs.iter().map(Arc::as_ref)));
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
            details.insert("cache_key".into(), json!(key));
            match cache.get(key).await {
                Ok(Some(hit)) => {
                    tracing::debug!("result cache hit");
                    details.insert("cache".into(), json!("hit"));
                    details.insert("artifacts".into(), artifact_list(&hit.artifacts, &hit.digests));
                    let execution = Execution { started_at: None, attempts: 0, cache_hit: true, details };
                    return Ok(StepOutput::new(hit.artifacts, hit.metadata).with_execution(execution));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "result cache unreadable; running the stage"),
            }
            details.insert("cache".into(), json!("miss"));
        }

        let result = self.submit(&step, &version).await?;
        let attempts: Vec<Value> = result
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "number": a.number,
                    "duration": a.duration.as_secs_f64(),
                    "backoff": a.backoff.as_secs_f64(),
                    "outcome": match &a.outcome {
                        AttemptOutcome::Succeeded => "succeeded".to_owned(),
                        AttemptOutcome::Failed(f) => f.to_string(),
                        AttemptOutcome::Cancelled => "cancelled".to_owned(),
                    },
                })
            })
            .collect();
        details.insert("attempt_log".into(), Value::Array(attempts));
        let mut execution = Execution {
            started_at: result.started_at,
            attempts: result.attempts.len() as u32,
            cache_hit: false,
            details,
        };
        match result.outcome {
            Ok(output) => {
                let artifacts: Vec<SharedArtifact> = output.artifacts.into_iter().map(Arc::new).collect();
                // Storing hashes the artifacts anyway: reuse those digests for the report.
                let stored = match (&self.cache, &cache_key) {
                    (Some(cache), Some(key)) => cache
                        .put(
                            key,
                            &version.info.name,
                            &version.info.version,
                            &version.digest,
                            &output.metadata,
                            &artifacts,
                        )
                        .await
                        .map_err(
                            |e| tracing::warn!(error = %format!("{e:#}"), "could not store the result in the cache"),
                        )
                        .ok(),
                    _ => None,
                };
                let digests = stored.unwrap_or_else(|| artifacts.iter().map(|a| sha256_hex(&a.data)).collect());
                execution.details.insert("artifacts".into(), artifact_list(&artifacts, &digests));
                Ok(StepOutput::new(artifacts, output.metadata).with_execution(execution))
            }
            Err(TaskError::Failed { failure, attempts }) => {
                let retryable = failure.is_retryable();
                let message = match &failure {
                    Failure::Permanent(m) | Failure::Retryable(m) => m.to_string(),
                    Failure::Timeout(d) => format!("timed out after {:.3}s", d.as_secs_f64()),
                };
                let message = if attempts > 1 { format!("{message} (after {attempts} attempts)") } else { message };
                let failure = if retryable { StepFailure::retryable(message) } else { StepFailure::new(message) };
                Err(failure.with_execution(execution))
            }
            Err(e @ (TaskError::Cancelled | TaskError::ShuttingDown)) => {
                Err(StepFailure::new(e.to_string()).with_execution(execution))
            }
        }
    }

    /// Submits the step to the scheduler (as [`crate::invoke`] builds every
    /// invocation) and waits for its last attempt.
    async fn submit(
        &self,
        step: &ReadyStep<SharedArtifact>,
        version: &Arc<StageVersion>,
    ) -> Result<TaskResult<stagecraft_runtime::StageOutput>, StepFailure> {
        let mut request = InvokeRequest::default()
            .priority(step.priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
            .retries(step.retries)
            .label(format!("{}/{}", step.run_id, step.name));
        request.timeout = step.timeout;
        if let Some(observer) = self.observer.clone() {
            let step_name: Arc<str> = Arc::from(step.name.as_str());
            let events = observer.clone();
            let step = step_name.clone();
            request =
                request.events(move |event| events(&stage_event(&step, event))).on_attempt_failed(move |attempt, e| {
                    observer(&RunEvent::AttemptFailed(AttemptFailedEvent {
                        event: "attempt_failed",
                        step: step_name.to_string(),
                        attempt,
                        error: e.to_string(),
                        retryable: e.is_retryable(),
                    }))
                });
        }
        let (inputs, params) = (step.inputs.clone(), step.params.clone());
        let handle = invoke::submit(&self.runtime, &self.scheduler, self.retry, version, inputs, params, request)
            .map_err(|e| StepFailure::retryable(format!("the scheduler refused the step: {e}")))?;
        Ok(handle.await)
    }
}

fn stage_event(step: &Arc<str>, event: StageEvent) -> RunEvent {
    match event {
        StageEvent::Progress { fraction, message } => {
            RunEvent::Progress(ProgressEvent { event: "progress", step: step.to_string(), fraction, message })
        }
        StageEvent::Log { level, message } => {
            RunEvent::Log(LogEvent { event: "log", step: step.to_string(), level, message })
        }
    }
}

/// Name, media type, size and digest of each artifact, for reports.
pub fn artifact_list(artifacts: &[SharedArtifact], digests: &[String]) -> Value {
    Value::Array(
        artifacts
            .iter()
            .zip(digests)
            .map(|(a, digest)| {
                json!({
                    "name": a.name,
                    "media_type": a.media_type,
                    "bytes": a.data.len(),
                    "sha256": digest,
                })
            })
            .collect(),
    )
}
