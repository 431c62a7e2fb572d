//! The scale-out roles on the Redis queue ([`stagecraft_cluster`]):
//! `stagecraft worker` runs pipeline jobs pulled from Redis; `stagecraft
//! submit` puts one there (inputs into the shared blob store) and can
//! follow it to the end.
//!
//! A job's payload is a [`JobSpec`] as JSON: `{"pipeline": YAML, "file":
//! name, "input": text or null, "inputs": [{"name", "media_type",
//! "sha256"}]}`, each input already in the blob store under its sha256.
//! The committed result is the run report, whose steps list their
//! artifacts by sha256 in the same store. `stagecraft serve --redis`
//! accepts the same jobs over HTTP and its workers run the same function
//! ([`stagecraft_server::cluster::run_pipeline_job`]).

use crate::host::HostArgs;
use anyhow::Context;
use stagecraft_cluster::worker::{WorkerConfig, WorkerCounts};
use stagecraft_cluster::{Band, Queue, QueueConfig};
use stagecraft_orchestrator::{BlobStore, JobInput, JobSpec, Orchestrator, ResultCache};
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
    fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            lease: Duration::from_secs(self.lease_secs.max(1)),
            max_deliveries: self.max_deliveries.max(1),
            ..QueueConfig::default()
        }
    }

    async fn queue(&self) -> anyhow::Result<Queue> {
        Queue::connect(&self.redis, self.queue_config()).await.with_context(|| format!("connecting to {}", self.redis))
    }

    fn blobs(&self) -> anyhow::Result<BlobStore> {
        Ok(BlobStore::open(&self.blobs)?.with_max_bytes(self.blob_max_bytes))
    }
}

/// This process's name in the cluster: the host's name and the process id.
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
    format!("{}-{}", host.trim(), std::process::id())
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
    /// Run every step, reusing no result (by default results are shared by
    /// the cluster: manifests in Redis, artifacts in the blob store).
    #[arg(long)]
    no_cache: bool,
}

pub async fn worker(host: &HostArgs, args: WorkerArgs) -> anyhow::Result<()> {
    let queue = args.cluster.queue().await?;
    let blobs = args.cluster.blobs()?;
    let runtime = Arc::new(host.runtime()?);
    let cache = (!args.no_cache).then(|| {
        ResultCache::shared(blobs.clone(), Arc::new(stagecraft_server::cluster::RedisManifests(queue.clone())))
    });
    let orchestrator =
        Orchestrator::new(runtime.clone(), Scheduler::new(host.scheduler()?), cache).with_reuse(host.reuse()?);
    let name = args.name.clone().unwrap_or_else(default_worker_name);
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
    // Run the component versions the cluster runs (uploads and rollbacks
    // on any API process reach this worker as they happen).
    stagecraft_server::cluster::apply_stages(&runtime, &blobs, &queue, None).await;
    let follow = tokio::spawn(stagecraft_server::cluster::follow_stages(
        runtime,
        blobs.clone(),
        queue.clone(),
        shutdown.clone(),
    ));
    let counts = Arc::new(WorkerCounts::default());
    stagecraft_server::cluster::run_worker(orchestrator, blobs, queue, config, shutdown, counts.clone()).await?;
    let _ = follow.await;
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
        inputs.push(JobInput { name: file.name, media_type: file.media_type, sha256 });
    }
    let payload = JobSpec { pipeline, file: args.pipeline.display().to_string(), input: args.input.clone(), inputs };
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
