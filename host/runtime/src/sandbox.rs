//! The per-invocation sandbox: the store's data (WASI context with no
//! ambient authority, `wasi:http` context with the stage's grant, resource
//! table, memory limiter, event sink) and the pool of scratch directories.
//!
//! A stage sees exactly one directory, `/scratch`, fresh and empty for
//! every invocation, opened through cap-std (so `..` and absolute paths
//! cannot leave it). No environment, no arguments, no sockets, no host
//! filesystem. Inputs arrive as bytes in the call, not as files. Outgoing
//! HTTP goes only where the host granted it ([`crate::http`]). What a
//! stage writes there counts against its scratch quota ([`crate::quota`]);
//! its stderr is kept (the tail) to explain a crash ([`crate::stderr`]).

use crate::config::Quotas;
use crate::invoke::EventSink;
use crate::quota::ScratchUsage;
use crate::stderr::StderrTail;
use crate::throttle::EventGate;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Where the scratch directory appears inside the guest.
pub const GUEST_SCRATCH: &str = "/scratch";

/// The data of one invocation's `Store`.
pub struct StoreState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) events: EventSink,
    pub(crate) http: WasiHttpCtx,
    /// Decides where this invocation's requests may go (refuse-all until
    /// the invocation sets the stage's grant).
    pub(crate) http_hooks: crate::http::StageHttpHooks,
    /// The runtime's model repository, for the `inference` import.
    pub(crate) models: Option<std::sync::Arc<stagecraft_inference::Models>>,
    /// Tells the invocation's CPU-slot wrapper what the instance waits on.
    pub(crate) meter: std::sync::Arc<crate::capacity::InvocationMeter>,
    /// What the stage wrote into `/scratch` so far, against its quota.
    pub(crate) scratch_usage: Arc<ScratchUsage>,
    /// The last bytes of the stage's stderr.
    pub(crate) stderr: StderrTail,
    /// The log and progress quotas.
    pub(crate) gate: EventGate,
}

impl StoreState {
    pub fn new(scratch: &Path, memory_limit: u64, quotas: &Quotas, events: EventSink) -> anyhow::Result<Self> {
        let stderr = StderrTail::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        wasi.preopened_dir(scratch, GUEST_SCRATCH, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .context("opening the scratch directory")?
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Ok(Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            http_hooks: crate::http::StageHttpHooks::denied(events.stage()),
            events,
            http: WasiHttpCtx::new(),
            models: None,
            meter: Default::default(),
            scratch_usage: Arc::new(ScratchUsage::new(quotas.scratch_bytes, quotas.scratch_files)),
            stderr,
            gate: EventGate::new(*quotas),
        })
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

/// Raised (as a trap) when a stage grows its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: growing to {requested} bytes, limit {limit}")]
pub struct MemoryLimitExceeded {
    pub requested: u64,
    pub limit: u64,
}

/// Caps linear memory growth, trapping with [`MemoryLimitExceeded`] so the
/// caller can tell a memory hog from any other crash.
///
/// Host memory a stage holds through resources it owns (`wasi:nn` tensors)
/// counts against the same limit, so a guest cannot park data on the host
/// beyond what it could hold itself.
pub struct MemoryLimiter {
    limit: u64,
    /// The largest linear memory granted so far.
    linear: u64,
    /// Bytes of host memory the guest's resources hold now.
    host: u64,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        Self { limit, linear: 0, host: 0 }
    }

    /// Charges `bytes` of guest-owned host memory, or says how far over the
    /// limit that would go.
    pub(crate) fn charge_host(&mut self, bytes: u64) -> Result<(), MemoryLimitExceeded> {
        let requested = self.linear.saturating_add(self.host).saturating_add(bytes);
        if requested > self.limit {
            return Err(MemoryLimitExceeded { requested, limit: self.limit });
        }
        self.host += bytes;
        Ok(())
    }

    /// The largest linear memory granted so far, in bytes.
    pub(crate) fn peak_linear(&self) -> u64 {
        self.linear
    }

    /// Returns what [`MemoryLimiter::charge_host`] took once the resource is gone.
    pub(crate) fn release_host(&mut self, bytes: u64) {
        self.host = self.host.saturating_sub(bytes);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = (desired as u64).saturating_add(self.host);
        if requested > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { requested, limit: self.limit }));
        }
        self.linear = self.linear.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Empty directories for invocations to scribble in. Creating and deleting
/// a directory per call costs more than the call itself, so empty ones are
/// reused; a directory a stage wrote into is deleted and never reused.
pub struct ScratchPool {
    /// Unique to this pool (several runtimes may share a process); removed on drop.
    root: tempfile::TempDir,
    free: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
}

impl ScratchPool {
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating scratch root {}", root.display()))?;
        let root = tempfile::Builder::new()
            .prefix("pool-")
            .tempdir_in(root)
            .with_context(|| format!("creating a scratch pool in {}", root.display()))?;
        Ok(Self { root, free: Mutex::new(Vec::new()), next: AtomicU64::new(0) })
    }

    pub fn acquire(&self) -> anyhow::Result<ScratchDir<'_>> {
        let reused = self.free.lock().unwrap().pop();
        let path = match reused {
            Some(p) => p,
            None => {
                let p = self.root.path().join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
                std::fs::create_dir(&p).with_context(|| format!("creating scratch dir {}", p.display()))?;
                p
            }
        };
        Ok(ScratchDir { pool: self, path: Some(path) })
    }
}

/// A scratch directory on loan; returned to the pool (or deleted) on drop.
pub struct ScratchDir<'a> {
    pool: &'a ScratchPool,
    path: Option<PathBuf>,
}

impl ScratchDir<'_> {
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("present until drop")
    }
}

impl Drop for ScratchDir<'_> {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        let empty = std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false);
        if empty {
            self.pool.free.lock().unwrap().push(path);
        } else if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), "cannot remove scratch dir: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dirs_are_reused_and_dirty_ones_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(tmp.path()).unwrap();
        let first = pool.acquire().unwrap().path().to_owned();
        let again = pool.acquire().unwrap();
        assert_eq!(again.path(), first, "an empty dir is reused");
        std::fs::write(again.path().join("x"), b"1").unwrap();
        drop(again);
        assert!(!first.exists(), "a dir with files is deleted");
        let fresh = pool.acquire().unwrap();
        assert_ne!(fresh.path(), first);
        assert_eq!(std::fs::read_dir(fresh.path()).unwrap().count(), 0);
    }
}
