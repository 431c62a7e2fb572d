//! The stagecraft component runtime.
//!
//! Owns everything between "here are some `.wasm` files" and "this stage ran
//! on this input": the wasmtime engine and its epoch ticker ([`engine`]), the
//! on-disk cache of compiled components ([`cache`]), the registry of stage
//! versions with hot swap ([`registry`]), the per-invocation sandbox
//! ([`sandbox`]), the host services plugins import ([`host`], and the
//! standard `wasi:nn` in [`wasi_nn`]) and the invocation path itself
//! ([`invoke`]).
//!
//! The runtime knows nothing about queues, pipelines or HTTP: those layers
//! call [`Runtime::invoke`].

pub mod cache;
pub mod capacity;
pub mod config;
pub mod engine;
pub mod error;
pub mod host;
pub mod http;
pub mod invoke;
pub mod output;
pub mod quota;
pub mod registry;
pub mod sandbox;
pub mod stderr;
pub mod throttle;
pub mod types;
pub mod wasi_nn;

pub use capacity::{CapacityStatus, ParkPolicy, WaitKind};
pub use config::{InvocationLimits, Quotas, RuntimeConfig};
pub use error::InvokeError;
pub use http::HttpGrant;
pub use invoke::{InvokeOptions, StageEvent};
pub use quota::{QuotaExceeded, QuotaKind};
pub use registry::{Determinism, LoadFailure, LoadReport, StageVersion, DETERMINISTIC_KEYWORD};
pub use types::{Artifact, StageInfo, StageInput, StageOutput};

use std::path::Path;

/// The least an invocation is budgeted at: an instance's pooled slot keeps
/// about 1 MiB resident, plus its stack, tables and the host's copies of
/// its input and output.
pub const MIN_MEMORY_ESTIMATE: u64 = 4 << 20;
use std::sync::Arc;

/// A loaded set of stages, ready to invoke. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    engine: engine::StageEngine,
    cache: cache::CompiledCache,
    linker: wasmtime::component::Linker<sandbox::StoreState>,
    registry: registry::Registry,
    scratch: sandbox::ScratchPool,
    http: http::HttpPolicy,
    cpu: Arc<capacity::CpuSlots>,
    /// The largest linear memory seen per component digest (`describe` and
    /// every invocation): what the scheduler budgets an invocation at.
    memory_seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch ticker) and an empty registry.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = engine::StageEngine::new(&config)?;
        let cache = cache::CompiledCache::new(config.cache_dir.clone(), engine.engine())?;
        let scratch = sandbox::ScratchPool::new(&config.scratch_dir)?;
        let linker = registry::linker(engine.engine())?;
        let http = http::HttpPolicy::new(&config.http)?;
        let cpu = Arc::new(capacity::CpuSlots::new(config.cpu_slots, config.park_policy));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                engine,
                cache,
                linker,
                registry: registry::Registry::default(),
                scratch,
                http,
                cpu,
                memory_seen: Default::default(),
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads every `*.wasm` component in `dir`. Components that fail to
    /// compile or do not implement the `plugin` world are reported in
    /// [`LoadReport::failed`]; the others load regardless.
    pub fn load_dir(&self, dir: impl AsRef<Path>) -> LoadReport {
        registry::load_dir(self, dir.as_ref())
    }

    /// Compiles, validates and installs one component, making it the current
    /// version of the stage it describes itself as. In-flight invocations
    /// keep the version they started with.
    pub fn install_file(&self, path: impl AsRef<Path>) -> anyhow::Result<Arc<StageVersion>> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        self.install_bytes(&bytes, &path.display().to_string())
    }

    /// Like [`Runtime::install_file`], from bytes (an upload). `origin` names
    /// where they came from, for messages.
    pub fn install_bytes(&self, bytes: &[u8], origin: &str) -> anyhow::Result<Arc<StageVersion>> {
        registry::install(self, bytes, origin)
    }

    /// Compiles, validates and describes a component without installing it,
    /// so a caller can check what it is (its stage name) before it takes
    /// traffic; [`Runtime::activate`] then installs it.
    pub fn prepare_bytes(&self, bytes: &[u8], origin: &str) -> anyhow::Result<Arc<StageVersion>> {
        registry::prepare(self, bytes, origin)
    }

    /// Makes a version from [`Runtime::prepare_bytes`] current (as
    /// [`Runtime::install_bytes`] would have).
    pub fn activate(&self, version: Arc<StageVersion>) -> Arc<StageVersion> {
        self.inner.registry.swap_in(version)
    }

    /// Makes the previous version of `stage` current again.
    pub fn rollback(&self, stage: &str) -> Result<Arc<StageVersion>, InvokeError> {
        self.inner.registry.rollback(stage)
    }

    /// The current version of every stage, sorted by name.
    pub fn stages(&self) -> Vec<Arc<StageVersion>> {
        self.inner.registry.current_all()
    }

    /// The earlier versions of `stage` kept for rollback, newest first.
    pub fn previous_versions(&self, stage: &str) -> Vec<Arc<StageVersion>> {
        self.inner.registry.previous(stage)
    }

    /// The current version of one stage.
    pub fn stage(&self, name: &str) -> Option<Arc<StageVersion>> {
        self.inner.registry.current(name)
    }

    /// Runs `stage` once on `input` in a fresh, sandboxed instance.
    pub async fn invoke(
        &self,
        stage: &str,
        input: StageInput,
        options: InvokeOptions,
    ) -> Result<StageOutput, InvokeError> {
        let version = self.inner.registry.current(stage).ok_or_else(|| InvokeError::UnknownStage(stage.to_owned()))?;
        invoke::invoke(self, &version, input, options).await
    }

    /// Runs a specific version (used when a caller pinned one).
    pub async fn invoke_version(
        &self,
        version: &Arc<StageVersion>,
        input: StageInput,
        options: InvokeOptions,
    ) -> Result<StageOutput, InvokeError> {
        invoke::invoke(self, version, input, options).await
    }

    /// The model repository the `inference` import serves, if any.
    pub fn models(&self) -> Option<&Arc<stagecraft_inference::Models>> {
        self.inner.config.models.as_ref()
    }

    /// CPU slots in use, invocations queued for one, and instances parked
    /// by what they wait on (see [`capacity`]).
    pub fn capacity(&self) -> CapacityStatus {
        self.inner.cpu.status()
    }

    /// What an invocation of `version` is expected to hold in memory, for
    /// the scheduler's budget: the largest linear memory seen from this
    /// component (at `describe` and in every invocation so far), at least
    /// [`MIN_MEMORY_ESTIMATE`]; the per-call limit caps what it may really take.
    pub fn memory_estimate(&self, version: &StageVersion) -> u64 {
        let seen = self.inner.memory_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.get(&version.digest).copied().unwrap_or(0).max(MIN_MEMORY_ESTIMATE)
    }

    pub(crate) fn saw_memory(&self, digest: &str, bytes: u64) {
        let mut seen = self.inner.memory_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = seen.entry(digest.to_owned()).or_insert(0);
        *entry = (*entry).max(bytes);
    }

    /// Number of component instances created since start.
    pub fn instantiations(&self) -> u64 {
        self.inner.engine.instantiations()
    }
}
