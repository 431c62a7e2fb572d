//! Runtime configuration: where things live and the default sandbox limits.

use crate::http::HttpGrant;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Resource limits for one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationLimits {
    /// Upper bound on the instance's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline for one call, enforced by epoch interruption.
    pub timeout: Duration,
}

impl Default for InvocationLimits {
    fn default() -> Self {
        Self { memory_bytes: 512 << 20, timeout: Duration::from_secs(60) }
    }
}

/// Per-invocation quotas on what a stage may make the host hold: disk in
/// its scratch directory, output, messages, logs and progress. Each breach
/// ends the call with [`InvokeError::Quota`](crate::InvokeError::Quota)
/// naming the limit (the stage's fault, never retried), except logs and
/// progress, whose excess is dropped (and counted) instead.
///
/// The defaults are sized from [`InvocationLimits::default`]: a stage holds at most
/// 512 MiB of memory, so an honest stage cannot build an output, or a set
/// of temporary files, much larger than half of that; anything past it is a
/// bug or an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Bytes a stage may write into `/scratch` in one call (every write and
    /// every size increase counts; deleting does not give them back, so a
    /// write-delete loop cannot churn the disk forever). 256 MiB: half the
    /// default memory limit, room for any temporary copy of an input.
    pub scratch_bytes: u64,
    /// Files, directories and links a stage may create in `/scratch` in one
    /// call. 1000: temporary files come in handfuls, 200,000 inodes do not.
    pub scratch_files: u64,
    /// Total bytes of one call's output artifacts (and the most the guest
    /// may pass to the host in any one call). 256 MiB: as for `scratch_bytes`.
    pub output_bytes: u64,
    /// Artifacts in one output. 256: a page of thumbnails, not a file system.
    pub artifacts: u64,
    /// Bytes of the output's metadata JSON. 1 MiB: metadata describes the
    /// artifacts; data belongs in an artifact.
    pub metadata_bytes: u64,
    /// Bytes of a stage's error message kept (the rest is cut, with a
    /// marker). 4 KiB: an error is read by a person, on one screen.
    pub error_bytes: usize,
    /// Bytes of one log line or progress message kept (cut with a marker).
    /// 4 KiB, for the same reason.
    pub log_line_bytes: usize,
    /// Log lines one call may send to the host's log and to callers; the
    /// rest are dropped and counted in one last line. 1000 lines of 4 KiB
    /// are at most 4 MiB per call.
    pub log_lines: u32,
    /// Log lines per second (a token bucket of this size, refilled at this
    /// rate) so that one stage cannot flood the log in a burst either. 100/s.
    pub log_lines_per_second: u32,
    /// Progress reports per second that reach callers and the job store;
    /// the reports in between are coalesced (the latest wins, and the last
    /// one always arrives). 4/s: what a progress bar can show.
    pub progress_per_second: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            scratch_bytes: 256 << 20,
            scratch_files: 1000,
            output_bytes: 256 << 20,
            artifacts: 256,
            metadata_bytes: 1 << 20,
            error_bytes: 4 << 10,
            log_line_bytes: 4 << 10,
            log_lines: 1000,
            log_lines_per_second: 100,
            progress_per_second: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// Parent of the per-invocation scratch directories.
    pub scratch_dir: PathBuf,
    /// Defaults for every invocation; callers may lower or raise per call
    /// (memory up to `max_memory_bytes`).
    pub limits: InvocationLimits,
    /// What one invocation may make the host hold (disk, output, logs).
    pub quotas: Quotas,
    /// Hard ceiling for any instance's memory (sizes the pooling allocator).
    pub max_memory_bytes: u64,
    /// Component instances that may exist at once (pooling allocator slots):
    /// at least the scheduler's in-flight limit, since a parked instance
    /// keeps its slot while it waits.
    pub max_instances: u32,
    /// Instances that may *compute* at once (see [`crate::capacity`]);
    /// default: the core count. Waiting instances hold no CPU slot.
    pub cpu_slots: usize,
    /// Whether waiting instances give their CPU slot back (the default) or
    /// hold it (the behaviour before CPU slots, for comparisons).
    pub park_policy: crate::capacity::ParkPolicy,
    /// How often the engine's epoch advances: the granularity of deadlines
    /// and of cooperative yields to the async executor.
    pub epoch_tick: Duration,
    /// Outgoing HTTP grants, by stage name (see [`crate::http`]). A stage
    /// not listed here has every `wasi:http` request refused.
    pub http: HashMap<String, HttpGrant>,
    /// The model repository behind the `inference` import (and the
    /// `segmentation` import's `model` option). `None`: every call gets
    /// `unavailable`, naming the missing repository.
    pub models: Option<Arc<stagecraft_inference::Models>>,
    /// Keep Cranelift's compiled functions in memory (up to this many bytes)
    /// and reuse them for any later component with the same function
    /// bodies: an edited Python or JavaScript stage is the same interpreter
    /// with a new snapshot, so its new version compiles in a fraction of the
    /// time. `None` (the default): every component compiles from scratch.
    /// `stagecraft dev` turns it on; see [`crate::engine`].
    pub function_cache_bytes: Option<usize>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let base = std::env::var_os("STAGECRAFT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("stagecraft"));
        Self {
            cache_dir: Some(base.join("cache")),
            scratch_dir: base.join("scratch"),
            limits: InvocationLimits::default(),
            quotas: Quotas::default(),
            max_memory_bytes: 2 << 30,
            // The scheduler's default in-flight limit (1000, like Spin's
            // pool) plus room for `describe` at load and direct callers.
            // Slots are virtual reservations until used.
            max_instances: 1024,
            cpu_slots: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            park_policy: crate::capacity::ParkPolicy::default(),
            epoch_tick: Duration::from_millis(5),
            http: HashMap::new(),
            models: None,
            function_cache_bytes: None,
        }
    }
}
