//! The scale-out roles on the Redis queue ([`stagecraft_cluster`]):
//! `stagecraft worker` runs pipeline jobs pulled from Redis; `stagecraft
//! submit` puts one there (inputs into the shared blob store) and can
//! follow it to the end.
//!
//! A job's payload is JSON: `{"pipeline": YAML, "file": name, "input":
//! text or null, "inputs": [{"name", "media_type", "sha256"}]}`, each input
//! already in the blob store under its sha256. The committed result is the
//! run report, whose steps list their artifacts by sha256 in the same
//! store.

use crate::host::HostArgs;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stagecraft_cluster::worker::{self, Finished, Job, WorkerConfig, WorkerCounts};
use stagecraft_cluster::{Band, Outcome, Queue, QueueConfig};
use stagecraft_orchestrator::{BlobStore, Orchestrator, RunEvent};
use stagecraft_pipeline::{RunInput, RunOptions, RunStatus};
use stagecraft_runtime::Artifact;
use stagecraft_scheduler::Scheduler;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the cluster is.
#[derive(clap::Args, Clone)]
pub struct ClusterArgs {
    /// The Redis URL (redis://host:port/).
    #[arg(long, env = "STAGECRAFT_REDIS")]
    redis: String,
    /// The shared blob store every worker reaches: a folder (local, NFS, …), `file:///path`, or
    /// `s3://bucket/optional/prefix` (configured by AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP, …).
    #[arg(long, env = "STAGECRAFT_BLOBS")]
    blobs: String,
    /// The largest blob stored or read, in bytes (default: the runtime's default output quota).
    #[arg(long, env = "STAGECRAFT_BLOB_MAX_BYTES", default_value_t = stagecraft_orchestrator::blobs::DEFAULT_MAX_BYTES)]
    blob_max_bytes: u64,
    /// Seconds a lease lasts without renewal before the job is reclaimed.
    #[arg(long, default_value_t = 10)]
    lease_secs: u64,
    /// Leases that may run out before a job goes to the dead letters.
    #[arg(long, default_value_t = 3)]
    max_deliveries: u32,
}

impl ClusterArgs {
    async fn queue(&self) -> anyhow::Result<Queue> {
        let config = QueueConfig {
            lease: Duration::from_secs(self.lease_secs.max(1)),
            max_deliveries: self.max_deliveries.max(1),
            ..QueueConfig::default()
        };
        Queue::connect(&self.redis, config).await.with_context(|| format!("connecting to {}", self.redis))
    }

    fn blobs(&self) -> anyhow::Result<BlobStore> {
        Ok(BlobStore::open(&self.blobs)?.with_max_bytes(self.blob_max_bytes))
    }
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Jobs run at once.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// The worker's name in the cluster (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// Seconds jobs in hand may take to finish on SIGTERM before they are handed back.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
}

#[derive(Serialize, Deserialize)]
struct InputRef {
    name: String,
    media_type: String,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    pipeline: String,
    file: String,
    input: Option<String>,
    inputs: Vec<InputRef>,
}

pub async fn worker(host: &HostArgs, args: WorkerArgs) -> anyhow::Result<()> {
    let queue = args.cluster.queue().await?;
    let blobs = args.cluster.blobs()?;
    let runtime = Arc::new(host.runtime()?);
    let orchestrator = Orchestrator::new(runtime, Scheduler::new(host.scheduler()?), None).with_reuse(host.reuse()?);
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match &mut term { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        eprintln!("draining: no new jobs; finishing or handing back those in hand");
        on_signal.cancel();
    });
    let config =
        WorkerConfig { name: name.clone(), concurrency: args.slots, drain: Duration::from_secs(args.drain_secs) };
    eprintln!("worker {name} on {} ({} slots, blobs in {blobs})", args.cluster.redis, args.slots);
    let counts = Arc::new(WorkerCounts::default());
    let handler = move |job: Job| {
        let orchestrator = orchestrator.clone();
        let blobs = blobs.clone();
        async move { run_job(&orchestrator, &blobs, job).await }
    };
    worker::run(queue, config, handler, shutdown, counts.clone()).await?;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "worker {name} stopped: {} jobs committed, {} refused, {} lost, {} handed back",
        n(&counts.committed),
        n(&counts.refused),
        n(&counts.lost),
        n(&counts.handed_back)
    );
    Ok(())
}

fn failed(error: String) -> Finished {
    Finished { outcome: Outcome::Failed, result: json!({ "error": error }).to_string(), error: Some(error) }
}

/// One pipeline job: inputs from the blob store, the run with its events
/// forwarded to the job's stream, artifacts back into the blob store.
async fn run_job(orchestrator: &Orchestrator, blobs: &BlobStore, job: Job) -> Finished {
    let payload: Payload = match serde_json::from_str(job.payload()) {
        Ok(p) => p,
        Err(e) => return failed(format!("the job's payload is not a pipeline job: {e}")),
    };
    let mut files = Vec::new();
    for input in &payload.inputs {
        match blobs.get(&input.sha256).await {
            Ok(Some(data)) => files.push(Arc::new(Artifact::new(&input.name, &input.media_type, data))),
            Ok(None) => return failed(format!("input {} is missing from the blob store", input.name)),
            Err(e) => return failed(format!("reading input {}: {e:#}", input.name)),
        }
    }
    let pipeline = match orchestrator.load_pipeline(&payload.pipeline, &payload.file) {
        Ok(p) => p,
        Err(d) => return failed(format!("not a valid pipeline here: {d}")),
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
    let options = RunOptions { run_id: job.id().to_owned(), ..RunOptions::default() };
    let outcome =
        orchestrator.run(&pipeline, RunInput { text: payload.input.clone(), files }, options, Some(observer)).await;
    let _ = forwarder.await;
    let mut report = outcome.report.to_json();
    if let Some(steps) = report["steps"].as_array_mut() {
        for step in steps {
            let name = step["name"].as_str().unwrap_or_default().to_owned();
            let Some(output) = outcome.outputs.get(&name) else { continue };
            let mut links = Vec::new();
            for (i, artifact) in output.artifacts.iter().enumerate() {
                // The runner already hashed each artifact (its sha256 is in
                // the step's report): store under it instead of hashing again,
                // as the server's jobs do.
                let stored = match step["execution"]["artifacts"][i]["sha256"].as_str() {
                    Some(known) => blobs.put_known(known, &artifact.data).await.map(|()| known.to_owned()),
                    None => blobs.put(&artifact.data).await,
                };
                match stored {
                    Ok(digest) => links.push(json!({
                        "name": artifact.name, "media_type": artifact.media_type,
                        "bytes": artifact.data.len(), "sha256": digest,
                    })),
                    Err(e) => return failed(format!("storing an artifact: {e:#}")),
                }
            }
            step["artifacts"] = Value::Array(links);
        }
    }
    let (outcome_kind, error) = match outcome.report.status {
        RunStatus::Succeeded => (Outcome::Succeeded, None),
        status => {
            let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_owned));
            (Outcome::Failed, Some(format!("the run ended {}", status.unwrap_or_default())))
        }
    };
    Finished { outcome: outcome_kind, result: report.to_string(), error }
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The pipeline file (YAML or JSON).
    pipeline: PathBuf,
    /// Text input, reachable in params as `{{input}}`.
    #[arg(long, short = 'i')]
    input: Option<String>,
    /// Input files (repeatable), put in the blob store.
    #[arg(long = "input-file", short = 'f')]
    input_files: Vec<PathBuf>,
    /// The job's id (default: a fresh one).
    #[arg(long)]
    id: Option<String>,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    priority: String,
    /// Follow the job's events on stderr until it ends, then print its record.
    #[arg(long)]
    wait: bool,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let band = match args.priority.as_str() {
        "high" => Band::High,
        "normal" => Band::Normal,
        "low" => Band::Low,
        other => anyhow::bail!("unknown priority {other:?}: high, normal or low"),
    };
    let pipeline = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline {}", args.pipeline.display()))?;
    let blobs = args.cluster.blobs()?;
    let mut inputs = Vec::new();
    for file in crate::host::read_inputs(&args.input_files)? {
        let sha256 = blobs.put(&file.data).await?;
        inputs.push(InputRef { name: file.name, media_type: file.media_type, sha256 });
    }
    let payload = Payload { pipeline, file: args.pipeline.display().to_string(), input: args.input.clone(), inputs };
    let id = args.id.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("job-{nanos:x}-{}", std::process::id())
    });
    let queue = args.cluster.queue().await?;
    let queued = queue.enqueue(&id, band, &serde_json::to_string(&payload)?).await?;
    eprintln!("accepted {id} ({queued} queued)");
    println!("{id}");
    if !args.wait {
        return Ok(());
    }
    let mut reader = queue.event_reader(Duration::from_secs(2)).await?;
    let mut after = "0".to_owned();
    loop {
        for (position, event) in reader.next(&id, &after).await? {
            eprintln!("{event}");
            after = position;
        }
        let Some(record) = queue.job(&id).await? else { anyhow::bail!("job {id} is gone from Redis") };
        if record.is_final() {
            // The events that came with the end.
            for (_, event) in queue.events(&id, &after).await? {
                eprintln!("{event}");
            }
            println!("{}", serde_json::to_string_pretty(&record)?);
            if record.state != "succeeded" {
                anyhow::bail!("job {id} ended {}", record.state);
            }
            return Ok(());
        }
    }
}
