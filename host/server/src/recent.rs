//! Artifacts of synchronous invocations, off the request path: each answer's
//! artifacts are kept in memory (bounded by bytes, oldest dropped first),
//! so `GET /v1/artifacts/{digest}` serves them at once, and one background
//! task writes them to disk in batches: names and media types to SQLite,
//! small artifacts' bytes in the same rows, larger ones to the blob store. A synchronous invoke is not durable: a crash can lose
//! the links handed out in its last moments. Jobs do not come through here;
//! their artifacts are stored before the job is recorded as finished.

use crate::jobs::JobManager;
use crate::store::ArtifactMeta;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Artifacts waiting to be written, most.
const QUEUE: usize = 4096;
/// Artifacts written per SQLite transaction, most.
const BATCH: usize = 512;
/// How long the writer gathers artifacts after the first before it writes:
/// under load one transaction then carries hundreds of rows instead of a
/// handful, and the B-tree pages they share are written to the WAL once.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);
/// Artifacts up to this size are kept in their SQLite row (written with
/// the batch's one transaction); larger ones go to the blob store, where a
/// file per artifact is cheap next to its size.
const INLINE_MAX: usize = 64 << 10;

struct Entry {
    meta: ArtifactMeta,
    data: Bytes,
}

#[derive(Default)]
struct Kept {
    by_digest: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

pub struct RecentArtifacts {
    kept: Mutex<Kept>,
    max_bytes: usize,
    persist: mpsc::Sender<(ArtifactMeta, Bytes)>,
}

impl RecentArtifacts {
    /// Starts the background writer (on the current tokio runtime).
    pub fn start(jobs: Arc<JobManager>, max_bytes: usize) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<(ArtifactMeta, Bytes)>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let window_ends = tokio::time::Instant::now() + BATCH_WINDOW;
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(window_ends, rx.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        // The window is over, or the server is closing.
                        Ok(None) | Err(_) => break,
                    }
                }
                let jobs = jobs.clone();
                let written = async {
                    for (meta, data) in &batch {
                        if data.len() > INLINE_MAX {
                            jobs.blobs.put_known(&meta.digest, data).await?;
                        }
                    }
                    tokio::task::spawn_blocking(move || {
                        jobs.store.record_artifacts_with_data(
                            batch.iter().map(|(meta, data)| (meta, (data.len() <= INLINE_MAX).then_some(&data[..]))),
                        )
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("the artifact writer failed: {e}"))?
                }
                .await;
                if let Err(e) = written {
                    tracing::warn!("could not keep invocation artifacts: {e:#}");
                }
            }
        });
        Arc::new(Self { kept: Mutex::default(), max_bytes, persist: tx })
    }

    /// Keeps an artifact (already hashed) and queues it for the disk. An
    /// artifact already kept under the same name and type costs nothing.
    pub fn add(&self, meta: ArtifactMeta, data: Bytes) {
        {
            let mut kept = self.kept.lock().unwrap();
            if kept.by_digest.get(&meta.digest).is_some_and(|e| e.meta == meta) {
                return;
            }
            if data.len() <= self.max_bytes {
                if let Some(old) =
                    kept.by_digest.insert(meta.digest.clone(), Entry { meta: meta.clone(), data: data.clone() })
                {
                    kept.bytes -= old.data.len();
                } else {
                    kept.order.push_back(meta.digest.clone());
                }
                kept.bytes += data.len();
                while kept.bytes > self.max_bytes {
                    let Some(oldest) = kept.order.pop_front() else { break };
                    if let Some(e) = kept.by_digest.remove(&oldest) {
                        kept.bytes -= e.data.len();
                    }
                }
            }
        }
        // Full queue (the disk is behind): the artifact stays served from
        // memory while kept, but is not written.
        if self.persist.try_send((meta, data)).is_err() {
            tracing::debug!("artifact writer queue full; not persisting an invocation artifact");
        }
    }

    /// A kept artifact, if still in memory.
    pub fn get(&self, digest: &str) -> Option<(ArtifactMeta, Bytes)> {
        self.kept.lock().unwrap().by_digest.get(digest).map(|e| (e.meta.clone(), e.data.clone()))
    }
}
