//! Pipeline jobs: accepted jobs are written to the [store](crate::store)
//! before the caller hears back, run on the orchestrator in the background,
//! stream their events to any number of subscribers (late ones get the
//! past events first), and end in the store with their report, whose
//! artifacts are links into the blob store.

use crate::store::{ArtifactMeta, InputRef, JobRecord, JobState, JobStore};
use serde_json::{json, Value};
pub use stagecraft_orchestrator::job::artifact_link;
use stagecraft_orchestrator::{ArtifactSink, BlobStore, JobEnd, JobInput, JobSpec, Orchestrator, RunEvent};
use stagecraft_pipeline::{CancellationToken, RunOptions};
use stagecraft_runtime::Artifact;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Events of a job in progress, kept for replay.
///
/// Bounded: past [`EVENTS_MAX`] events or [`EVENTS_MAX_BYTES`] bytes, the
/// stages' `progress` and `log` events are dropped (and counted, in one
/// `events_dropped` event before `job_finished`); the engine's own events
/// (steps, attempts, the job's start and end) are always kept. The runtime
/// already coalesces progress to a few reports per second per step, so
/// only a long, chatty job gets here.
pub struct LiveJob {
    /// Serialized events in order, and whether the job has ended.
    log: Mutex<EventLog>,
    /// Bumped on every change, to wake subscribers.
    changed: watch::Sender<u64>,
    pub cancel: CancellationToken,
}

/// Most events kept per job (live and in the store).
pub const EVENTS_MAX: usize = 10_000;
/// Most bytes of serialized events kept per job.
pub const EVENTS_MAX_BYTES: usize = 4 << 20;

#[derive(Default)]
struct EventLog {
    events: Vec<Arc<str>>,
    bytes: usize,
    ended: bool,
    dropped_progress: u64,
    dropped_log: u64,
}

impl LiveJob {
    fn new() -> Self {
        Self { log: Mutex::new(EventLog::default()), changed: watch::channel(0).0, cancel: CancellationToken::new() }
    }

    fn push(&self, event: Value) {
        let kind = event.get("event").and_then(Value::as_str).unwrap_or_default();
        let droppable = matches!(kind, "progress" | "log");
        let text: Arc<str> = event.to_string().into();
        {
            let mut log = self.log.lock().unwrap();
            if droppable && (log.events.len() >= EVENTS_MAX || log.bytes + text.len() > EVENTS_MAX_BYTES) {
                match kind {
                    "progress" => log.dropped_progress += 1,
                    _ => log.dropped_log += 1,
                }
                return;
            }
            log.bytes += text.len();
            log.events.push(text);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Says how many events were dropped, if any were (before `job_finished`).
    fn push_dropped(&self) {
        let (progress, log) = {
            let log = self.log.lock().unwrap();
            (log.dropped_progress, log.dropped_log)
        };
        if progress + log > 0 {
            self.push(json!({ "event": "events_dropped", "progress": progress, "log": log }));
        }
    }

    fn end(&self) {
        self.log.lock().unwrap().ended = true;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Event number `index`, or why there is none (yet).
    pub fn event(&self, index: usize) -> NextEvent {
        let log = self.log.lock().unwrap();
        match log.events.get(index) {
            Some(event) => NextEvent::Ready(event.clone()),
            None if log.ended => NextEvent::Ended,
            None => NextEvent::NotYet,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn events(&self) -> Vec<Value> {
        self.log.lock().unwrap().events.iter().filter_map(|e| serde_json::from_str(e).ok()).collect()
    }
}

/// What [`LiveJob::event`] has at an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextEvent {
    /// The event (JSON).
    Ready(Arc<str>),
    /// Not yet: more may come.
    NotYet,
    /// The job has ended and there are no more.
    Ended,
}

/// Runs and tracks jobs.
pub struct JobManager {
    pub store: JobStore,
    pub blobs: BlobStore,
    orchestrator: Orchestrator,
    metrics: Arc<crate::metrics::Metrics>,
    /// Jobs running at once; the others wait, `queued` in the store.
    running: Arc<tokio::sync::Semaphore>,
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    /// Artifact names and media types already in the store, so that a
    /// stage answering the same output again costs no SQLite write.
    recorded: Mutex<HashSet<ArtifactMeta>>,
}

/// Past this many remembered artifacts, the set starts over (a repeat then
/// costs one idempotent write again).
const RECORDED_MAX: usize = 4096;

impl JobManager {
    pub fn new(
        store: JobStore,
        blobs: BlobStore,
        orchestrator: Orchestrator,
        metrics: Arc<crate::metrics::Metrics>,
        max_running: usize,
    ) -> Self {
        let running = Arc::new(tokio::sync::Semaphore::new(max_running.max(1)));
        Self {
            store,
            blobs,
            orchestrator,
            metrics,
            running,
            live: Mutex::new(HashMap::new()),
            recorded: Mutex::default(),
        }
    }

    /// Keeps artifacts in the blob store (under the digest given with each,
    /// when the caller already has it) and their names and media types in
    /// SQLite; returns the digests in order.
    ///
    /// The artifacts are gathered before the first await: a caller's
    /// iterator (closures over borrowed artifacts) held across it would
    /// keep the future from being `Send`.
    pub fn store_artifacts<'a>(
        &'a self,
        artifacts: impl IntoIterator<Item = (&'a Artifact, Option<&'a str>)>,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<String>>> + Send + 'a {
        let artifacts: Vec<(&'a Artifact, Option<&'a str>)> = artifacts.into_iter().collect();
        self.store_artifact_list(artifacts)
    }

    async fn store_artifact_list(&self, artifacts: Vec<(&Artifact, Option<&str>)>) -> anyhow::Result<Vec<String>> {
        let mut digests = Vec::new();
        let mut new = Vec::new();
        for (artifact, known) in artifacts {
            let digest = match known {
                Some(d) => {
                    self.blobs.put_known(d, &artifact.data).await?;
                    d.to_owned()
                }
                None => self.blobs.put(&artifact.data).await?,
            };
            let meta = ArtifactMeta {
                digest: digest.clone(),
                name: artifact.name.clone(),
                media_type: artifact.media_type.clone(),
            };
            if !self.recorded.lock().unwrap().contains(&meta) {
                new.push(meta);
            }
            digests.push(digest);
        }
        if !new.is_empty() {
            self.store.record_artifacts(&new)?;
            let mut recorded = self.recorded.lock().unwrap();
            if recorded.len() + new.len() > RECORDED_MAX {
                recorded.clear();
            }
            recorded.extend(new);
        }
        Ok(digests)
    }

    /// The live view of a job that has not ended in this process.
    pub fn live(&self, id: &str) -> Option<Arc<LiveJob>> {
        self.live.lock().unwrap().get(id).cloned()
    }

    /// Starts running a job already written to the store.
    pub fn start(self: &Arc<Self>, record: JobRecord) {
        let live = Arc::new(LiveJob::new());
        if record.cancel_requested {
            live.cancel.cancel();
        }
        self.live.lock().unwrap().insert(record.id.clone(), live.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            // Wait for a turn (a cancel while waiting ends the job at once).
            let permit = tokio::select! {
                permit = this.running.clone().acquire_owned() => permit.ok(),
                _ = live.cancel.cancelled() => None,
            };
            this.run(record, &live).await;
            drop(permit);
            live.end();
            this.live.lock().unwrap().remove(&id);
        });
    }

    /// Resumes every job left queued or running by an earlier process.
    pub fn resume(self: &Arc<Self>) -> anyhow::Result<usize> {
        let jobs = self.store.unfinished()?;
        let n = jobs.len();
        for job in jobs {
            tracing::info!(job = %job.id, state = job.state.as_str(), "resuming job");
            self.start(job);
        }
        Ok(n)
    }

    /// Asks a job to stop. Returns its state as stored now.
    pub fn cancel(&self, id: &str) -> anyhow::Result<Option<JobState>> {
        let Some(record) = self.store.get(id)? else { return Ok(None) };
        if !record.state.is_final() {
            self.store.request_cancel(id)?;
            if let Some(live) = self.live(id) {
                live.cancel.cancel();
            }
        }
        Ok(Some(record.state))
    }

    async fn run(&self, record: JobRecord, live: &Arc<LiveJob>) {
        let id = record.id.clone();
        match self.store.claim(&id) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(job = %id, "cannot claim the job: {e:#}");
                return;
            }
        }
        live.push(json!({ "event": "job_started", "job": id }));
        let (state, report, error) = self.execute(&record, live).await;
        live.push_dropped();
        live.push(json!({ "event": "job_finished", "job": id, "state": state, "error": error }));
        if let Err(e) = self.store.finish(&id, state, report.as_ref(), error.as_deref(), &live.events()) {
            tracing::error!(job = %id, "cannot record the job's end: {e:#}");
        }
    }

    async fn execute(&self, record: &JobRecord, live: &Arc<LiveJob>) -> (JobState, Option<Value>, Option<String>) {
        if live.cancel.is_cancelled() {
            return (JobState::Cancelled, None, Some("cancelled before it started".into()));
        }
        let spec = JobSpec {
            pipeline: record.pipeline.clone(),
            file: record.file.clone(),
            input: record.input_text.clone(),
            inputs: record
                .inputs
                .iter()
                .map(|i| JobInput { name: i.name.clone(), media_type: i.media_type.clone(), sha256: i.digest.clone() })
                .collect(),
        };
        let sink = live.clone();
        let observer: stagecraft_orchestrator::RunObserver = Arc::new(move |e: &RunEvent| {
            if let Ok(v) = serde_json::to_value(e) {
                sink.push(v);
            }
        });
        let options = RunOptions { run_id: record.id.clone(), cancel: live.cancel.clone(), ..RunOptions::default() };
        let result = self.orchestrator.run_job(&self.blobs, self, &spec, options, Some(observer)).await;
        for step in result.report.iter().flat_map(|r| r["steps"].as_array()).flatten() {
            if let Some(hit) = step["execution"]["cache_hit"].as_bool() {
                self.metrics.record_step(hit);
            }
        }
        let state = match result.end {
            JobEnd::Succeeded => JobState::Succeeded,
            JobEnd::Failed => JobState::Failed,
            JobEnd::Cancelled => JobState::Cancelled,
        };
        (state, result.report, result.error)
    }
}

/// The server's artifacts: in the blob store, with their names and media
/// types recorded in SQLite.
impl ArtifactSink for JobManager {
    fn store<'a>(
        &'a self,
        artifacts: Vec<stagecraft_orchestrator::job::ArtifactToStore<'a>>,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<Vec<String>>> {
        Box::pin(self.store_artifact_list(artifacts))
    }
}

/// Input references for the store, after putting the data in the blob store.
pub async fn store_inputs(jobs: &JobManager, files: &[Artifact]) -> anyhow::Result<Vec<InputRef>> {
    let digests = jobs.store_artifacts(files.iter().map(|f| (f, None))).await?;
    Ok(files
        .iter()
        .zip(digests)
        .map(|(f, digest)| InputRef { name: f.name.clone(), media_type: f.media_type.clone(), digest })
        .collect())
}
