//! The model repository: a folder of models, one subfolder per model
//! (`<name>/model.onnx` + `<name>/config.json`), loaded at start and
//! reloaded when their files change.
//!
//! A bad model is reported and skipped; the others load. A reload builds
//! and checks the new version completely (engine, smoke run, workers)
//! before swapping it in under a write lock held only for the swap; calls
//! already queued on the old version finish there, so there is no moment
//! without a model. A reload that fails keeps the old version serving and
//! records why.

use crate::batcher::{Batcher, Counters, ModelStats, Refused};
use crate::config::ModelConfig;
use crate::engine::{CompiledModel, EngineOptions, Port};
use crate::error::InferError;
use crate::gpu::Placement;
use crate::tensor::{shape_str, Tensor};
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

/// What identifies one version of a model's files on disk.
type Fingerprint = Vec<(SystemTime, u64)>;

/// One loaded version of a model.
struct Loaded {
    config: ModelConfig,
    engine: Arc<CompiledModel>,
    batcher: Batcher,
    version: u64,
}

/// A shared, thread-safe model repository. Create with [`Models::open`].
pub struct Models {
    dir: PathBuf,
    /// Where models may run (CUDA or tract), decided once.
    placement: Placement,
    /// Which engines, and the CPUs ONNX Runtime sizes its threads by.
    options: EngineOptions,
    loaded: RwLock<BTreeMap<String, Arc<Loaded>>>,
    /// Counters by model name, kept across reloads.
    counters: Mutex<HashMap<String, Arc<Counters>>>,
    /// The files last tried per model and why that try failed (if it did).
    attempts: Mutex<BTreeMap<String, (Fingerprint, Option<String>)>>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.loaded.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        f.debug_struct("Models").field("dir", &self.dir).field("loaded", &names).finish()
    }
}

/// What one (re)scan of the folder did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScanReport {
    /// Models loaded or reloaded.
    pub loaded: Vec<String>,
    /// Models removed because their folder went away.
    pub removed: Vec<String>,
    /// Models that failed to load, with the reason (a failed reload keeps
    /// the previous version serving).
    pub failed: Vec<(String, String)>,
}

/// A model as `stagecraft models` and `GET /v1/models` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// How many times this model was (re)loaded since start.
    pub version: u64,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Which engine runs the model and why (`onnxruntime 1.31.1 cpu ...`,
    /// `cuda (...)` or `tract (cpu): why`).
    pub engine: String,
    /// The same in one word: `tract`, `onnxruntime-cpu`, `onnxruntime-cuda` or `cuda`.
    pub engine_kind: &'static str,
    /// Preferred batch sizes (Triton's `preferred_batch_size`).
    pub preferred_batch: Vec<usize>,
    /// Batches run on the GPU, and batches the GPU failed that tract re-ran.
    pub gpu_batches: u64,
    pub gpu_fallbacks: u64,
    pub max_batch: usize,
    pub instances: usize,
    pub batch_delay_ms: f64,
    pub timeout_ms: u64,
    pub stats: ModelStats,
    /// Why the last reload failed, when it did (the listed version still serves).
    pub reload_error: Option<String>,
}

impl Models {
    /// Loads every model under `dir`, on the host's device choice
    /// ([`Placement::current`]). Fails only when `dir` cannot be read;
    /// bad models are in the report.
    pub fn open(dir: impl AsRef<Path>) -> anyhow::Result<(Arc<Models>, ScanReport)> {
        Self::open_on(dir, Placement::current())
    }

    /// As [`Models::open`], with the placement given.
    pub fn open_on(dir: impl AsRef<Path>, placement: Placement) -> anyhow::Result<(Arc<Models>, ScanReport)> {
        Self::open_with(dir, placement, EngineOptions::from_env())
    }

    /// As [`Models::open`], with the placement and the engine options given
    /// (tests force tract or ONNX Runtime; a host passes its CPU capacity).
    pub fn open_with(
        dir: impl AsRef<Path>,
        placement: Placement,
        options: EngineOptions,
    ) -> anyhow::Result<(Arc<Models>, ScanReport)> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::read_dir(&dir).with_context(|| format!("cannot read the model repository {}", dir.display()))?;
        let models = Arc::new(Models {
            dir,
            placement,
            options,
            loaded: RwLock::default(),
            counters: Mutex::default(),
            attempts: Mutex::default(),
        });
        let report = models.rescan();
        Ok((models, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads new models, reloads changed ones, drops removed ones.
    pub fn rescan(&self) -> ScanReport {
        let found = self.scan();
        let mut report = ScanReport::default();
        let changed: Vec<(String, Fingerprint)> = {
            let attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            found.into_iter().filter(|(name, fp)| attempts.get(name).map(|a| &a.0) != Some(fp)).collect()
        };
        for (name, fp) in changed {
            self.sync(&name, fp, &mut report);
        }
        self.drop_removed(&mut report);
        report
    }

    /// The model folders and their current fingerprints.
    fn scan(&self) -> BTreeMap<String, Fingerprint> {
        let mut found = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            tracing::warn!(dir = %self.dir.display(), "the model repository cannot be read; keeping the loaded models");
            return found;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let fp = ["model.onnx", "config.json"]
                .iter()
                .map(|f| {
                    std::fs::metadata(entry.path().join(f))
                        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
                        .unwrap_or((SystemTime::UNIX_EPOCH, 0))
                })
                .collect();
            found.insert(name, fp);
        }
        found
    }

    /// Loads one model's current files and swaps them in.
    fn sync(&self, name: &str, fp: Fingerprint, report: &mut ScanReport) {
        let span = tracing::info_span!("load_model", model = name);
        let _enter = span.enter();
        let started = Instant::now();
        let outcome = self.build(name);
        let error = match outcome {
            Ok(new) => {
                let version = new.version;
                let old = self.loaded.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), Arc::new(new));
                if let Some(old) = old {
                    old.batcher.close();
                }
                tracing::info!(version, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "model loaded");
                report.loaded.push(name.to_owned());
                None
            }
            Err(e) => {
                let message = format!("{e:#}");
                let serving = self.loaded.read().unwrap_or_else(|p| p.into_inner()).contains_key(name);
                tracing::error!(serving_previous = serving, "model '{name}' failed to load: {message}");
                report.failed.push((name.to_owned(), message.clone()));
                Some(message)
            }
        };
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), (fp, error));
    }

    fn build(&self, name: &str) -> anyhow::Result<Loaded> {
        let folder = self.dir.join(name);
        let config = ModelConfig::load(&folder.join("config.json"), name)?;
        let engine =
            Arc::new(CompiledModel::load_with(&folder.join("model.onnx"), &config, &self.placement, &self.options)?);
        let counters =
            self.counters.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_owned()).or_default().clone();
        let version = self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(name).map_or(1, |l| l.version + 1);
        let batcher = Batcher::start(engine.clone(), &config, counters)?;
        Ok(Loaded { config, engine, batcher, version })
    }

    fn drop_removed(&self, report: &mut ScanReport) {
        let present = self.scan();
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = loaded.keys().filter(|n| !present.contains_key(*n)).cloned().collect();
        for name in gone {
            if let Some(old) = loaded.remove(&name) {
                old.batcher.close();
            }
            tracing::info!(model = name, "model folder removed; model unloaded");
            report.removed.push(name.clone());
        }
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).retain(|n, _| present.contains_key(n));
    }

    /// Polls the folder every `interval` and reloads what changed, once a
    /// model's files have stayed the same for one interval (a copy in
    /// progress is not loaded half-written). Stops when the returned
    /// [`Watcher`] or the repository is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let models: Weak<Models> = Arc::downgrade(self);
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("model-watch".into()).spawn(move || {
            let mut previous: BTreeMap<String, Fingerprint> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let Some(models) = models.upgrade() else { return };
                let found = models.scan();
                let stable: Vec<(String, Fingerprint)> = {
                    let attempts = models.attempts.lock().unwrap_or_else(|p| p.into_inner());
                    found
                        .iter()
                        .filter(|(n, fp)| previous.get(*n) == Some(fp) && attempts.get(*n).map(|a| &a.0) != Some(fp))
                        .map(|(n, fp)| (n.clone(), fp.clone()))
                        .collect()
                };
                let mut report = ScanReport::default();
                for (name, fp) in stable {
                    models.sync(&name, fp, &mut report);
                }
                models.drop_removed(&mut report);
                previous = found;
            }
        });
        if let Err(e) = &thread {
            tracing::error!("cannot start the model watcher: {e}");
        }
        Watcher { stop }
    }

    /// Every loaded model, by name.
    pub fn list(&self) -> Vec<ModelInfo> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        loaded
            .iter()
            .map(|(name, l)| ModelInfo {
                name: name.clone(),
                version: l.version,
                inputs: l.engine.inputs.iter().map(|p| format!("{}: {}", p.name, p.describe())).collect(),
                outputs: l.engine.outputs.iter().map(|p| format!("{}: {}", p.name, p.describe())).collect(),
                engine: l.engine.runs_on.clone(),
                engine_kind: l.engine.kind.as_str(),
                preferred_batch: l.config.preferred_batch.clone(),
                gpu_batches: l.engine.gpu().map_or(0, |g| g.counts().0),
                gpu_fallbacks: l.engine.gpu().map_or(0, |g| g.counts().1),
                max_batch: l.config.max_batch,
                instances: l.config.instances,
                batch_delay_ms: l.config.batch_delay.as_secs_f64() * 1e3,
                timeout_ms: l.config.timeout.as_millis() as u64,
                stats: self.stats(name).unwrap_or_default(),
                reload_error: attempts.get(name).and_then(|a| a.1.clone()),
            })
            .collect()
    }

    /// Models whose latest files failed to load (serving or not), with why.
    pub fn failures(&self) -> Vec<(String, String)> {
        let attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        attempts.iter().filter_map(|(n, a)| a.1.clone().map(|e| (n.clone(), e))).collect()
    }

    /// The counters of one model (kept across reloads).
    pub fn stats(&self, model: &str) -> Option<ModelStats> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner()).get(model).map(|c| c.snapshot())
    }

    /// Runs `model` on `inputs` (each with a leading batch dimension of the
    /// same size), batched with other concurrent calls. The deadline
    /// (`timeout_ms`) covers the wait in the queue and the execution.
    pub async fn infer(&self, model: &str, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let mut inputs = inputs;
        // A reload between looking the model up and queueing the call
        // closes the old queue: try again on the new version.
        for _ in 0..4 {
            let loaded = self.get(model)?;
            let (ordered, rows) = check_inputs(model, &loaded, inputs)?;
            let deadline = Instant::now() + loaded.config.timeout;
            let rx = match loaded.batcher.submit(ordered, rows, deadline) {
                Ok(rx) => rx,
                Err(Refused::Full(m)) => return Err(InferError::Unavailable(m)),
                Err(Refused::Closed(back)) => {
                    inputs = back;
                    continue;
                }
            };
            return match tokio::time::timeout_at(deadline.into(), rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(InferError::Failed(format!("model '{model}': its worker stopped before answering"))),
                Err(_) => {
                    if let Some(c) = self.counters.lock().unwrap_or_else(|p| p.into_inner()).get(model) {
                        c.timed_out();
                    }
                    Err(InferError::Unavailable(format!(
                        "model '{model}' did not answer within {} ms (queue time and execution)",
                        loaded.config.timeout.as_millis()
                    )))
                }
            };
        }
        Err(InferError::Unavailable(format!("model '{model}' is being reloaded repeatedly; retry later")))
    }

    /// Whether `model` is loaded now; the error says why not, as
    /// [`Models::infer`] would (for callers that resolve a name first, like
    /// `wasi:nn`'s `load-by-name`).
    pub fn ensure_loaded(&self, model: &str) -> Result<(), InferError> {
        self.get(model).map(|_| ())
    }

    fn get(&self, model: &str) -> Result<Arc<Loaded>, InferError> {
        if let Some(l) = self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(model) {
            return Ok(l.clone());
        }
        if let Some((_, Some(why))) = self.attempts.lock().unwrap_or_else(|p| p.into_inner()).get(model) {
            return Err(InferError::UnknownModel(format!("model '{model}' failed to load: {why}")));
        }
        let names: Vec<String> = self.loaded.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        Err(InferError::UnknownModel(format!(
            "no model '{model}' in {} (models: {})",
            self.dir.display(),
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        )))
    }
}

/// Stops [`Models::watch`]'s polling when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Puts the caller's tensors in model order and checks names, types and
/// item shapes; returns them with the number of rows they carry.
fn check_inputs(model: &str, loaded: &Loaded, mut given: Vec<Tensor>) -> Result<(Vec<Tensor>, usize), InferError> {
    let ports = &loaded.engine.inputs;
    let invalid = |m: String| InferError::InvalidInput(format!("model '{model}': {m}"));
    if given.len() == 1 && ports.len() == 1 && given[0].name.is_empty() {
        given[0].name = ports[0].name.clone();
    }
    if let Some(extra) = given.iter().find(|t| !ports.iter().any(|p| p.name == t.name)) {
        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        return Err(invalid(format!("no input named '{}' (inputs: {})", extra.name, names.join(", "))));
    }
    let mut ordered = Vec::with_capacity(ports.len());
    let mut rows = None;
    for port in ports {
        let ix = given
            .iter()
            .position(|t| t.name == port.name)
            .ok_or_else(|| invalid(format!("missing input '{}' ({})", port.name, port.describe())))?;
        let t = given.swap_remove(ix);
        check_tensor(&t, port).map_err(&invalid)?;
        match rows {
            None => rows = Some(t.shape[0]),
            Some(r) if r != t.shape[0] => {
                return Err(invalid(format!(
                    "input '{}' has {} rows but '{}' has {r}: every input needs the same batch size",
                    t.name,
                    t.shape[0],
                    ordered.first().map_or("", |f: &Tensor| f.name.as_str())
                )))
            }
            Some(_) => {}
        }
        ordered.push(t);
    }
    let rows = rows.unwrap_or(0);
    if rows > loaded.config.max_batch {
        return Err(invalid(format!(
            "{rows} rows in one call; this model takes at most max_batch = {}",
            loaded.config.max_batch
        )));
    }
    Ok((ordered, rows))
}

fn check_tensor(t: &Tensor, port: &Port) -> Result<(), String> {
    let expected = port.describe();
    let got = format!("{} {}", t.dtype, shape_str(&t.shape));
    let mismatch = || format!("input '{}': expected {expected}, got {got}", port.name);
    if t.dtype != port.dtype || t.shape.len() != port.item.len() + 1 || t.shape[0] == 0 {
        return Err(mismatch());
    }
    if t.shape[1..].iter().zip(&port.item).any(|(g, e)| *g == 0 || e.is_some_and(|e| e != *g)) {
        return Err(mismatch());
    }
    match t.expected_bytes() {
        Some(bytes) if bytes == t.data.len() => {}
        Some(bytes) => {
            return Err(format!("input '{}': shape {got} needs {bytes} bytes, got {}", port.name, t.data.len()));
        }
        None => return Err(format!("input '{}': shape {got} is too large to address", port.name)),
    }
    Ok(())
}
