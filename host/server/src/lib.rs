//! # stagecraft-server
//!
//! `stagecraft serve`: the HTTP service (axum on tokio). Callers invoke a
//! stage synchronously or run a pipeline as a durable job and watch it over
//! server-sent events; operators upload new component versions (compiled
//! and validated before they take traffic), roll back, and watch queues and
//! metrics.
//!
//! * [`config`]: what the server is configured with;
//! * [`routes`]: the handlers, by area;
//! * [`jobs`] and [`store`]: jobs, kept in SQLite so that an accepted job
//!   finishes even across a crash;
//! * [`cluster`]: with `--redis`, jobs on the cluster's queue instead, run
//!   by workers anywhere and watched from any API process;
//! * [`sse`]: job events as server-sent events;
//! * [`error`]: the one JSON error shape;
//! * [`components`]: uploaded component versions, kept across restarts;
//! * [`watch`]: the plugins folder, polled for changed components;
//! * [`invoke_cache`]: answers of synchronous invocations, kept in memory
//!   so a repeated invocation runs nothing;
//! * [`recent`]: artifacts of synchronous invocations, kept in memory and
//!   written to disk off the request path;
//! * [`reply`]: multipart answers and artifact names in headers;
//! * [`console`]: the operator console at `GET /` and its live status;
//! * [`metrics`] and [`openapi`].

pub mod cluster;
pub mod components;
pub mod config;
pub mod console;
pub mod error;
pub mod invoke_cache;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod recent;
pub mod reply;
pub mod retention;
pub mod routes;
pub mod sse;
pub mod store;
pub mod watch;

pub use config::{ClusterConfig, ServerConfig};

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use stagecraft_orchestrator::{BlobStore, Orchestrator, ResultCache};
use stagecraft_runtime::Runtime;
use stagecraft_scheduler::Scheduler;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything a handler needs.
pub struct AppState {
    pub config: ServerConfig,
    pub runtime: Arc<Runtime>,
    pub orchestrator: Orchestrator,
    pub jobs: Arc<jobs::JobManager>,
    pub metrics: Arc<metrics::Metrics>,
    pub uploads: components::UploadStore,
    pub recent: Arc<recent::RecentArtifacts>,
    /// Cancelled when the server stops: endless streams (the console's
    /// status) end on it so that a graceful shutdown does not wait forever.
    pub stopping: CancellationToken,
    pub invoke_cache: invoke_cache::InvokeCache,
    /// With `--redis`: the cluster's queue, which pipeline jobs go through.
    pub cluster: Option<Arc<cluster::ClusterJobs>>,
}

pub type App = Arc<AppState>;

/// The router with every route of [`openapi::ROUTES`].
pub fn router(app: App) -> Router {
    use routes::{admin, jobs, stages};
    let component_limit = DefaultBodyLimit::max(app.config.max_component_bytes);
    // Each body limit also travels as an extension, so a 413 names it.
    let component_limit_named = axum::Extension(routes::BodyLimit(app.config.max_component_bytes));
    let largest_limit = app.config.max_component_bytes.max(app.config.max_body_bytes);
    let drain_limit = routes::unread_body::DrainLimit(largest_limit as u64);
    Router::new()
        .route("/", get(console::page))
        .route("/console/{file}", get(console::file))
        .route("/v1/status/stream", get(console::status_stream))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/pipelines/validate", post(jobs::validate))
        .route("/v1/stages", get(stages::list))
        .route(
            "/v1/stages/{name}",
            axum::routing::put(admin::put_stage)
                .layer::<_, std::convert::Infallible>(component_limit)
                .layer::<_, std::convert::Infallible>(component_limit_named),
        )
        .route("/v1/stages/{name}/invoke", post(stages::invoke))
        .route("/v1/stages/{name}/rollback", post(admin::rollback))
        .route("/v1/artifacts/{digest}", get(stages::artifact))
        .route("/v1/models", get(stages::models))
        .route("/v1/pipelines/run", post(jobs::run))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/status/queue", get(admin::queue))
        .route("/v1/openapi.json", get(admin::openapi))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .fallback(|uri: axum::http::Uri| async move {
            error::ApiError::not_found("not_found", format!("no route for {}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(axum::Extension(routes::BodyLimit(app.config.max_body_bytes)))
        .route_layer(axum::middleware::from_fn_with_state(app.metrics.clone(), metrics::track))
        .layer(axum::middleware::from_fn_with_state(drain_limit, routes::unread_body::drain_unread_body))
        .with_state(app)
}

/// Connects to the cluster's queue and, unless told not to, runs a worker
/// in this process too (stopped and drained with the server).
async fn start_cluster(
    config: &ClusterConfig,
    queue: stagecraft_cluster::Queue,
    runtime: &Arc<Runtime>,
    blobs: &BlobStore,
    orchestrator: &Orchestrator,
    stop: &CancellationToken,
) -> anyhow::Result<(cluster::ClusterJobs, Option<tokio::task::JoinHandle<()>>)> {
    // Run the versions the cluster runs, and follow its uploads and rollbacks.
    cluster::apply_stages(runtime, blobs, &queue, None).await;
    tokio::spawn(cluster::follow_stages(runtime.clone(), blobs.clone(), queue.clone(), stop.clone()));
    let mut running = None;
    if config.workers > 0 {
        let worker = stagecraft_cluster::WorkerConfig {
            name: config.worker_name.clone(),
            concurrency: config.workers,
            drain: config.drain,
        };
        let (orchestrator, blobs, queue, stop) = (orchestrator.clone(), blobs.clone(), queue.clone(), stop.clone());
        running = Some(tokio::spawn(async move {
            let counts = Arc::new(stagecraft_cluster::WorkerCounts::default());
            if let Err(e) = cluster::run_worker(orchestrator, blobs, queue, worker, stop, counts).await {
                tracing::error!("the in-process worker stopped: {e}");
            }
        }));
    }
    Ok((cluster::ClusterJobs::new(queue, blobs.clone(), config), running))
}

/// A running server.
pub struct Server {
    pub app: App,
    /// Where it listens (the real port when the config said 0).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The in-process cluster worker, drained on shutdown.
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens the store under `config.home`, resumes the jobs an earlier
    /// process left unfinished, binds and starts serving.
    pub async fn start(config: ServerConfig, runtime: Arc<Runtime>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.home).with_context(|| format!("creating {}", config.home.display()))?;
        let uploads = components::UploadStore::new(config.home.join("components"));
        let restored = uploads.restore(&runtime)?;
        if restored > 0 {
            tracing::info!("restored {restored} uploaded component version(s)");
        }
        let store = store::JobStore::open(&config.home.join("jobs.sqlite3"))?;
        let blobs = match &config.blobs {
            Some(location) => BlobStore::open(location).with_context(|| format!("the blob store {location}"))?,
            None => BlobStore::new(config.home.join("blobs")),
        };
        let queue = match &config.cluster {
            Some(c) => Some(
                stagecraft_cluster::Queue::connect(&c.redis, c.queue.clone())
                    .await
                    .with_context(|| format!("connecting to {}", c.redis))?,
            ),
            None => None,
        };
        // In a cluster, results any worker computed answer every worker.
        let cache = config.result_cache.then(|| match &queue {
            Some(queue) => ResultCache::shared(blobs.clone(), Arc::new(cluster::RedisManifests(queue.clone()))),
            None => ResultCache::new(config.home.join("results")),
        });
        let orchestrator = Orchestrator::new(runtime.clone(), Scheduler::new(config.scheduler.clone()), cache)
            .with_reuse(config.reuse.clone());
        let metrics = Arc::new(metrics::Metrics::default());
        let jobs = Arc::new(jobs::JobManager::new(
            store,
            blobs,
            orchestrator.clone(),
            metrics.clone(),
            config.max_running_jobs,
        ));
        let stop = CancellationToken::new();
        let cluster = match (&config.cluster, queue) {
            (None, _) | (_, None) => {
                let resumed = jobs.resume()?;
                if resumed > 0 {
                    tracing::info!("resumed {resumed} unfinished job(s)");
                }
                None
            }
            (Some(c), Some(queue)) => Some(start_cluster(c, queue, &runtime, &jobs.blobs, &orchestrator, &stop).await?),
        };
        let (cluster, worker) = match cluster {
            Some((jobs, worker)) => (Some(Arc::new(jobs)), worker),
            None => (None, None),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let recent = recent::RecentArtifacts::start(jobs.clone(), config.recent_artifact_bytes);
        let invoke_cache = invoke_cache::InvokeCache::new(config.invoke_cache_bytes);
        let app = Arc::new(AppState {
            config,
            runtime,
            orchestrator,
            jobs,
            metrics,
            uploads,
            recent,
            invoke_cache,
            stopping: stop.clone(),
            cluster,
        });
        let service = router(app.clone());
        retention::spawn(app.clone(), stop.clone());
        for dir in app.config.watch_dirs.clone() {
            watch::spawn(app.runtime.clone(), dir, app.config.watch_interval, stop.clone());
        }
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, service).with_graceful_shutdown(async move { stopped.cancelled().await }).await
        });
        Ok(Self { app, addr, stop, task, worker })
    }

    /// Stops accepting connections and waits for open requests to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("the server task")?.context("serving")?;
        if let Some(worker) = self.worker {
            worker.await.context("the worker task")?;
        }
        Ok(())
    }

    /// Serves until Ctrl-C (or SIGTERM), then shuts down gracefully. Jobs
    /// still running stay `running` in the store and resume at the next start.
    pub async fn run_until_ctrl_c(self) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let term = async move {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        self.task.await.context("the server task")?.context("serving")?;
        if let Some(worker) = self.worker {
            // Jobs in hand finish or are handed back to the queue.
            worker.await.context("the worker task")?;
        }
        Ok(())
    }
}
