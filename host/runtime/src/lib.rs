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

pub use config::{Limits, Quotas, RuntimeConfig};
pub use error::InvokeError;
pub use http::HttpGrant;
pub use invoke::{InvokeOptions, StageEvent};
pub use quota::{QuotaExceeded, QuotaKind};
pub use registry::{LoadFailure, LoadReport, StageVersion};
pub use types::{Artifact, StageInfo, StageInput, StageOutput};

use std::path::Path;
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
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch ticker) and an empty registry.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = engine::StageEngine::new(&config)?;
        let cache = cache::CompiledCache::new(config.cache_dir.clone(), engine.engine())?;
        let scratch = sandbox::ScratchPool::new(&config.scratch_dir)?;
        let linker = registry::linker(engine.engine())?;
        let http = http::HttpPolicy::new(&config.http)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                engine,
                cache,
                linker,
                registry: registry::Registry::default(),
                scratch,
                http,
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

    /// Number of component instances created since start.
    pub fn instantiations(&self) -> u64 {
        self.inner.engine.instantiations()
    }
}
