//! `stagecraft serve`: the HTTP service (see the stagecraft-server crate);
//! the plugins folders are watched, and a changed component is installed.

use crate::host::HostArgs;
use anyhow::Context;
use stagecraft_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Environment variable holding the admin bearer token; without one the
    /// admin routes (upload, rollback) are off.
    #[arg(long, value_name = "VAR")]
    admin_token_env: Option<String>,
    /// Largest request body, in MiB (413 past it).
    #[arg(long, default_value_t = 64)]
    max_body_mb: usize,
    /// Tasks allowed to wait for a slot before requests get 429.
    #[arg(long)]
    max_queue: Option<usize>,
    /// The same as the global `--max-in-flight` (kept for old scripts).
    #[arg(long, hide = true)]
    max_workers: Option<usize>,
    /// Pipeline jobs running at once (later ones wait, queued).
    #[arg(long, default_value_t = 4)]
    max_jobs: usize,
    /// Memory for answers of synchronous invocations, in MiB: invoking the
    /// same version on the same input again runs nothing (0 turns it off;
    /// a caller opts out with `Cache-Control: no-cache` or `no-store`).
    #[arg(long, default_value_t = 64)]
    invoke_cache_mb: usize,
    /// Finished jobs kept (report and events); older ones are forgotten.
    #[arg(long, default_value_t = 10_000)]
    keep_jobs: usize,
    /// Artifact records kept (name, media type, small outputs' bytes).
    #[arg(long, default_value_t = 100_000)]
    keep_artifacts: usize,
    /// Disk for stored artifacts and cached results, in MiB; the files
    /// written longest ago are removed past it.
    #[arg(long, default_value_t = 10_240)]
    store_mb: u64,
    /// Run pipeline jobs on the cluster's queue in Redis (redis://host:port/)
    /// instead of this process's SQLite store: any number of API processes
    /// then serve the same jobs, and `stagecraft worker` processes run them.
    #[arg(long, env = "STAGECRAFT_REDIS")]
    redis: Option<String>,
    /// The blob store for inputs and artifacts: a folder, file:///path or
    /// s3://bucket/prefix (default: a folder under the server's home). With
    /// --redis, the store every worker reaches.
    #[arg(long, env = "STAGECRAFT_BLOBS")]
    blobs: Option<String>,
    /// With --redis: pipeline jobs this process also runs at once as a
    /// worker (0: it serves the API only). Default: --max-jobs.
    #[arg(long)]
    workers: Option<usize>,
    /// With --redis: most jobs queued across the cluster (429 past it).
    #[arg(long, default_value_t = 10_000)]
    max_queued: u64,
    /// With --redis: seconds a lease lasts without renewal before the job
    /// is reclaimed (every process of a cluster must agree).
    #[arg(long, default_value_t = 10)]
    lease_secs: u64,
    /// With --redis: hours a finished job's record and events stay in Redis.
    #[arg(long, default_value_t = 168)]
    keep_hours: u64,
    /// With --redis: callers that may wait on jobs at once here (SSE
    /// subscribers, invocations sent to workers); past it, 503.
    #[arg(long, default_value_t = 256)]
    max_watchers: usize,
}

pub async fn run(host: &HostArgs, args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(args.listen, host.home().join("server"));
    if let Some(var) = &args.admin_token_env {
        let token = std::env::var(var).with_context(|| format!("--admin-token-env: ${var} is not set"))?;
        anyhow::ensure!(!token.trim().is_empty(), "--admin-token-env: ${var} is empty");
        config.admin_token = Some(token.trim().to_owned());
    }
    config.max_body_bytes = args.max_body_mb << 20;
    config.invoke_cache_bytes = args.invoke_cache_mb << 20;
    let mut scheduler = host.scheduler()?;
    if let Some(n) = args.max_queue {
        scheduler.max_queue = n;
    }
    if let Some(n) = args.max_workers {
        scheduler.max_workers = n.max(1);
    }
    config.scheduler = scheduler;
    config.watch_dirs = host.plugin_dirs();
    config.max_running_jobs = args.max_jobs.max(1);
    config.reuse = host.reuse()?;
    config.retention.keep_jobs = args.keep_jobs;
    config.retention.keep_artifacts = args.keep_artifacts;
    config.retention.store_bytes = args.store_mb << 20;
    config.blobs = args.blobs.clone();
    if let Some(redis) = &args.redis {
        let queue = stagecraft_cluster::QueueConfig {
            lease: std::time::Duration::from_secs(args.lease_secs.max(1)),
            max_queued: args.max_queued.max(1),
            retention: std::time::Duration::from_secs(args.keep_hours.max(1) * 3600),
            ..stagecraft_cluster::QueueConfig::default()
        };
        config.cluster = Some(stagecraft_server::ClusterConfig {
            redis: redis.clone(),
            queue,
            workers: args.workers.unwrap_or(config.max_running_jobs),
            worker_name: super::cluster::default_worker_name(),
            drain: std::time::Duration::from_secs(30),
            max_watchers: args.max_watchers.max(1),
        });
    } else {
        anyhow::ensure!(
            args.workers.is_none(),
            "--workers needs --redis (without it, --max-jobs sets the jobs run at once)"
        );
    }
    let runtime = Arc::new(host.runtime()?);
    // Changed model files are reloaded in place (checked every 2 s).
    let _model_watch = runtime.models().map(|m| m.watch(std::time::Duration::from_secs(2)));
    let server = Server::start(config, runtime).await?;
    match &server.app.config.cluster {
        Some(c) => eprintln!(
            "stagecraft serving on http://{} with jobs on {} ({} worker slots here; Ctrl-C to stop)",
            server.addr, c.redis, c.workers
        ),
        None => eprintln!("stagecraft serving on http://{} (Ctrl-C to stop)", server.addr),
    }
    server.run_until_ctrl_c().await
}
