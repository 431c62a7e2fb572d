//! What `stagecraft serve` is configured with: where it listens, where its
//! durable store lives, the admin token, body limits and the scheduler.

use stagecraft_scheduler::SchedulerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone)]
pub struct ServerConfig {
    /// Address to bind (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Folder for the job store (`jobs.sqlite3`), blobs and the result cache.
    pub home: PathBuf,
    /// Bearer token for the admin routes; None turns them off (404).
    pub admin_token: Option<String>,
    /// Largest request body accepted (413 past it, naming the limit). 64
    /// MiB: an invocation's or a pipeline run's input files travel in the
    /// body (base64 in JSON); nothing else needs more than a few KiB.
    pub max_body_bytes: usize,
    /// Largest component upload accepted on `PUT /v1/stages/{name}`.
    pub max_component_bytes: usize,
    /// The scheduler every invocation and pipeline step goes through.
    pub scheduler: SchedulerConfig,
    /// Seconds sent in `Retry-After` with a 429.
    pub retry_after_secs: u64,
    /// Use the result cache for pipeline steps.
    pub result_cache: bool,
    /// Pipeline jobs running at once; later ones wait, `queued`.
    pub max_running_jobs: usize,
    /// The plugins folders to watch for new or changed components.
    pub watch_dirs: Vec<PathBuf>,
    /// How often the plugins folders are polled.
    pub watch_interval: std::time::Duration,
    /// Memory for the artifacts of recent synchronous invocations, served
    /// from there while they are written to disk in the background.
    pub recent_artifact_bytes: usize,
    /// Memory for answers of synchronous invocations, so the same version
    /// on the same input is answered without running (0: off).
    pub invoke_cache_bytes: usize,
    /// Size, nesting, node and step limits for a pipeline sent to
    /// `POST /v1/pipelines/run` (400 `invalid_pipeline` past one, naming
    /// it). Defaults: [`stagecraft_pipeline::SourceLimits::default`] (1 MiB, 64
    /// levels, 200,000 values, 1000 steps), which every pipeline load also
    /// applies, so these can only be lowered here.
    pub pipeline_limits: stagecraft_pipeline::SourceLimits,
    /// How many finished jobs and artifact records, and how many bytes of
    /// blobs and cached results, the server keeps (see [`crate::retention`]).
    pub retention: crate::retention::Retention,
    /// The operators' per-stage rules for reusing results (`--reuse`).
    pub reuse: stagecraft_orchestrator::ReusePolicy,
    /// Where blobs (inputs, artifacts) live: a folder, `file:///path` or
    /// `s3://bucket/prefix` (see [`stagecraft_orchestrator::BlobStore::open`]);
    /// None: `home/blobs`. In a cluster, the store every worker and API
    /// process reaches.
    pub blobs: Option<String>,
    /// `serve --redis`: pipeline jobs on the cluster's queue instead of
    /// this process's SQLite store (see [`crate::cluster`]).
    pub cluster: Option<ClusterConfig>,
}

/// How `serve --redis` joins the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The Redis URL.
    pub redis: String,
    /// The queue's settings (every process of a cluster agrees on them).
    pub queue: stagecraft_cluster::QueueConfig,
    /// Pipeline jobs this process also runs at once as a worker (0: it only
    /// serves the API).
    pub workers: usize,
    /// This process's worker name in the cluster.
    pub worker_name: String,
    /// On shutdown, how long jobs in hand may take before they are handed back.
    pub drain: std::time::Duration,
    /// Callers that may wait on jobs at once on this API process (SSE
    /// subscribers and invocations sent to the workers): each holds a Redis
    /// connection while it waits. Past it, 503 with `Retry-After`.
    pub max_watchers: usize,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, home: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            home: home.into(),
            admin_token: None,
            max_body_bytes: 64 << 20,
            max_component_bytes: 256 << 20,
            scheduler: SchedulerConfig::default(),
            retry_after_secs: 1,
            result_cache: true,
            max_running_jobs: 4,
            watch_dirs: Vec::new(),
            watch_interval: std::time::Duration::from_secs(1),
            recent_artifact_bytes: 64 << 20,
            invoke_cache_bytes: 64 << 20,
            pipeline_limits: stagecraft_pipeline::SourceLimits::default(),
            retention: crate::retention::Retention::default(),
            reuse: stagecraft_orchestrator::ReusePolicy::default(),
            blobs: None,
            cluster: None,
        }
    }
}
