//! `stagecraft dev DIR`: the plugin author's loop. Builds the project,
//! swaps it into a server, and again on every saved change; prints each
//! invocation of it. The server is a local one started here (with the
//! bundled stages of `--plugins`, so pipelines can mix them in) or, with
//! `--server`, a running `stagecraft serve` (its admin token in
//! `$STAGECRAFT_ADMIN_TOKEN`).

use crate::author::{toolchain, Project};
use crate::commands::push;
use crate::host::HostArgs;
use anyhow::Context;
use stagecraft_server::{Server, ServerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(clap::Args)]
pub struct DevArgs {
    /// The stage project (a folder with stagecraft.toml, or a Rust crate).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Push to this running server instead of starting a local one.
    #[arg(long)]
    server: Option<String>,
    /// Where the local server listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// How often the project's files are checked for changes.
const POLL: Duration = Duration::from_millis(250);

pub async fn run(host: &HostArgs, args: DevArgs) -> anyhow::Result<()> {
    let project = Project::open(&args.dir)?;
    let (base, token, _local) = match &args.server {
        Some(url) => {
            let token = std::env::var("STAGECRAFT_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .context("--server needs the server's admin token in $STAGECRAFT_ADMIN_TOKEN")?;
            (url.trim_end_matches('/').to_owned(), token.trim().to_owned(), None)
        }
        None => {
            let token = local_token();
            let server = start_local(host, args.listen, &token).await?;
            (format!("http://{}", server.addr), token, Some(server))
        }
    };
    println!("dev server on {base}; stage {} ({:?}) from {}", project.name, project.lang, project.dir.display());
    println!(
        "try it: curl -s -X POST '{base}/v1/stages/{}/invoke?params=%7B%7D' --data-binary @FILE -H 'content-type: image/png'",
        project.name
    );
    let out = project.dir.join("target/dev").join(format!("{}.wasm", project.name));
    let mut seen = snapshot(&project);
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        rebuild_and_swap(&project, &out, &base, &token).await;
        // Wait for a saved change, then for the files to settle.
        loop {
            tokio::select! {
                _ = &mut stop => {
                    println!("dev: stopped");
                    return Ok(());
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            let now = snapshot(&project);
            if now != seen {
                tokio::time::sleep(POLL).await;
                seen = snapshot(&project);
                break;
            }
        }
    }
}

/// One round: build, push, say how it went. A failed build keeps the
/// version that is live.
async fn rebuild_and_swap(project: &Project, out: &std::path::Path, base: &str, token: &str) {
    let started = Instant::now();
    let (p, o) = (project.clone(), out.to_owned());
    let built = match tokio::task::spawn_blocking(move || toolchain::build(&p, &o)).await {
        Ok(Ok(built)) => built,
        Ok(Err(e)) => {
            println!("dev: build failed, the previous version stays live: {}", crate::one_line(&e));
            return;
        }
        Err(e) => {
            println!("dev: the build task failed: {e}");
            return;
        }
    };
    let swap_started = Instant::now();
    match push::push(base, &project.name, &built.component, token).await {
        Ok(described) => println!(
            "dev: {} live: built in {:.1} s, swapped in {:.1} s, {:.1} s from the change",
            push::describe_line(&described).trim_start_matches("pushed ").trim_end_matches(": now active"),
            built.elapsed.as_secs_f64(),
            swap_started.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => println!("dev: the server refused the new build, the previous version stays live: {e:#}"),
    }
}

/// Modification times of the project's sources.
fn snapshot(project: &Project) -> BTreeMap<PathBuf, Option<SystemTime>> {
    project.sources().into_iter().map(|p| (p.clone(), std::fs::metadata(&p).and_then(|m| m.modified()).ok())).collect()
}

/// The dev server's budget for compiled functions: several times a Python
/// stage's whole compiled component (35 MB on disk).
const DEV_FUNCTION_CACHE_BYTES: usize = 256 << 20;

/// A local server with the plugins folders that exist (none is fine: the
/// project's stage is pushed into it), its state under `<home>/dev`.
async fn start_local(host: &HostArgs, listen: SocketAddr, token: &str) -> anyhow::Result<Server> {
    let mut config = ServerConfig::new(listen, host.home().join("dev"));
    config.admin_token = Some(token.to_owned());
    config.scheduler = host.scheduler()?;
    let dirs: Vec<PathBuf> = host.plugin_dirs().into_iter().filter(|d| d.is_dir()).collect();
    config.watch_dirs = dirs.clone();
    // Each save is a new component that shares most of its functions with
    // the last one (the same interpreter or crate graph): keep them.
    let runtime = Arc::new(host.runtime_from(&dirs, |c| c.function_cache_bytes = Some(DEV_FUNCTION_CACHE_BYTES))?);
    Server::start(config, runtime).await
}

/// A token for the local server's admin routes; it never leaves this process.
fn local_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|_| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
            format!("{:016x}", h.finish())
        })
        .collect()
}
