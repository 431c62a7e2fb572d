//! Bounded disk for a server that runs for months: finished jobs past the
//! newest [`Retention::keep_jobs`] are forgotten, artifact records past the
//! newest [`Retention::keep_artifacts`] too, and the blob store plus the
//! result cache are held under [`Retention::store_bytes`] by removing the
//! files written longest ago. A sweep runs every [`Retention::interval`].
//!
//! What is removed is history, never work: queued and running jobs are
//! never pruned, the inputs of unfinished jobs are never evicted, and no
//! file younger than [`Retention::min_age`] is touched (a job may be writing it). An
//! artifact whose bytes were evicted answers 404; a result-cache entry
//! whose blob is gone is a miss, and the step runs again.

use crate::AppState;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How much history the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished jobs kept (report, events, inputs list), newest first.
    /// 10,000: a few days of a busy deployment's history at a few KiB to
    /// 4 MiB each (the event log's bound), a few GiB at worst.
    pub keep_jobs: usize,
    /// Artifact records kept (name, media type, and the bytes of small
    /// outputs of synchronous invocations, at most 64 KiB each): 100,000.
    pub keep_artifacts: usize,
    /// Bytes of blobs and result-cache files kept: 10 GiB.
    pub store_bytes: u64,
    /// Time between sweeps: 30 s.
    pub interval: Duration,
    /// Files written this recently are never evicted (a job may still be
    /// writing or about to read them): 60 s.
    pub min_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_jobs: 10_000,
            keep_artifacts: 100_000,
            store_bytes: 10 << 30,
            interval: Duration::from_secs(30),
            min_age: Duration::from_secs(60),
        }
    }
}

/// What one sweep removed, and what it kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub jobs_removed: usize,
    pub artifacts_removed: usize,
    pub files_removed: usize,
    pub bytes_removed: u64,
    /// Bytes of blobs and cache files left.
    pub bytes_kept: u64,
}

/// The folders under the server's home held to `store_bytes` (the blob
/// store is always a folder there: an S3 bucket expires its objects by its
/// lifecycle rule).
fn store_dirs(app: &AppState) -> Vec<PathBuf> {
    app.jobs.blobs.root().map(Path::to_path_buf).into_iter().chain([app.config.home.join("results")]).collect()
}

/// One sweep, now (blocking: call it off the async threads).
pub fn sweep(app: &AppState) -> anyhow::Result<SweepReport> {
    let retention = app.config.retention;
    let jobs_removed = app.jobs.store.prune_jobs(retention.keep_jobs)?;
    let artifacts_removed = app.jobs.store.prune_artifacts(retention.keep_artifacts)?;
    // The inputs of queued and running jobs must survive until they run.
    let protected: HashSet<String> =
        app.jobs.store.unfinished()?.into_iter().flat_map(|job| job.inputs.into_iter().map(|i| i.digest)).collect();
    let trimmed = trim_to_budget(&store_dirs(app), retention.store_bytes, retention.min_age, &protected);
    let report = SweepReport { jobs_removed, artifacts_removed, ..trimmed };
    if report.jobs_removed + report.artifacts_removed + report.files_removed > 0 {
        tracing::info!(?report, "retention sweep");
    }
    Ok(report)
}

/// Sweeps every `interval` until `stop`.
pub fn spawn(app: crate::App, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(app.config.retention.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let app = app.clone();
            match tokio::task::spawn_blocking(move || sweep(&app)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("retention sweep failed: {e:#}"),
                Err(e) => tracing::warn!("retention sweep panicked: {e}"),
            }
        }
    });
}

struct StoredFile {
    path: PathBuf,
    bytes: u64,
    written: SystemTime,
}

/// Removes the files written longest ago under `dirs` until what is left
/// fits in nine tenths of `budget` (so that a sweep is not needed after
/// every write); files named in `protected`, younger than `min_age` or
/// still being written (`.tmp*`) stay.
fn trim_to_budget(dirs: &[PathBuf], budget: u64, min_age: Duration, protected: &HashSet<String>) -> SweepReport {
    let now = SystemTime::now();
    let mut files = Vec::new();
    for dir in dirs {
        collect_files(dir, &mut files);
    }
    let mut kept: u64 = files.iter().map(|f| f.bytes).sum();
    let mut report = SweepReport::default();
    if kept > budget {
        let target = budget / 10 * 9;
        files.sort_by_key(|f| f.written);
        for file in files {
            if kept <= target {
                break;
            }
            let young = now.duration_since(file.written).unwrap_or_default() < min_age;
            let name = file.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if young || name.starts_with(".tmp") || protected.contains(name) {
                continue;
            }
            if std::fs::remove_file(&file.path).is_ok() {
                kept -= file.bytes;
                report.files_removed += 1;
                report.bytes_removed += file.bytes;
            }
        }
    }
    report.bytes_kept = kept;
    report
}

/// Every regular file under `dir` (blobs sit two levels down), iteratively.
fn collect_files(dir: &Path, out: &mut Vec<StoredFile>) {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                let written = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(StoredFile { path: entry.path(), bytes: disk_bytes(&meta), written });
            }
        }
    }
}

/// What a file takes on disk: whole blocks (a 200-byte manifest holds 4 KiB).
#[cfg(unix)]
fn disk_bytes(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

#[cfg(not(unix))]
fn disk_bytes(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, bytes: usize, age: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; bytes]).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn the_oldest_files_go_first_and_young_protected_or_partial_ones_stay() {
        let home = tempfile::tempdir().unwrap();
        let shard = home.path().join("ab");
        std::fs::create_dir_all(&shard).unwrap();
        let hour = Duration::from_secs(3600);
        let oldest = file(&shard, "oldest", 400, hour * 5);
        let input = file(&shard, "input-of-a-queued-job", 400, hour * 4);
        let partial = file(&shard, ".tmpXYZ", 400, hour * 3);
        let older = file(&shard, "older", 400, hour * 2);
        let newer = file(&shard, "newer", 400, hour);
        let young = file(&shard, "young", 400, Duration::ZERO);
        let protected = HashSet::from(["input-of-a-queued-job".to_owned()]);
        // Six files of one block each against a budget of five: down to 4.5
        // blocks, so the two oldest that may go, go.
        let block = disk_bytes(&std::fs::metadata(&oldest).unwrap());
        let dirs = [home.path().to_path_buf()];
        let report = trim_to_budget(&dirs, 5 * block, Duration::from_secs(60), &protected);
        assert!(!oldest.exists() && !older.exists());
        assert!(newer.exists() && input.exists() && partial.exists() && young.exists());
        assert_eq!((report.files_removed, report.bytes_removed, report.bytes_kept), (2, 2 * block, 4 * block));
        // Under budget: nothing moves.
        let again = trim_to_budget(&dirs, 5 * block, Duration::from_secs(60), &protected);
        assert_eq!(again.files_removed, 0);
    }
}
