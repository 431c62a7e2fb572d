//! # stagecraft-orchestrator
//!
//! Puts the host's parts together: the [wasm runtime](stagecraft_runtime)
//! runs one sandboxed invocation, the [scheduler](stagecraft_scheduler)
//! decides when (priority queue, per-stage pools, retries, deadlines,
//! memory pressure) and the [pipeline engine](stagecraft_pipeline) decides
//! what comes next in a DAG. Every way of running a stage goes through
//! [`Orchestrator`]: pipelines ([`Orchestrator::run`]: `stagecraft run`,
//! HTTP jobs) and single invocations ([`Orchestrator::invoke`]: `stagecraft
//! invoke`, `POST /v1/stages/{name}/invoke`).
//!
//! * [`invoke`]: one invocation as a scheduler task (deadline, memory
//!   estimate, retries, the runtime's error kept typed), for both;
//! * [`job`]: a pipeline job (inputs and artifacts by digest in the blob
//!   store), as the server and a cluster worker both run one;
//! * [`runner`]: each pipeline step as such a task on a pinned component
//!   version, with the result cache;
//! * [`error`]: why an invocation produced nothing;
//! * [`result_cache`] and [`blobs`]: the content-addressed result cache,
//!   and the blob store (a folder or S3) it and the cluster share;
//! * [`catalog`]: stage schemas for validation;
//! * [`events`]: what callers watch while a run progresses;
//! * [`output`]: artifacts and the JSON report written to a folder.

pub mod blobs;
pub mod catalog;
pub mod error;
pub mod events;
pub mod invoke;
pub mod job;
mod limits;
pub mod output;
pub mod result_cache;
pub mod reuse;
pub mod runner;
#[cfg(feature = "testing")]
pub mod testing;

pub use blobs::{BlobError, BlobStore};
pub use catalog::RuntimeCatalog;
pub use error::{Error, Result};
pub use events::{LimitedEvent, RunEvent, RunObserver};
pub use invoke::{InvokeRequest, Target};
pub use job::{ArtifactSink, JobEnd, JobInput, JobResult, JobSpec};
pub use result_cache::{ManifestStore, ResultCache};
pub use reuse::{Reuse, ReusePolicy, StageReuse};
pub use runner::{SharedArtifact, StageRunner};

use stagecraft_pipeline::{DagExecutor, Diagnostics, Pipeline, RunInput, RunOptions, RunOutcome};
use stagecraft_runtime::{Runtime, StageInput, StageOutput};
use stagecraft_scheduler::{RetryPolicy, Scheduler};
use std::sync::Arc;

/// The runtime, the scheduler and the result cache, shared by every run.
#[derive(Clone)]
pub struct Orchestrator {
    runtime: Arc<Runtime>,
    scheduler: Scheduler,
    cache: Option<Arc<ResultCache>>,
    reuse: Arc<ReusePolicy>,
    retry: RetryPolicy,
}

impl Orchestrator {
    /// An orchestrator over `runtime` and `scheduler`; `cache` None turns
    /// the result cache off.
    pub fn new(runtime: Arc<Runtime>, scheduler: Scheduler, cache: Option<ResultCache>) -> Self {
        Self { runtime, scheduler, cache: cache.map(Arc::new), reuse: Arc::default(), retry: RetryPolicy::default() }
    }

    /// Sets the operators' per-stage reuse rules (see [`reuse`]).
    #[must_use]
    pub fn with_reuse(mut self, reuse: ReusePolicy) -> Self {
        self.reuse = Arc::new(reuse);
        self
    }

    /// Whether results of a stage may be reused, for every cache in front of it.
    pub fn reuse(&self) -> &ReusePolicy {
        &self.reuse
    }

    /// Sets the backoff (base, cap, jitter) used for step retries; each
    /// step's `retries` sets the number of attempts.
    pub fn with_retry_backoff(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn cache(&self) -> Option<&ResultCache> {
        self.cache.as_deref()
    }

    /// Runs one stage on `input` as a scheduler task: queued by
    /// `request.priority` in the stage's pool, charged the component's
    /// memory estimate, under `request.timeout` (default: the runtime's),
    /// retried `request.retries` times on retryable failures.
    /// The runtime's error comes back as [`Error::Invoke`]; a full queue or a
    /// shutdown as [`Error::Refused`].
    pub async fn invoke(
        &self,
        target: impl Into<Target>,
        input: StageInput,
        request: InvokeRequest,
    ) -> Result<StageOutput> {
        let version = invoke::resolve(&self.runtime, target.into())?;
        let inputs = input.artifacts.into_iter().map(Arc::new).collect();
        let handle =
            invoke::submit(&self.runtime, &self.scheduler, self.retry, &version, inputs, input.params, request)?;
        handle.await.outcome.map_err(Error::from_task)
    }

    /// Parses and validates a pipeline against the stages loaded now.
    pub fn load_pipeline(&self, source: &str, file: &str) -> Result<Pipeline, Diagnostics> {
        Pipeline::load(source, file, &RuntimeCatalog(&self.runtime))
    }

    /// Runs a validated pipeline to the end (or until `options.cancel`).
    /// `observer` sees every step event and what the stages report.
    pub async fn run(
        &self,
        pipeline: &Pipeline,
        input: RunInput<SharedArtifact>,
        mut options: RunOptions,
        observer: Option<RunObserver>,
    ) -> RunOutcome<SharedArtifact> {
        let runner = StageRunner {
            runtime: self.runtime.clone(),
            scheduler: self.scheduler.clone(),
            cache: self.cache.clone(),
            reuse: self.reuse.clone(),
            retry: self.retry,
            observer: observer.clone(),
        };
        if let Some(observer) = observer {
            let run_max_workers = options.max_workers;
            for cut in limits::cuts(pipeline, run_max_workers, &self.scheduler) {
                tracing::warn!(scope = %cut.scope, asked = cut.asked, allowed = cut.allowed, by = %cut.by,
                    "the host allows fewer steps in flight than the pipeline asks for");
                observer(&RunEvent::Limited(cut));
            }
            let forward = observer.clone();
            options.observer = Some(Arc::new(move |e| forward(&RunEvent::Step(e.clone()))));
        }
        DagExecutor::new(runner).run(pipeline, input, options).await
    }
}
