//! The registry of stage versions: loading components, validating that they
//! implement the `plugin` world, and swapping versions while in flight.
//!
//! A stage's current version is an `Arc`: an invocation clones it when it
//! starts, so a swap or rollback never affects calls already running, and
//! the old version is freed when its last call ends.

use crate::cache::{self, CacheOutcome};
use crate::host::bindings::PluginPre;
use crate::invoke;
use crate::sandbox::StoreState;
use crate::types::StageInfo;
use crate::{InvokeError, Runtime};
use anyhow::{anyhow, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use wasmtime::component::{Component, Linker};

/// One compiled, validated version of a stage, ready to instantiate.
pub struct StageVersion {
    pub info: StageInfo,
    /// sha256 of the component bytes.
    pub digest: String,
    /// Where it came from (a file path, or an upload).
    pub origin: String,
    pub loaded_at: SystemTime,
    /// Whether a repeated call may be answered from a stored result.
    pub determinism: Determinism,
    pub(crate) pre: PluginPre<StoreState>,
}

/// Whether a stage is a pure function of its component, params and inputs,
/// as far as the host can tell: what decides whether its results are reused
/// by default (the caches in the server and the orchestrator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Determinism {
    /// The same params and inputs give the same output.
    Pure,
    /// It imports outgoing HTTP: another machine answers, and a hosted model
    /// answers differently each time.
    CallsOut,
    /// Its params schema says `"x-stagecraft-deterministic": false` (it reads
    /// a clock or a random source, say).
    Declared,
}

/// The params-schema annotation a stage declares itself non-deterministic with.
pub const DETERMINISTIC_KEYWORD: &str = "x-stagecraft-deterministic";

impl Determinism {
    fn of(info: &StageInfo, imports_http: bool) -> Self {
        if info.params_schema.get(DETERMINISTIC_KEYWORD) == Some(&serde_json::Value::Bool(false)) {
            Self::Declared
        } else if imports_http {
            Self::CallsOut
        } else {
            Self::Pure
        }
    }

    /// Why results are not reused by default; None for a pure stage.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Pure => None,
            Self::CallsOut => Some("the stage calls out over HTTP, so its answer may change from call to call"),
            Self::Declared => Some("the stage declares itself non-deterministic"),
        }
    }
}

impl std::fmt::Debug for StageVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageVersion")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("digest", &self.digest)
            .finish()
    }
}

/// What happened when loading a folder of components.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<Arc<StageVersion>>,
    pub failed: Vec<LoadFailure>,
}

#[derive(Debug)]
pub struct LoadFailure {
    pub path: PathBuf,
    /// Why, in one line (with its causes).
    pub reason: String,
}

#[derive(Default)]
pub struct Registry {
    stages: RwLock<HashMap<String, StageSlot>>,
}

struct StageSlot {
    current: Arc<StageVersion>,
    /// Earlier versions, newest last, for rollback.
    previous: Vec<Arc<StageVersion>>,
}

impl Registry {
    pub fn current(&self, name: &str) -> Option<Arc<StageVersion>> {
        self.stages.read().unwrap().get(name).map(|s| s.current.clone())
    }

    /// The versions a rollback of `name` would go back to, newest first.
    pub fn previous(&self, name: &str) -> Vec<Arc<StageVersion>> {
        self.stages.read().unwrap().get(name).map(|s| s.previous.iter().rev().cloned().collect()).unwrap_or_default()
    }

    pub fn current_all(&self) -> Vec<Arc<StageVersion>> {
        let mut all: Vec<_> = self.stages.read().unwrap().values().map(|s| s.current.clone()).collect();
        all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        all
    }

    /// Makes `version` current; the one it replaces stays for rollback.
    /// Installing the digest that is already current is a no-op.
    pub(crate) fn swap_in(&self, version: Arc<StageVersion>) -> Arc<StageVersion> {
        let mut stages = self.stages.write().unwrap();
        match stages.get_mut(&version.info.name) {
            Some(slot) if slot.current.digest == version.digest => slot.current.clone(),
            Some(slot) => {
                let old = std::mem::replace(&mut slot.current, version.clone());
                slot.previous.push(old);
                // Keep a bounded history: each version holds compiled code.
                if slot.previous.len() > 8 {
                    slot.previous.remove(0);
                }
                version
            }
            None => {
                stages.insert(version.info.name.clone(), StageSlot { current: version.clone(), previous: Vec::new() });
                version
            }
        }
    }

    pub fn rollback(&self, name: &str) -> Result<Arc<StageVersion>, InvokeError> {
        let mut stages = self.stages.write().unwrap();
        let slot = stages.get_mut(name).ok_or_else(|| InvokeError::UnknownStage(name.to_owned()))?;
        let previous = slot
            .previous
            .pop()
            .ok_or_else(|| InvokeError::InvalidInput(format!("stage '{name}' has no previous version")))?;
        slot.current = previous.clone();
        Ok(previous)
    }
}

/// The linker every component is checked against: WASI 0.2, `wasi:http`
/// (outgoing only, refused unless the stage has a grant: see [`crate::http`]),
/// the host services of the `plugin` world and `wasi:nn` (see
/// [`crate::wasi_nn`]). Built once per runtime.
pub(crate) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("adding WASI to the linker")?;
    crate::quota::add_to_linker(&mut linker)
        .map_err(anyhow::Error::from)
        .context("adding the scratch quota to wasi:filesystem")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("adding wasi:http to the linker")?;
    crate::host::bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("adding the host services to the linker")?;
    crate::wasi_nn::add_to_linker(&mut linker).map_err(anyhow::Error::from).context("adding wasi:nn to the linker")?;
    Ok(linker)
}

pub(crate) fn install(rt: &Runtime, bytes: &[u8], origin: &str) -> anyhow::Result<Arc<StageVersion>> {
    let version = prepare(rt, bytes, origin)?;
    Ok(rt.inner.registry.swap_in(version))
}

/// Compiles, validates and describes a component without installing it.
pub(crate) fn prepare(rt: &Runtime, bytes: &[u8], origin: &str) -> anyhow::Result<Arc<StageVersion>> {
    let inner = &rt.inner;
    let _span = tracing::info_span!("install", origin).entered();
    let digest = cache::digest(bytes);
    let started = std::time::Instant::now();
    let engine = inner.engine.engine();
    let (component, outcome) = inner
        .cache
        .load_or_compile(engine, bytes, &digest)
        .map_err(|e| anyhow!("not a valid WebAssembly component: {}", one_line(&e)))?;
    let pre = validate(engine, &inner.linker, &component)?;
    let imports_http =
        component.component_type().imports(engine).any(|(name, _)| name.starts_with("wasi:http/outgoing-handler@"));
    let info = invoke::describe(rt, &pre).context("calling describe()")?;
    if info.name.is_empty() || !info.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        anyhow::bail!("describe() returned an invalid stage name {:?} (letters, digits, _ and - only)", info.name);
    }
    let determinism = Determinism::of(&info, imports_http);
    let version = Arc::new(StageVersion {
        info,
        digest,
        origin: origin.to_owned(),
        loaded_at: SystemTime::now(),
        determinism,
        pre,
    });
    tracing::info!(
        stage = %version.info.name,
        version = %version.info.version,
        digest = &version.digest[..12],
        compiled = outcome == CacheOutcome::Compiled,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stage ready"
    );
    Ok(version)
}

/// Checks that the component's imports are all things this host provides
/// and that it exports `stagecraft:stage/stage` with the right types.
fn validate(
    engine: &wasmtime::Engine,
    linker: &Linker<StoreState>,
    component: &Component,
) -> anyhow::Result<PluginPre<StoreState>> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    if !exports.iter().any(|e| e.starts_with("stagecraft:stage/stage@")) {
        anyhow::bail!(
            "component does not export the stagecraft:stage/stage@0.1.0 interface (it exports: {}); \
             build it against wit/ with the stagecraft SDK",
            if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
        );
    }
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow!("component needs imports this host does not provide: {}", one_line(&e)))?;
    PluginPre::new(instance_pre)
        .map_err(|e| anyhow!("component does not match the stagecraft:stage plugin world: {}", one_line(&e)))
}

pub(crate) fn load_dir(rt: &Runtime, dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect(),
        Err(e) => {
            report.failed.push(LoadFailure { path: dir.to_owned(), reason: format!("cannot read the folder: {e}") });
            return report;
        }
    };
    files.sort();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        match rt.install_file(&path) {
            Ok(version) => {
                if let Some(first) = seen.insert(version.info.name.clone(), path.clone()) {
                    tracing::warn!(stage = %version.info.name, "{} and {} both define this stage; the latter wins", first.display(), path.display());
                }
                report.loaded.push(version);
            }
            Err(e) => {
                let reason = one_line(&e);
                tracing::warn!(path = %path.display(), "not loaded: {reason}");
                report.failed.push(LoadFailure { path, reason });
            }
        }
    }
    report
}

/// An error and its causes on one line.
pub(crate) fn one_line(e: &impl std::fmt::Display) -> String {
    format!("{e:#}").replace('\n', " ")
}

impl Runtime {
    /// Runs `describe` on a specific component file without installing it.
    pub fn inspect_bytes(&self, bytes: &[u8]) -> anyhow::Result<StageInfo> {
        let digest = cache::digest(bytes);
        let engine = self.inner.engine.engine();
        let (component, _) = self.inner.cache.load_or_compile(engine, bytes, &digest)?;
        let pre = validate(engine, &self.inner.linker, &component)?;
        invoke::describe(self, &pre)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(schema: serde_json::Value) -> StageInfo {
        StageInfo {
            name: "s".into(),
            version: "1".into(),
            description: String::new(),
            params_schema: schema,
            accepts: Vec::new(),
            produces: Vec::new(),
        }
    }

    #[test]
    fn a_stage_is_pure_unless_it_calls_out_or_says_otherwise_and_a_claim_of_purity_is_not_believed() {
        let plain = info(serde_json::json!({"type": "object"}));
        let declared = info(serde_json::json!({"type": "object", DETERMINISTIC_KEYWORD: false}));
        let claims_pure = info(serde_json::json!({"type": "object", DETERMINISTIC_KEYWORD: true}));
        assert_eq!(Determinism::of(&plain, false), Determinism::Pure);
        assert_eq!(Determinism::of(&plain, true), Determinism::CallsOut);
        assert_eq!(Determinism::of(&declared, false), Determinism::Declared);
        assert_eq!(Determinism::of(&claims_pure, true), Determinism::CallsOut);
        assert!(Determinism::Pure.reason().is_none() && Determinism::Declared.reason().is_some());
    }
}
