//! `stagecraft serve --redis`: pipeline jobs on the cluster's queue
//! ([`stagecraft_cluster`]) instead of this process's SQLite store, so any
//! number of API processes behind a balancer accept, list, watch and cancel
//! the same jobs, and workers on any machine run them.
//!
//! * [`ClusterJobs`]: what the job routes use in cluster mode: the queue,
//!   and the shared blob store that inputs and artifacts live in;
//! * [`run_pipeline_job`]: one job, as a worker runs it (inputs from the
//!   blob store, events to the job's stream, artifacts back to the store
//!   and their names and types to Redis); `stagecraft worker` and the
//!   workers inside `serve --redis` run the same function;
//! * [`events`]: a job's events as server-sent events, read from its
//!   stream (replayed from the start, then followed), so a caller may watch
//!   on any API process;
//! * [`follow_stages`] and [`activate_digest`]: hot swap across the
//!   cluster: every process runs the version Redis says is active, and
//!   learns of an upload or rollback on any API process as it happens.

use crate::error::{ApiError, ApiResult};
use crate::invoke_cache::{Answer, AnswerArtifact};
use crate::ClusterConfig;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stagecraft_cluster::worker::{self, Finished, Job, WorkerConfig, WorkerCounts};
use stagecraft_cluster::{ArtifactInfo, Band, ClusterError, EnqueueOptions, EventReader, JobRecord, Outcome, Queue};
use stagecraft_orchestrator::{
    BlobStore, InvokeRequest, JobEnd, JobInput, JobSpec, ManifestStore, Orchestrator, RunEvent,
};
use stagecraft_pipeline::RunOptions;
use stagecraft_runtime::{Artifact, Runtime, StageInput, StageVersion};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The job routes' backend in cluster mode.
pub struct ClusterJobs {
    /// The queue, job records and event streams.
    pub queue: Queue,
    /// Inputs and artifacts, reachable by every worker and API process.
    pub blobs: BlobStore,
    /// Synchronous invocations go to the workers: this process runs none.
    pub invoke_on_workers: bool,
    watchers: Arc<Watchers>,
}

impl ClusterJobs {
    /// The backend for `config`'s cluster on `queue`.
    pub fn new(queue: Queue, blobs: BlobStore, config: &ClusterConfig) -> Self {
        let watchers = Arc::new(Watchers {
            permits: Arc::new(Semaphore::new(config.max_watchers)),
            max: config.max_watchers,
            idle: Mutex::new(Vec::new()),
        });
        Self { queue, blobs, invoke_on_workers: config.workers == 0, watchers }
    }

    /// Callers waiting on jobs here now, and the most allowed.
    pub fn watchers(&self) -> (usize, usize) {
        (self.watchers.max - self.watchers.permits.available_permits(), self.watchers.max)
    }

    /// A reader of job streams, or 503 when `max_watchers` callers already
    /// wait on jobs here (each holds a Redis connection of its own while it
    /// waits: the bound keeps a flood of SSE subscribers from exhausting
    /// Redis's connections).
    async fn watch(&self) -> ApiResult<Watcher> {
        let permit = self.watchers.permits.clone().try_acquire_owned().map_err(|_| {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_watchers",
                format!("{} callers already wait on jobs on this API process; retry later", self.watchers.max),
            );
            e.retry_after = Some(1);
            e
        })?;
        let idle = self.watchers.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let reader = match idle {
            Some(reader) => reader,
            None => self.queue.event_reader(EVENTS_WAIT).await.map_err(cluster_error)?,
        };
        Ok(Watcher { reader: Some(reader), pool: self.watchers.clone(), _permit: permit })
    }

    /// Runs `stage` on a worker (see [`InvokeSpec`]) and waits for its
    /// answer: inputs to the blob store, the invocation on the queue's
    /// high band (a caller is waiting), unlisted and kept an hour; then
    /// the job's stream until it ends. The caller gets what a local
    /// invocation would answer, errors included; past `timeout` plus the
    /// time to reach a worker, the job is cancelled and the caller gets 504.
    pub async fn invoke_on_worker(
        &self,
        stage: &str,
        params: &Value,
        artifacts: Vec<Artifact>,
        timeout: Duration,
        retry_after: u64,
    ) -> ApiResult<Answer> {
        let mut watcher = self.watch().await?;
        let mut inputs = Vec::with_capacity(artifacts.len());
        for a in &artifacts {
            let sha256 = self.blobs.put(&a.data).await.map_err(anyhow::Error::from)?;
            inputs.push(JobInput { name: a.name.clone(), media_type: a.media_type.clone(), sha256 });
        }
        let spec = InvokeSpec {
            stage: stage.to_owned(),
            params: params.clone(),
            inputs,
            timeout_ms: Some(timeout.as_millis() as u64),
        };
        let payload = serde_json::to_string(&Work::Invoke(spec)).map_err(anyhow::Error::from)?;
        let id = format!("invoke-{}", crate::routes::jobs::new_job_id());
        let options = EnqueueOptions { unlisted: true, keep: Some(Duration::from_secs(3600)) };
        self.queue.enqueue_with(&id, Band::High, &payload, &options).await.map_err(|e| queue_error(e, retry_after))?;
        let deadline = tokio::time::Instant::now() + timeout + REACH_A_WORKER;
        let mut after = "0".to_owned();
        loop {
            if tokio::time::Instant::now() >= deadline {
                let _ = self.queue.cancel(&id).await;
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "no worker finished the invocation within {:.0} s",
                        (timeout + REACH_A_WORKER).as_secs_f64()
                    ),
                ));
            }
            let batch = watcher.next(&id, &after).await.map_err(cluster_error)?;
            let finished = batch.iter().any(|(_, e)| e.contains("\"job_finished\""));
            if let Some((position, _)) = batch.last() {
                after = position.clone();
            }
            // The final state and its event are written by one script: once
            // the event is there, so is the record's result.
            if finished || batch.is_empty() {
                match self.queue.job(&id).await.map_err(cluster_error)? {
                    Some(record) if record.is_final() => return self.answer(&record).await,
                    Some(_) => {}
                    None => return Err(ApiError::internal(format!("the invocation's record {id} vanished"))),
                }
            }
        }
    }

    /// The answer a finished invocation job holds: its outputs read back
    /// from the blob store, or its error as the caller would have seen it
    /// from a local invocation.
    async fn answer(&self, record: &JobRecord) -> ApiResult<Answer> {
        let result: Value = record.result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
        if record.state != "succeeded" {
            let message = result["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| record.error.clone())
                .or_else(|| record.reason.clone())
                .unwrap_or_else(|| format!("the invocation ended {}", record.state));
            return Err(match (record.state.as_str(), result["error"]["code"].as_str()) {
                ("failed", Some(code)) => ApiError::from_remote_code(code, message),
                _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            });
        }
        let output: InvokeResult = serde_json::from_value(result)
            .map_err(|e| ApiError::internal(format!("a worker's invocation result is unreadable: {e}")))?;
        let mut artifacts = Vec::with_capacity(output.artifacts.len());
        for a in output.artifacts {
            let data = self
                .blobs
                .get(&a.sha256)
                .await
                .map_err(anyhow::Error::from)?
                .ok_or_else(|| ApiError::internal(format!("the artifact {} is not in the blob store", a.sha256)))?;
            artifacts.push(AnswerArtifact::new(a.name, a.media_type, data.into()));
        }
        Ok(Answer {
            stage: output.stage,
            version: output.version,
            digest: output.digest,
            metadata: output.metadata,
            artifacts,
        })
    }
}

/// The time an invocation may wait on the queue for a worker, on top of
/// its own deadline, before the caller gets 504.
const REACH_A_WORKER: Duration = Duration::from_secs(30);

/// What `serve --redis` maps a queue's refusal to.
pub(crate) fn queue_error(e: ClusterError, retry_after: u64) -> ApiError {
    match e {
        ClusterError::QueueFull { max, .. } => ApiError::queue_full(max as usize, retry_after),
        e @ ClusterError::PayloadTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
        }
        e => cluster_error(e),
    }
}

pub(crate) fn cluster_error(e: ClusterError) -> ApiError {
    ApiError::internal(format!("the cluster's queue: {e}"))
}

/// Job-stream readers of one API process, bounded, their connections reused.
struct Watchers {
    permits: Arc<Semaphore>,
    max: usize,
    idle: Mutex<Vec<EventReader>>,
}

/// One caller's reader ([`ClusterJobs::watch`]); its connection goes back
/// to the pool when it is dropped, unless a read failed on it.
struct Watcher {
    reader: Option<EventReader>,
    pool: Arc<Watchers>,
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    async fn next(&mut self, id: &str, after: &str) -> stagecraft_cluster::Result<Vec<(String, String)>> {
        let Some(reader) = self.reader.as_mut() else {
            return Err(ClusterError::Protocol("this reader's connection failed".into()));
        };
        let read = reader.next(id, after).await;
        if read.is_err() {
            self.reader = None;
        }
        read
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(reader);
        }
    }
}

/// A queue payload other than a pipeline job ([`JobSpec`]): `{"invoke": …}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// A synchronous invocation sent to the workers by an API process that
    /// runs none (`serve --redis --workers 0`).
    Invoke(InvokeSpec),
}

/// One invocation of a stage's active version on a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct InvokeSpec {
    /// The stage.
    pub stage: String,
    /// Its params.
    pub params: Value,
    /// Its input files, in the blob store.
    pub inputs: Vec<JobInput>,
    /// The invocation's deadline (default: the worker's).
    pub timeout_ms: Option<u64>,
}

/// What a worker commits for an invocation that succeeded.
#[derive(Debug, Serialize, Deserialize)]
struct InvokeResult {
    stage: String,
    version: String,
    digest: String,
    metadata: Value,
    artifacts: Vec<ArtifactInfo>,
}

/// The result cache's manifests in Redis ([`Queue::keep_result`]), so
/// every worker and API process of a cluster reuses what any of them
/// computed (the artifacts themselves are in the shared blob store).
pub struct RedisManifests(pub Queue);

impl ManifestStore for RedisManifests {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async move { Ok(self.0.kept_result(key).await?) })
    }
    fn put<'a>(&'a self, key: &'a str, manifest: String) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.0.keep_result(key, &manifest).await?) })
    }
}

/// A job record as `GET /v1/jobs/{id}` shows it in cluster mode: the same
/// fields as the embedded server's where they mean the same (`state`,
/// `report`, `error`, timestamps in seconds), plus the queue's own
/// (`band`, `epoch`, `deliveries`, `commits`, `worker`, `reason`).
pub fn record_json(record: &JobRecord) -> Value {
    let spec: Option<JobSpec> = serde_json::from_str(&record.payload).ok();
    let secs = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
    let report = record.result.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok());
    json!({
        "id": record.id,
        "state": record.state,
        "file": spec.as_ref().map(|s| s.file.clone()),
        "input_text": spec.as_ref().and_then(|s| s.input.clone()),
        "inputs": spec.as_ref().map(|s| s.inputs.iter().map(|i| json!({
            "name": i.name, "media_type": i.media_type, "digest": i.sha256,
        })).collect::<Vec<_>>()),
        "created_at": secs(record.enqueued_ms),
        "started_at": secs(record.started_ms),
        "finished_at": secs(record.finished_ms),
        "report": report.filter(|r| r.get("steps").is_some()),
        "error": record.error.clone().or_else(|| record.reason.clone()),
        "cancel_requested": record.cancel_requested,
        "band": record.band,
        "epoch": record.epoch,
        "deliveries": record.deliveries,
        "commits": record.commits,
        "worker": record.worker,
        "reason": record.reason,
        "events_url": format!("/v1/jobs/{}/events", record.id),
    })
}

/// Runs one job from the queue: a pipeline job, or an invocation (see
/// [`Work`]).
pub async fn run_job(orchestrator: &Orchestrator, blobs: &BlobStore, queue: &Queue, job: Job) -> Finished {
    if job.payload().starts_with("{\"invoke\"") {
        return match serde_json::from_str::<Work>(job.payload()) {
            Ok(Work::Invoke(spec)) => run_invocation(orchestrator, blobs, queue, &job, spec).await,
            Err(e) => failed(format!("the job's payload is not an invocation: {e}")),
        };
    }
    let spec: JobSpec = match serde_json::from_str(job.payload()) {
        Ok(p) => p,
        Err(e) => return failed(format!("the job's payload is not a pipeline job: {e}")),
    };
    run_pipeline_job(orchestrator, blobs, queue, job, spec).await
}

/// Runs an invocation for an API process (see [`ClusterJobs::invoke_on_worker`]):
/// the stage's active version here, its outputs to the blob store.
async fn run_invocation(
    orchestrator: &Orchestrator,
    blobs: &BlobStore,
    queue: &Queue,
    job: &Job,
    spec: InvokeSpec,
) -> Finished {
    let fail = |code: &str, message: String| Finished {
        outcome: Outcome::Failed,
        result: json!({ "error": { "code": code, "message": message } }).to_string(),
        error: Some(message),
    };
    let Some(version) = orchestrator.runtime().stage(&spec.stage) else {
        return fail("unknown_stage", format!("unknown stage '{}'", spec.stage));
    };
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for i in spec.inputs {
        match blobs.get(&i.sha256).await {
            Ok(Some(data)) => inputs.push(Artifact::new(i.name, i.media_type, data.to_vec())),
            Ok(None) => return fail("invalid_input", format!("the input {} is not in the blob store", i.sha256)),
            Err(e) => return fail("unavailable", format!("reading the input {}: {e}", i.sha256)),
        }
    }
    let mut request = InvokeRequest::default().label(format!("cluster invoke {}", spec.stage));
    if let Some(ms) = spec.timeout_ms {
        request = request.timeout(Duration::from_millis(ms.max(1)));
    }
    let invoked = tokio::select! {
        r = orchestrator.invoke(&version, StageInput::new(inputs, spec.params), request) => r,
        () = job.cancelled().cancelled() => Err(stagecraft_orchestrator::Error::Cancelled),
    };
    let output = match invoked {
        Ok(output) => output,
        Err(stagecraft_orchestrator::Error::Invoke(e)) => return fail(e.code(), e.to_string()),
        Err(stagecraft_orchestrator::Error::Cancelled) => {
            return Finished {
                outcome: Outcome::Cancelled,
                result: json!({ "error": { "code": "cancelled", "message": "cancelled" } }).to_string(),
                error: Some("cancelled".into()),
            }
        }
        Err(e) => return fail("unavailable", e.to_string()),
    };
    let mut artifacts = Vec::with_capacity(output.artifacts.len());
    for a in &output.artifacts {
        match blobs.put(&a.data).await {
            Ok(sha256) => {
                artifacts.push(ArtifactInfo { sha256, name: a.name.clone(), media_type: a.media_type.clone() })
            }
            Err(e) => return fail("unavailable", format!("storing the output {}: {e}", a.name)),
        }
    }
    if let Err(e) = queue.record_artifacts(&artifacts).await {
        tracing::warn!(job = job.id(), "recording artifact names: {e}");
    }
    let result = InvokeResult {
        stage: output.stage,
        version: output.version,
        digest: output.digest,
        metadata: output.metadata,
        artifacts,
    };
    Finished { outcome: Outcome::Succeeded, result: serde_json::to_string(&result).unwrap_or_default(), error: None }
}

/// Runs one pipeline job (see the [module](self)).
async fn run_pipeline_job(
    orchestrator: &Orchestrator,
    blobs: &BlobStore,
    queue: &Queue,
    job: Job,
    spec: JobSpec,
) -> Finished {
    // The engine's observer is synchronous: events go through a bounded
    // channel to a task that appends them (fenced by the lease's epoch);
    // when the channel is full, progress and log events are dropped.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    let forwarder = {
        let job = job.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let Err(e) = job.event(&event).await {
                    tracing::warn!(job = job.id(), "sending an event: {e}");
                }
            }
        })
    };
    let observer: stagecraft_orchestrator::RunObserver = Arc::new(move |e: &RunEvent| {
        if let Ok(v) = serde_json::to_string(e) {
            let _ = tx.try_send(v);
        }
    });
    let options = RunOptions { run_id: job.id().to_owned(), cancel: job.cancelled().clone(), ..RunOptions::default() };
    let result = orchestrator.run_job(blobs, blobs, &spec, options, Some(observer)).await;
    let _ = forwarder.await;
    let artifacts: Vec<ArtifactInfo> = result
        .report
        .iter()
        .flat_map(|r| r["steps"].as_array())
        .flatten()
        .flat_map(|s| s["artifacts"].as_array())
        .flatten()
        .filter_map(|a| {
            Some(ArtifactInfo {
                sha256: a["sha256"].as_str()?.to_owned(),
                name: a["name"].as_str()?.to_owned(),
                media_type: a["media_type"].as_str()?.to_owned(),
            })
        })
        .collect();
    if let Err(e) = queue.record_artifacts(&artifacts).await {
        // The bytes are stored; only their names would be missing.
        tracing::warn!(job = job.id(), "recording artifact names: {e}");
    }
    let outcome = match result.end {
        JobEnd::Succeeded => Outcome::Succeeded,
        JobEnd::Failed => Outcome::Failed,
        JobEnd::Cancelled => Outcome::Cancelled,
    };
    let report = result.report.unwrap_or_else(|| json!({ "error": result.error }));
    Finished { outcome, result: report.to_string(), error: result.error }
}

fn failed(error: String) -> Finished {
    Finished { outcome: Outcome::Failed, result: json!({ "error": error }).to_string(), error: Some(error) }
}

/// Runs a pipeline worker on `queue` until `shutdown`, then drains.
pub async fn run_worker(
    orchestrator: Orchestrator,
    blobs: BlobStore,
    queue: Queue,
    config: WorkerConfig,
    shutdown: CancellationToken,
    counts: Arc<WorkerCounts>,
) -> stagecraft_cluster::Result<()> {
    let for_jobs = queue.clone();
    let handler = move |job: Job| {
        let (orchestrator, blobs, queue) = (orchestrator.clone(), blobs.clone(), for_jobs.clone());
        async move { run_job(&orchestrator, &blobs, &queue, job).await }
    };
    worker::run(queue, config, handler, shutdown, counts).await
}

/// How long one read of a job's stream waits before it checks the job's
/// record (a job that expired, or whose final event was trimmed, still ends
/// the stream).
const EVENTS_WAIT: Duration = Duration::from_secs(2);

struct Follow {
    reader: Watcher,
    queue: Queue,
    id: String,
    after: String,
    buffered: std::collections::VecDeque<(String, String)>,
    index: usize,
    done: bool,
}

/// The job's events as server-sent events: every event kept since it was
/// accepted, then the live ones, ending after `job_finished`.
pub async fn events(cluster: &ClusterJobs, id: &str) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let reader = cluster.watch().await?;
    let follow = Follow {
        reader,
        queue: cluster.queue.clone(),
        id: id.to_owned(),
        after: "0".into(),
        buffered: Default::default(),
        index: 0,
        done: false,
    };
    let events = stream::unfold(follow, |mut f| async move {
        loop {
            if let Some((_, text)) = f.buffered.pop_front() {
                let kind = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("event").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "message".to_owned());
                if kind == "job_finished" {
                    f.done = true;
                    f.buffered.clear();
                }
                let event = Event::default().id(f.index.to_string()).event(kind).data(text);
                f.index += 1;
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            match f.reader.next(&f.id, &f.after).await {
                Ok(batch) if !batch.is_empty() => {
                    f.after = batch.last().map(|(p, _)| p.clone()).unwrap_or_default();
                    f.buffered.extend(batch);
                }
                Ok(_) => {
                    // Nothing new: end if the job is gone or ended without
                    // a final event left in its stream.
                    match f.queue.job(&f.id).await {
                        Ok(Some(record)) if !record.is_final() => {}
                        _ => return None,
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %f.id, "reading the job's events: {e}");
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Makes `digest` the active version of `stage` in this process: nothing to
/// do when it already is; a version this process still holds is made
/// current again; otherwise the component is read from the blob store,
/// compiled and checked to be the stage it should be. Steps and
/// invocations in flight keep the version they started with.
pub async fn activate_digest(
    runtime: &Arc<Runtime>,
    blobs: &BlobStore,
    stage: &str,
    digest: &str,
) -> anyhow::Result<Arc<StageVersion>> {
    if let Some(current) = runtime.stage(stage).filter(|v| v.digest == digest) {
        return Ok(current);
    }
    if let Some(held) = runtime.previous_versions(stage).into_iter().find(|v| v.digest == digest) {
        return Ok(runtime.activate(held));
    }
    let bytes = blobs
        .get(digest)
        .await?
        .ok_or_else(|| anyhow::anyhow!("component {digest} of stage '{stage}' is not in the blob store"))?;
    let (runtime_c, origin) = (runtime.clone(), format!("cluster:{stage}"));
    let version = tokio::task::spawn_blocking(move || runtime_c.prepare_bytes(&bytes, &origin)).await??;
    anyhow::ensure!(
        version.info.name == stage,
        "component {digest} describes itself as '{}', not '{stage}'",
        version.info.name
    );
    tracing::info!(stage, version = %version.info.version, digest, "the cluster's version is active here");
    Ok(runtime.activate(version))
}

/// Puts the component of `version` into the blob store if it came from a
/// file (a plugins folder) that still holds it, so that a process that
/// never loaded that file can roll back to it.
pub async fn keep_component(blobs: &BlobStore, version: &StageVersion) {
    match std::fs::read(&version.origin) {
        Ok(bytes) if stagecraft_orchestrator::blobs::sha256_hex(&bytes) == version.digest => {
            if let Err(e) = blobs.put_known(&version.digest, &bytes).await {
                tracing::warn!(stage = %version.info.name, "keeping the component for rollbacks: {e:#}");
            }
        }
        _ => tracing::warn!(
            stage = %version.info.name,
            origin = %version.origin,
            "the running component's file is gone or changed: other processes cannot roll back to it"
        ),
    }
}

/// Makes this process run the cluster's active version of each stage (of
/// `only` these, when given). A process calls it once before it takes
/// traffic, then [`follow_stages`] keeps it current.
pub async fn apply_stages(runtime: &Arc<Runtime>, blobs: &BlobStore, queue: &Queue, only: Option<&[String]>) {
    let active = match queue.stage_versions().await {
        Ok(a) => a,
        Err(e) => return tracing::warn!("reading the cluster's stage versions: {e}"),
    };
    for (stage, digest) in &active {
        if only.is_some_and(|s| !s.contains(stage)) {
            continue;
        }
        if let Err(e) = activate_digest(runtime, blobs, stage, digest).await {
            tracing::error!(stage, digest, "cannot run the cluster's version: {e:#}");
        }
    }
}

/// How often the active versions are compared whole, besides the change
/// log's wake-ups (a process that lost its connection catches up here).
const STAGES_RESYNC: Duration = Duration::from_secs(10);

/// Follows the cluster's active stage versions until `stop`: applies them
/// all at once, then each change as the log announces it.
pub async fn follow_stages(runtime: Arc<Runtime>, blobs: BlobStore, queue: Queue, stop: CancellationToken) {
    let apply = |stages: Option<Vec<String>>| {
        let (runtime, blobs, queue) = (runtime.clone(), blobs.clone(), queue.clone());
        async move { apply_stages(&runtime, &blobs, &queue, stages.as_deref()).await }
    };
    loop {
        let mut changes = tokio::select! {
            c = queue.stage_changes(Duration::from_secs(2)) => c,
            _ = stop.cancelled() => return,
        };
        apply(None).await;
        let mut since_resync = tokio::time::Instant::now();
        loop {
            let next = match &mut changes {
                Ok(changes) => tokio::select! {
                    n = changes.next() => n,
                    _ = stop.cancelled() => return,
                },
                Err(e) => {
                    tracing::warn!("following the cluster's stage versions: {e}");
                    break;
                }
            };
            match next {
                Ok(stages) if !stages.is_empty() => apply(Some(stages)).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("following the cluster's stage versions: {e}");
                    break;
                }
            }
            if since_resync.elapsed() >= STAGES_RESYNC {
                apply(None).await;
                since_resync = tokio::time::Instant::now();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
