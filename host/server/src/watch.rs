//! Watches the plugins folder: a `*.wasm` file that appears or changes
//! (modification time or size) is installed like an upload, so it is
//! compiled and validated before it takes traffic; a bad one is logged
//! and the current version keeps serving. Polling, so it works the same
//! on every platform and file system.

use stagecraft_runtime::Runtime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

type Seen = HashMap<PathBuf, (SystemTime, u64)>;

fn scan(dir: &Path) -> Seen {
    let Ok(entries) = std::fs::read_dir(dir) else { return Seen::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((p, (meta.modified().ok()?, meta.len())))
        })
        .collect()
}

/// Polls `dir` every `interval` until `stop`; the files there now are taken
/// as already loaded.
pub fn spawn(runtime: Arc<Runtime>, dir: PathBuf, interval: Duration, stop: CancellationToken) {
    let mut seen = scan(&dir);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = scan(&dir);
            for (path, stamp) in &now {
                if seen.get(path) == Some(stamp) {
                    continue;
                }
                let runtime = runtime.clone();
                let file = path.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let bytes = std::fs::read(&file)?;
                    runtime.install_bytes(&bytes, &file.display().to_string())
                })
                .await;
                match result {
                    Ok(Ok(v)) => {
                        tracing::info!(file = %path.display(), stage = %v.info.name, digest = %v.digest, "installed a changed component")
                    }
                    Ok(Err(e)) => tracing::warn!(file = %path.display(), "changed component refused: {e:#}"),
                    Err(e) => tracing::warn!(file = %path.display(), "install task failed: {e}"),
                }
            }
            seen = now;
        }
    });
}
