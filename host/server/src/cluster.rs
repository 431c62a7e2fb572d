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

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use stagecraft_cluster::worker::{self, Finished, Job, WorkerConfig, WorkerCounts};
use stagecraft_cluster::{ArtifactInfo, EventReader, JobRecord, Outcome, Queue};
use stagecraft_orchestrator::{BlobStore, JobEnd, JobSpec, Orchestrator, RunEvent};
use stagecraft_pipeline::RunOptions;
use stagecraft_runtime::{Runtime, StageVersion};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The job routes' backend in cluster mode.
pub struct ClusterJobs {
    /// The queue, job records and event streams.
    pub queue: Queue,
    /// Inputs and artifacts, reachable by every worker and API process.
    pub blobs: BlobStore,
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

/// Runs one job from the queue (see the [module](self)).
pub async fn run_pipeline_job(orchestrator: &Orchestrator, blobs: &BlobStore, queue: &Queue, job: Job) -> Finished {
    let spec: JobSpec = match serde_json::from_str(job.payload()) {
        Ok(p) => p,
        Err(e) => return failed(format!("the job's payload is not a pipeline job: {e}")),
    };
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
        async move { run_pipeline_job(&orchestrator, &blobs, &queue, job).await }
    };
    worker::run(queue, config, handler, shutdown, counts).await
}

/// How long one read of a job's stream waits before it checks the job's
/// record (a job that expired, or whose final event was trimmed, still ends
/// the stream).
const EVENTS_WAIT: Duration = Duration::from_secs(2);

struct Follow {
    reader: EventReader,
    queue: Queue,
    id: String,
    after: String,
    buffered: std::collections::VecDeque<(String, String)>,
    index: usize,
    done: bool,
}

/// The job's events as server-sent events: every event kept since it was
/// accepted, then the live ones, ending after `job_finished`.
pub async fn events(
    queue: &Queue,
    id: &str,
) -> stagecraft_cluster::Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let reader = queue.event_reader(EVENTS_WAIT).await?;
    let follow = Follow {
        reader,
        queue: queue.clone(),
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
