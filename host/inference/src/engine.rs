//! The engines of one model. tract (pure Rust) always loads it: it is the
//! reference every other engine is checked against at load, and the engine
//! when no other is available. In front of it, in this order of preference:
//!
//! - ONNX Runtime's CUDA provider, when the host's device is CUDA and the
//!   loaded library has the provider (the `onnxruntime-gpu` wheel);
//! - the five-op CUDA engine ([`crate::gpu`]), when the device is CUDA and
//!   the graph stays inside its op set;
//! - ONNX Runtime on the CPU ([`crate::ort_engine`]), when the library loads.
//!
//! Each candidate runs a probe batch that tract runs too and is kept only
//! when the two agree; otherwise the next one is tried, and [`CompiledModel::runs_on`]
//! says which engine won and why the others did not.
//!
//! Batch strategy: the leading dimension of every input is replaced by one
//! symbol `N` (and every dynamic item dimension by its own symbol) before
//! tract optimises the graph, so ONE plan serves every batch size from 1 to
//! `max_batch`: tract resolves the symbols from the input shapes when a run
//! starts. The alternative, a plan compiled per batch size (1, 2, 4, 8...),
//! would multiply load time and memory by the number of sizes and pad
//! batches up to the next compiled size, wasted work on every odd batch; the
//! symbolic plan costs a shape resolution per run, small next to the run.

use crate::config::{IoSpec, ModelConfig};
use crate::gpu::{GpuPath, Placement};
use crate::ort_engine::{self, OrtModel};
use crate::tensor::{shape_str, DType, Tensor};
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

#[cfg(target_endian = "big")]
compile_error!("tensor bytes cross the WIT boundary little-endian; this engine copies them as native bytes");

/// One input or output of a loaded model, in the model's own order.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub dtype: DType,
    /// The shape of one item (without the batch dimension); `None`: any size.
    pub item: Vec<Option<usize>>,
}

impl Port {
    /// `[N, 3, ?, ?]`, for messages.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.item.iter().map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string())).collect();
        format!("{} [N, {}]", self.dtype, dims.join(", "))
    }
}

/// Which engines a repository may use (`STAGECRAFT_ENGINE`), and the CPU
/// capacity ONNX Runtime sizes its threads by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// ONNX Runtime when its library loads and agrees with tract, else tract.
    Auto,
    /// tract only (the pure-Rust engine; also what the five-op CUDA engine falls back to).
    Tract,
    /// ONNX Runtime required: a model that cannot run on it fails to load.
    Ort,
}

impl EngineChoice {
    /// `STAGECRAFT_ENGINE` = `auto` (default), `tract` or `ort`; anything else is `auto` with a warning.
    pub fn from_env() -> EngineChoice {
        match std::env::var("STAGECRAFT_ENGINE").unwrap_or_default().to_ascii_lowercase().as_str() {
            "" | "auto" => EngineChoice::Auto,
            "tract" => EngineChoice::Tract,
            "ort" | "onnxruntime" => EngineChoice::Ort,
            other => {
                tracing::warn!("STAGECRAFT_ENGINE={other}: expected auto, tract or ort; using auto");
                EngineChoice::Auto
            }
        }
    }
}

/// How models are placed: the engine choice and the CPUs ONNX Runtime may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    pub choice: EngineChoice,
    /// CPU capacity: each model's instances share it (intra-op threads per
    /// instance = cpus / instances, at least 1).
    pub cpus: usize,
}

impl EngineOptions {
    /// [`EngineChoice::from_env`], and the CPUs this process may run on
    /// (`STAGECRAFT_CPUS` overrides).
    pub fn from_env() -> EngineOptions {
        let cpus = std::env::var("STAGECRAFT_CPUS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        EngineOptions { choice: EngineChoice::from_env(), cpus }
    }

    /// ONNX Runtime's intra-op threads for one instance of `config`.
    pub fn threads_for(&self, config: &ModelConfig) -> usize {
        config.cpu_threads.unwrap_or((self.cpus / config.instances.max(1)).max(1))
    }
}

/// Which engine runs a model (the short form of [`CompiledModel::runs_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Tract,
    OrtCpu,
    OrtCuda,
    /// The five-op CUDA engine of [`crate::gpu`].
    Cuda,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::OrtCpu => "onnxruntime-cpu",
            EngineKind::OrtCuda => "onnxruntime-cuda",
            EngineKind::Cuda => "cuda",
        }
    }
}

/// A model optimised and ready to run, shared by the model's workers.
pub struct CompiledModel {
    plan: Arc<TypedRunnableModel>,
    /// ONNX Runtime sessions: the main engine (CPU or CUDA provider), or the
    /// CPU behind the five-op GPU engine.
    ort: Option<OrtModel>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    gpu: Option<GpuPath>,
    /// Which engine runs the model, and why (`stagecraft models`).
    pub runs_on: String,
    pub kind: EngineKind,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel").field("inputs", &self.inputs).field("outputs", &self.outputs).finish()
    }
}

impl CompiledModel {
    /// Loads `model.onnx` on tract only (see [`CompiledModel::load_with`]).
    pub fn load(onnx: &Path, config: &ModelConfig) -> anyhow::Result<CompiledModel> {
        let tract_only = EngineOptions { choice: EngineChoice::Tract, cpus: 1 };
        Self::load_with(onnx, config, &Placement::Cpu("tract requested".into()), &tract_only)
    }

    /// [`CompiledModel::load_with`] with [`EngineOptions::from_env`].
    pub fn load_on(onnx: &Path, config: &ModelConfig, placement: &Placement) -> anyhow::Result<CompiledModel> {
        Self::load_with(onnx, config, placement, &EngineOptions::from_env())
    }

    /// Loads `model.onnx`, checks it against `config`, optimises it with a
    /// symbolic batch dimension and, when the item shapes are all fixed,
    /// runs it once on zeros to prove it batches. With a CUDA placement,
    /// also puts the model on the GPU when its graph allows and the GPU
    /// agrees with tract on a probe input; otherwise it stays on tract and
    /// the log and [`CompiledModel::runs_on`] say why. Then ONNX Runtime, as the
    /// module docs say, unless `options` choose tract.
    pub fn load_with(
        onnx: &Path,
        config: &ModelConfig,
        placement: &Placement,
        options: &EngineOptions,
    ) -> anyhow::Result<CompiledModel> {
        let mut model = tract_onnx::onnx()
            .model_for_path(onnx)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("cannot read ONNX model {}", onnx.display()))?;
        let batch = model.symbols.sym("N");

        let model_inputs: Vec<String> =
            model.input_outlets()?.iter().map(|o| model.node(o.node).name.clone()).collect();
        if model_inputs.len() != config.inputs.len() {
            bail!(
                "config.json declares {} inputs but model.onnx has {} ({})",
                config.inputs.len(),
                model_inputs.len(),
                model_inputs.join(", ")
            );
        }
        let mut inputs = Vec::with_capacity(model_inputs.len());
        for (ix, name) in model_inputs.iter().enumerate() {
            let spec = config
                .inputs
                .iter()
                .find(|s| &s.name == name)
                .with_context(|| format!("model.onnx has an input '{name}' that config.json does not declare"))?;
            let declared = model.input_fact(ix)?;
            let rank = (!declared.shape.is_open()).then(|| declared.shape.dims().count());
            let item = item_dims(spec, rank, "input")?;
            let mut shape = vec![TDim::from(batch.clone())];
            for (d, dim) in item.iter().enumerate() {
                shape.push(match dim {
                    Some(v) => TDim::from(*v as i64),
                    None => TDim::from(model.symbols.sym(&format!("{name}_{}", d + 1))),
                });
            }
            model.set_input_fact(ix, InferenceFact::dt_shape(datum_type(spec.dtype, name)?, shape))?;
            inputs.push(Port { name: name.clone(), dtype: spec.dtype, item });
        }

        let outlets = model.output_outlets()?.to_vec();
        if outlets.len() != config.outputs.len() {
            bail!("config.json declares {} outputs but model.onnx has {}", config.outputs.len(), outlets.len());
        }
        let mut outputs = Vec::with_capacity(outlets.len());
        let mut output_ranks = Vec::with_capacity(outlets.len());
        for (ix, outlet) in outlets.iter().enumerate() {
            let name = model.outlet_label(*outlet).unwrap_or(&model.node(outlet.node).name).to_owned();
            let spec = config
                .outputs
                .iter()
                .find(|s| s.name == name)
                .with_context(|| format!("model.onnx has an output '{name}' that config.json does not declare"))?;
            let declared = model.output_fact(ix)?;
            output_ranks.push((!declared.shape.is_open()).then(|| declared.shape.dims().count()));
            // A shape written into the file for batch 1 would contradict `N`:
            // let tract infer the outputs from the inputs instead.
            model.set_output_fact(ix, InferenceFact::dt(datum_type(spec.dtype, &name)?))?;
            outputs.push(Port { name, dtype: spec.dtype, item: Vec::new() });
        }
        for ((port, rank), spec) in outputs.iter_mut().zip(output_ranks).zip(&config.outputs) {
            let spec = config.outputs.iter().find(|s| s.name == port.name).unwrap_or(spec);
            port.item = item_dims(spec, rank, "output")?;
        }

        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("tract cannot optimise the model with a symbolic batch dimension N")?;
        let mut engine = CompiledModel {
            plan,
            ort: None,
            inputs,
            outputs,
            gpu: None,
            runs_on: String::new(),
            kind: EngineKind::Tract,
        };
        engine.smoke_test(config.max_batch.min(2))?;
        let mut not_used: Vec<String> = Vec::new();
        let runtime = match options.choice {
            EngineChoice::Tract => Err("STAGECRAFT_ENGINE=tract"),
            _ => ort_engine::runtime(),
        };
        let threads = options.threads_for(config);
        if let Placement::Cuda(cuda) = placement {
            match runtime {
                Ok(rt) if rt.has_cuda => match engine.attach_ort(rt, onnx, config, threads, true) {
                    Ok(diff) => {
                        engine.kind = EngineKind::OrtCuda;
                        engine.runs_on = format!(
                            "onnxruntime {} cuda provider ({}); probe vs tract: {diff}",
                            rt.version, cuda.summary
                        );
                    }
                    Err(why) => not_used.push(format!("not on ONNX Runtime's CUDA provider: {why}")),
                },
                Ok(rt) => not_used
                    .push(format!("ONNX Runtime {} has no CUDA provider (install onnxruntime-gpu for it)", rt.version)),
                Err(_) => {}
            }
            if engine.kind == EngineKind::Tract {
                match engine.attach_gpu(onnx, cuda) {
                    Ok((gpu, diff)) => {
                        engine.runs_on = format!("cuda ({}); probe vs tract: max abs diff {diff:.1e}", cuda.summary);
                        tracing::info!(model = %config.name, max_abs_diff = diff, "model runs on CUDA");
                        engine.gpu = Some(gpu);
                        engine.kind = EngineKind::Cuda;
                    }
                    Err(why) => not_used.push(format!("not on CUDA: {why}")),
                }
            }
        }
        if matches!(engine.kind, EngineKind::Tract | EngineKind::Cuda) {
            match runtime {
                Ok(rt) => match engine.attach_ort(rt, onnx, config, threads, false) {
                    Ok(diff) => {
                        let cpu = format!("onnxruntime {} cpu ({threads} thread(s) per instance)", rt.version);
                        if engine.kind == EngineKind::Cuda {
                            engine.runs_on.push_str(&format!("; batches the GPU cannot run: {cpu}"));
                        } else {
                            engine.kind = EngineKind::OrtCpu;
                            engine.runs_on = format!("{cpu}; probe vs tract: {diff}");
                        }
                    }
                    Err(why) => not_used.push(format!("not on ONNX Runtime: {why}")),
                },
                Err(why) => not_used.push(format!("no ONNX Runtime: {why}")),
            }
        }
        if options.choice == EngineChoice::Ort && !matches!(engine.kind, EngineKind::OrtCpu | EngineKind::OrtCuda) {
            bail!("STAGECRAFT_ENGINE=ort but the model cannot run on ONNX Runtime: {}", not_used.join("; "));
        }
        if engine.kind == EngineKind::Tract {
            engine.runs_on = format!("tract (cpu): {}", not_used.join("; "));
            if let Placement::Cpu(why) = placement {
                engine.runs_on.push_str(&format!("; device: {why}"));
            }
        } else if !not_used.is_empty() {
            engine.runs_on.push_str(&format!(" ({})", not_used.join("; ")));
        }
        if let (EngineKind::OrtCpu, Placement::Cpu(why)) = (engine.kind, placement) {
            // Why not on the GPU, as a tract placement says it.
            engine.runs_on.push_str(&format!("; device: {why}"));
        }
        tracing::info!(model = %config.name, engine = engine.kind.as_str(), "{}", engine.runs_on);
        Ok(engine)
    }

    /// Loads the model on ONNX Runtime and checks it against tract on a
    /// probe batch; keeps it when they agree. Returns the agreement, said.
    fn attach_ort(
        &mut self,
        rt: &ort_engine::Runtime,
        onnx: &Path,
        config: &ModelConfig,
        threads: usize,
        cuda: bool,
    ) -> Result<String, String> {
        let model = OrtModel::load(rt, onnx, config, threads, cuda).map_err(|e| format!("{e:#}"))?;
        let probe = self.probe_inputs(config.max_batch);
        let want = self.run_tract(&probe).map_err(|e| format!("probe run on tract: {e:#}"))?;
        let got = model.run(&probe, &self.outputs).map_err(|e| format!("probe run: {e:#}"))?;
        let said = compare(&got, &want)?;
        self.ort = Some(model);
        Ok(said)
    }

    /// A batch of 2 (1 when `max_batch` is 1) for the load-time probe: seeded values for fp32 inputs,
    /// zeros for integer ones (they are often indices), 32 for every
    /// dynamic dimension.
    pub fn probe_inputs(&self, max_batch: usize) -> Vec<Tensor> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(ix, port)| {
                let mut shape = vec![max_batch.min(2)];
                shape.extend(port.item.iter().map(|d| d.unwrap_or(32)));
                let n: usize = shape.iter().product();
                match port.dtype {
                    DType::F32 => {
                        Tensor::from_f32(port.name.clone(), shape, &crate::gpu::probe_input(n, 11 + ix as u64))
                    }
                    dtype => Tensor { name: port.name.clone(), shape, dtype, data: vec![0; n * dtype.size()] },
                }
            })
            .collect()
    }

    /// Lowers the graph for the GPU, uploads it and compares it with tract
    /// on a probe input; returns the GPU path and the largest difference.
    fn attach_gpu(&self, onnx: &Path, cuda: &'static stagecraft_accel::cuda::Gpu) -> Result<(GpuPath, f32), String> {
        let ([input], [output]) = (self.inputs.as_slice(), self.outputs.as_slice()) else {
            return Err("the CUDA engine runs models of one input and one output".into());
        };
        if input.dtype != DType::F32 || output.dtype != DType::F32 {
            return Err("the CUDA engine runs fp32 tensors only".into());
        }
        let spec = crate::gpu::lower(onnx)?;
        // The probe: batch 2 at a size that is no multiple of the tile.
        let c = spec.input_channels;
        let shape = vec![
            2,
            c,
            input.item.get(1).copied().flatten().unwrap_or(24),
            input.item.get(2).copied().flatten().unwrap_or(20),
        ];
        let values = crate::gpu::probe_input(shape.iter().product(), 7);
        let gpu = GpuPath::load(cuda, spec)?;
        let (got, got_shape) = gpu
            .run_direct(&values, shape[0], shape[2], shape[3])
            .map_err(|e| format!("probe run on the GPU: {e:?}"))?;
        let want = self
            .run_tract(&[Tensor::from_f32(input.name.clone(), shape, &values)])
            .map_err(|e| format!("probe run on tract: {e:#}"))?;
        let want_values = want[0].to_f32().unwrap_or_default();
        if want[0].shape != got_shape {
            return Err(format!("GPU output shape {got_shape:?}, tract's {:?}", want[0].shape));
        }
        let diff = crate::gpu::max_abs_diff(&got, &want_values);
        if diff > crate::gpu::PROBE_TOLERANCE {
            return Err(format!(
                "the GPU differs from tract by up to {diff:e} on the probe (tolerance {:e})",
                crate::gpu::PROBE_TOLERANCE
            ));
        }
        Ok((gpu, diff))
    }

    /// The GPU path, when the model runs on CUDA.
    pub fn gpu(&self) -> Option<&GpuPath> {
        self.gpu.as_ref()
    }

    /// Runs `rows` items of zeros through the model when every input's item
    /// shape is fixed, checking outputs carry the batch dimension.
    fn smoke_test(&self, rows: usize) -> anyhow::Result<()> {
        let mut tensors = Vec::new();
        for port in &self.inputs {
            let Some(item) = port.item.iter().copied().collect::<Option<Vec<usize>>>() else {
                return Ok(());
            };
            let mut shape = vec![rows];
            shape.extend(item);
            let bytes = shape.iter().product::<usize>() * port.dtype.size();
            tensors.push(Tensor { name: port.name.clone(), shape, dtype: port.dtype, data: vec![0; bytes] });
        }
        let outputs = self.run(&tensors).context("the model fails on a batch of zeros")?;
        for (t, port) in outputs.iter().zip(&self.outputs) {
            if t.shape.first() != Some(&rows) {
                bail!(
                    "output '{}' has shape {} for a batch of {rows}: the model does not keep the batch dimension first",
                    port.name,
                    shape_str(&t.shape)
                );
            }
        }
        Ok(())
    }

    /// Runs one batch. `inputs` are in model order, already checked against
    /// [`CompiledModel::inputs`]. On the five-op GPU engine when the model runs
    /// there and the GPU takes the batch, else on ONNX Runtime when the
    /// model runs there, else on tract. Blocking: call it from a worker
    /// thread.
    pub fn run(&self, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
        if let (Some(gpu), [input], [port]) = (&self.gpu, inputs, self.outputs.as_slice()) {
            if let Some(mut out) = gpu.try_run(input) {
                out.name = port.name.clone();
                return Ok(vec![out]);
            }
        }
        self.run_cpu(inputs)
    }

    /// Runs one batch off the five-op GPU engine: ONNX Runtime when the
    /// model runs there, else tract.
    pub fn run_cpu(&self, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
        match &self.ort {
            Some(ort) => ort.run(inputs, &self.outputs),
            None => self.run_tract(inputs),
        }
    }

    /// Runs one batch on tract, the reference.
    pub fn run_tract(&self, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
        let values = inputs.iter().map(to_tract).collect::<anyhow::Result<TVec<TValue>>>()?;
        let outputs = self.plan.run(values).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        outputs.iter().zip(&self.outputs).map(|(t, port)| from_tract(t, &port.name)).collect()
    }
}

/// Compares a candidate engine's probe outputs with tract's: same shapes
/// and types, integers equal, floats within [`crate::gpu::PROBE_TOLERANCE`]
/// relative to the output's largest magnitude (at least 1).
fn compare(got: &[Tensor], want: &[Tensor]) -> Result<String, String> {
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        if g.shape != w.shape || g.dtype != w.dtype {
            return Err(format!(
                "output '{}' is {} {} where tract's is {} {}",
                w.name,
                g.dtype,
                shape_str(&g.shape),
                w.dtype,
                shape_str(&w.shape)
            ));
        }
        match (g.to_f32(), w.to_f32()) {
            (Some(a), Some(b)) => {
                let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                let diff = crate::gpu::max_abs_diff(&a, &b);
                if diff.is_nan() || diff > crate::gpu::PROBE_TOLERANCE * scale {
                    return Err(format!(
                        "output '{}' differs from tract's by up to {diff:e} on the probe (tolerance {:e})",
                        w.name,
                        crate::gpu::PROBE_TOLERANCE * scale
                    ));
                }
                worst = worst.max(diff);
            }
            _ if g.data != w.data => return Err(format!("output '{}' differs from tract's on the probe", w.name)),
            _ => {}
        }
    }
    Ok(format!("max abs diff {worst:.1e}"))
}

/// The item dimensions of `spec`, given the rank model.onnx declares for
/// the tensor (when it declares one).
fn item_dims(spec: &IoSpec, rank: Option<usize>, what: &str) -> anyhow::Result<Vec<Option<usize>>> {
    match rank {
        Some(r) if r == spec.dims.len() + 1 => Ok(spec.dims.clone()),
        Some(r) if r == spec.dims.len() && r > 0 => Ok(spec.dims[1..].to_vec()),
        Some(r) => bail!(
            "{what} '{}': config.json gives {} dimensions but model.onnx has rank {r} (the batch dimension plus the item's)",
            spec.name,
            spec.dims.len()
        ),
        None => Ok(spec.dims.clone()),
    }
}

fn datum_type(dtype: DType, name: &str) -> anyhow::Result<DatumType> {
    Ok(match dtype {
        DType::F32 => f32::datum_type(),
        DType::U8 => u8::datum_type(),
        DType::I32 => i32::datum_type(),
        DType::I64 => i64::datum_type(),
        DType::F16 | DType::Bf16 => {
            bail!("'{name}' is {dtype}: the CPU engine runs fp32, u8, i32 and i64 tensors only")
        }
    })
}

/// Copies a checked WIT tensor into a tract tensor.
pub fn to_tract(t: &Tensor) -> anyhow::Result<TValue> {
    let dt = datum_type(t.dtype, &t.name)?;
    if t.expected_bytes() != Some(t.data.len()) {
        bail!("'{}': {} bytes for shape {} of {}", t.name, t.data.len(), shape_str(&t.shape), t.dtype);
    }
    // SAFETY: every bit pattern is a valid f32/u8/i32/i64 and the length
    // was checked above; from_raw_dt copies into an aligned buffer.
    let tensor = unsafe { Tensor_::from_raw_dt(dt, &t.shape, &t.data) }.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(TValue::from(tensor))
}

/// Copies a tract tensor out as a WIT tensor named `name`.
pub fn from_tract(t: &Tensor_, name: &str) -> anyhow::Result<Tensor> {
    let dtype = match t.datum_type() {
        dt if dt == f32::datum_type() => DType::F32,
        dt if dt == u8::datum_type() => DType::U8,
        dt if dt == i32::datum_type() => DType::I32,
        dt if dt == i64::datum_type() => DType::I64,
        other => bail!("output '{name}' is {other:?}, which the inference interface cannot carry"),
    };
    Ok(Tensor { name: name.to_owned(), shape: t.shape().to_vec(), dtype, data: t.as_bytes().to_vec() })
}

use tract_onnx::prelude::Tensor as Tensor_;
