//! ONNX Runtime as the main engine, loaded at run time.
//!
//! `libonnxruntime.so` is not linked: the `ort` crate (`load-dynamic`)
//! opens it when the repository first needs it, from, in order:
//!
//! 1. the path given to [`set_library`] (the CLI's `--ort-lib PATH`);
//! 2. `ORT_DYLIB_PATH`;
//! 3. the `onnxruntime` wheel of `python3` on `PATH` (`python3 -c 'import onnxruntime'`,
//!    then `onnxruntime/capi/libonnxruntime.so*`);
//! 4. a scan of the usual site-packages folders (virtualenv, user, system, pyenv).
//!
//! `scripts/setup-ort` installs the wheel. When none loads, the repository
//! runs every model on tract, and [`runtime`] says why (the log and
//! `stagecraft models` repeat it).
//!
//! The one rule this module keeps: before the library is loaded, every
//! other `ort` call panics (it would try to `dlopen` a default name). So
//! [`runtime`] initialises once and every `ort` use in this crate goes
//! through the [`Runtime`] it returns; nothing touches `ort` when it failed.

use crate::config::ModelConfig;
use crate::engine::Port;
use crate::tensor::{DType, Tensor};
use anyhow::{bail, Context};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The loaded library and its one environment.
pub struct Runtime {
    env: ort::environment::Environment,
    /// Where the library came from.
    pub path: PathBuf,
    /// `1.31.1`, from the library's build string.
    pub version: String,
    /// How it was found (`--ort-lib`, `ORT_DYLIB_PATH`, `python3`, `site-packages`).
    pub found_by: &'static str,
    /// Whether this build of the library has the CUDA provider (the `onnxruntime-gpu` wheel).
    pub has_cuda: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("path", &self.path).field("version", &self.version).finish()
    }
}

static EXPLICIT: Mutex<Option<PathBuf>> = Mutex::new(None);
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Sets the library to load (the CLI's `--ort-lib`). Only effective before
/// the first [`runtime`] call; returns false when it came too late.
pub fn set_library(path: impl Into<PathBuf>) -> bool {
    *EXPLICIT.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.into());
    RUNTIME.get().is_none()
}

/// The ONNX Runtime of this process, loaded on first use; the error says
/// where it looked and why nothing loaded.
pub fn runtime() -> Result<&'static Runtime, &'static str> {
    RUNTIME
        .get_or_init(|| {
            let r = load();
            match &r {
                Ok(rt) => tracing::info!(
                    path = %rt.path.display(), version = %rt.version, found_by = rt.found_by, cuda = rt.has_cuda,
                    "ONNX Runtime loaded"
                ),
                Err(why) => tracing::info!("ONNX Runtime not loaded, models run on tract: {why}"),
            }
            r
        })
        .as_ref()
        .map_err(String::as_str)
}

fn load() -> Result<Runtime, String> {
    let explicit = EXPLICIT.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (path, found_by) = match (explicit, std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty())) {
        (Some(p), _) => (p, "--ort-lib"),
        (None, Some(p)) => (PathBuf::from(p), "ORT_DYLIB_PATH"),
        (None, None) => find_in_python().ok_or_else(|| {
            "no libonnxruntime found: pass --ort-lib PATH or set ORT_DYLIB_PATH, or install the wheel \
             (scripts/setup-ort: pip install onnxruntime==1.31.*)"
                .to_owned()
        })?,
    };
    if !path.is_file() {
        return Err(format!("{found_by} names {}, which is not a file", path.display()));
    }
    // The only `ort` call allowed before a library is loaded.
    let builder = ort::init_from(&path).map_err(|e| format!("cannot load {} ({found_by}): {e}", path.display()))?;
    let env = builder
        .with_name("stagecraft")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("ONNX Runtime at {} loaded but its environment failed: {e}", path.display()))?;
    // The build string names a release branch (`git-branch=rel-1.31.1`) in
    // some builds; the wheel's says HEAD, but its file name carries the version.
    let from_name = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("libonnxruntime.so."));
    let version = ort::info()
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .or(from_name)
        .unwrap_or("(version unknown)")
        .to_owned();
    // Compiled in? (the `onnxruntime-gpu` wheel); whether it works is known when a session registers it.
    let has_cuda = <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available().unwrap_or(false);
    Ok(Runtime { env, path, version, found_by, has_cuda })
}

/// `python3`'s onnxruntime wheel, else the first wheel in a usual site-packages folder.
fn find_in_python() -> Option<(PathBuf, &'static str)> {
    let asked = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|dir| library_in(&Path::new(dir.trim()).join("capi")));
    if let Some(p) = asked {
        return Some((p, "python3"));
    }
    site_packages().iter().find_map(|sp| library_in(&sp.join("onnxruntime/capi"))).map(|p| (p, "site-packages"))
}

/// `libonnxruntime.so` or `libonnxruntime.so.1.31.1` in `dir` (not the
/// `_providers_*` helpers beside it).
pub fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so.") || name == "libonnxruntime.dylib"
        })
        .collect();
    found.sort();
    found.pop()
}

fn site_packages() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(venv).join("lib"));
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        roots.push(home.join(".local/lib"));
        if let Ok(versions) = std::fs::read_dir(home.join(".pyenv/versions")) {
            roots.extend(versions.flatten().map(|v| v.path().join("lib")));
        }
    }
    roots.extend(["/usr/local/lib", "/usr/lib", "/opt/conda/lib"].map(PathBuf::from));
    let mut out = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("python3") {
                out.push(e.path().join("site-packages"));
                out.push(e.path().join("dist-packages"));
            }
        }
    }
    out.push("/usr/lib/python3/dist-packages".into());
    out
}

/// Where an ORT model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
}

/// One model on ONNX Runtime: a session per batcher instance (a session
/// runs one call at a time through `ort`'s `&mut` API), each with
/// `threads` intra-op threads.
pub struct OrtModel {
    sessions: Vec<Mutex<Session>>,
    pub threads: usize,
    pub provider: Provider,
    /// The batch size model.onnx fixes for its first input, when it fixes
    /// one (many exports say 1): ONNX Runtime cannot change it, so larger
    /// batches run as that many rows at a time. tract needs no such split
    /// (it replaces the dimension with a symbol).
    pub fixed_batch: Option<usize>,
}

impl OrtModel {
    /// Builds `config.instances` sessions of `onnx`. With `cuda`, registers
    /// the CUDA provider and fails (rather than quietly running on the CPU)
    /// when it does not register.
    pub fn load(
        rt: &Runtime,
        onnx: &Path,
        config: &ModelConfig,
        threads: usize,
        cuda: bool,
    ) -> anyhow::Result<OrtModel> {
        let mut sessions = Vec::with_capacity(config.instances);
        for _ in 0..config.instances {
            let mut builder = Session::builder(&rt.env)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_intra_threads(threads)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_inter_threads(1)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                // Idle pool threads spinning would take the CPU from the
                // other instances and models sharing the host.
                .with_config_entry("session.intra_op.allow_spinning", "0")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if cuda {
                builder = builder
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| anyhow::anyhow!("the CUDA provider did not register: {e}"))?;
            }
            let session = builder
                .commit_from_file(onnx)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("ONNX Runtime cannot load {}", onnx.display()))?;
            sessions.push(Mutex::new(session));
        }
        let fixed_batch = sessions[0]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inputs()
            .first()
            .and_then(|i| i.dtype().tensor_shape().and_then(|s| s.first().copied()))
            .filter(|&d| d > 0)
            .map(|d| d as usize);
        Ok(OrtModel { sessions, threads, provider: if cuda { Provider::Cuda } else { Provider::Cpu }, fixed_batch })
    }

    /// Runs one batch; `inputs` are checked and in model order, `outputs`
    /// name what to return. Blocking.
    pub fn run(&self, inputs: &[Tensor], outputs: &[Port]) -> anyhow::Result<Vec<Tensor>> {
        let rows = inputs.first().map_or(0, |t| t.shape[0]);
        match self.fixed_batch {
            Some(k) if rows != k && rows.is_multiple_of(k) => {
                let parts = (0..rows / k)
                    .map(|part| {
                        self.run_once(&inputs.iter().map(|t| slice_rows(t, part * k, k)).collect::<Vec<_>>(), outputs)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(concat_rows(parts))
            }
            Some(k) if rows != k => {
                bail!("model.onnx fixes the batch dimension at {k}; a batch of {rows} rows cannot be split into it")
            }
            _ => self.run_once(inputs, outputs),
        }
    }

    fn run_once(&self, inputs: &[Tensor], outputs: &[Port]) -> anyhow::Result<Vec<Tensor>> {
        let values = inputs
            .iter()
            .map(|t| Ok((t.name.clone(), SessionInputValue::from(to_ort(t)?))))
            .collect::<anyhow::Result<Vec<(String, SessionInputValue<'static>)>>>()?;
        // A free session if there is one (there is one per worker), else wait for the first.
        let mut session = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| self.sessions[0].lock().unwrap_or_else(|p| p.into_inner()));
        let result = session.run(values).map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?;
        outputs
            .iter()
            .map(|port| {
                let value = result
                    .get(&port.name)
                    .with_context(|| format!("ONNX Runtime returned no output '{}'", port.name))?;
                from_ort(value, &port.name)
            })
            .collect()
    }
}

/// Rows `from..from + n` of a batch.
fn slice_rows(t: &Tensor, from: usize, n: usize) -> Tensor {
    let row = t.data.len() / t.shape[0].max(1);
    let mut shape = t.shape.clone();
    shape[0] = n;
    Tensor { name: t.name.clone(), shape, dtype: t.dtype, data: t.data[from * row..(from + n) * row].to_vec() }
}

/// The outputs of consecutive row ranges, stacked back into one batch.
fn concat_rows(parts: Vec<Vec<Tensor>>) -> Vec<Tensor> {
    let mut parts = parts.into_iter();
    let Some(mut out) = parts.next() else { return Vec::new() };
    for part in parts {
        for (o, p) in out.iter_mut().zip(part) {
            o.shape[0] += p.shape[0];
            o.data.extend_from_slice(&p.data);
        }
    }
    out
}

fn to_ort(t: &Tensor) -> anyhow::Result<DynValue> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    fn le<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Box<[T]> {
        data.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N"))).collect()
    }
    let value = match t.dtype {
        DType::F32 => OrtTensor::from_array((shape, le(&t.data, f32::from_le_bytes)))?.into_dyn(),
        DType::I32 => OrtTensor::from_array((shape, le(&t.data, i32::from_le_bytes)))?.into_dyn(),
        DType::I64 => OrtTensor::from_array((shape, le(&t.data, i64::from_le_bytes)))?.into_dyn(),
        DType::U8 => OrtTensor::from_array((shape, t.data.clone().into_boxed_slice()))?.into_dyn(),
        other => bail!("'{}' is {other}: ONNX Runtime here takes fp32, u8, i32 and i64 tensors", t.name),
    };
    Ok(value)
}

fn from_ort(v: &DynValue, name: &str) -> anyhow::Result<Tensor> {
    fn bytes<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug, const N: usize>(
        v: &DynValue,
        f: fn(&T) -> [u8; N],
    ) -> anyhow::Result<(Vec<usize>, Vec<u8>)> {
        let (shape, data) = v.try_extract_tensor::<T>()?;
        Ok((shape.iter().map(|&d| d as usize).collect(), data.iter().flat_map(f).collect()))
    }
    let (dtype, (shape, data)) = match v.dtype().tensor_type() {
        Some(TensorElementType::Float32) => (DType::F32, bytes::<f32, 4>(v, |x| x.to_le_bytes())?),
        Some(TensorElementType::Int32) => (DType::I32, bytes::<i32, 4>(v, |x| x.to_le_bytes())?),
        Some(TensorElementType::Int64) => (DType::I64, bytes::<i64, 8>(v, |x| x.to_le_bytes())?),
        Some(TensorElementType::Uint8) => (DType::U8, bytes::<u8, 1>(v, |x| [*x])?),
        other => bail!("output '{name}' is {other:?}, which the inference interface cannot carry"),
    };
    Ok(Tensor { name: name.to_owned(), shape, dtype, data })
}
