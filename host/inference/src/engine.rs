//! The engines of one model: tract on the CPU, optimised once, run on
//! batches; and, when the host's device is CUDA and the graph stays inside
//! the CUDA op set, the GPU engine ([`crate::gpu`]) in front of it, with
//! tract running whatever batch the GPU cannot.
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

/// A model optimised and ready to run, shared by the model's workers.
pub struct Engine {
    plan: Arc<TypedRunnableModel>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    gpu: Option<GpuPath>,
    /// Which engine runs the model, and why (`stagecraft models`).
    pub runs_on: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("inputs", &self.inputs).field("outputs", &self.outputs).finish()
    }
}

impl Engine {
    /// Loads `model.onnx` on tract only (see [`Engine::load_on`]).
    pub fn load(onnx: &Path, config: &ModelConfig) -> anyhow::Result<Engine> {
        Self::load_on(onnx, config, &Placement::Cpu("tract requested".into()))
    }

    /// Loads `model.onnx`, checks it against `config`, optimises it with a
    /// symbolic batch dimension and, when the item shapes are all fixed,
    /// runs it once on zeros to prove it batches. With a CUDA placement,
    /// also puts the model on the GPU when its graph allows and the GPU
    /// agrees with tract on a probe input; otherwise it stays on tract and
    /// the log and [`Engine::runs_on`] say why.
    pub fn load_on(onnx: &Path, config: &ModelConfig, placement: &Placement) -> anyhow::Result<Engine> {
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
        let mut engine = Engine { plan, inputs, outputs, gpu: None, runs_on: String::new() };
        engine.smoke_test(config.max_batch.min(2))?;
        match placement {
            Placement::Cpu(why) => engine.runs_on = format!("tract (cpu): {why}"),
            Placement::Cuda(cuda) => match engine.attach_gpu(onnx, cuda) {
                Ok((gpu, diff)) => {
                    engine.runs_on = format!("cuda ({}); probe vs tract: max abs diff {diff:.1e}", cuda.summary);
                    tracing::info!(model = %config.name, max_abs_diff = diff, "model runs on CUDA");
                    engine.gpu = Some(gpu);
                }
                Err(why) => {
                    tracing::info!(model = %config.name, %why, "model stays on tract (cpu)");
                    engine.runs_on = format!("tract (cpu): not on CUDA: {why}");
                }
            },
        }
        Ok(engine)
    }

    /// Lowers the graph for the GPU, uploads it and compares it with tract
    /// on a probe input; returns the GPU path and the largest difference.
    fn attach_gpu(&self, onnx: &Path, cuda: &'static stagecraft_accel::cuda::Engine) -> Result<(GpuPath, f32), String> {
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
            .run_cpu(&[Tensor::from_f32(input.name.clone(), shape, &values)])
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
    /// [`Engine::inputs`]. On the GPU when the model runs there and the
    /// GPU takes the batch, else on tract. Blocking: call it from a worker
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

    /// Runs one batch on tract.
    pub fn run_cpu(&self, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
        let values = inputs.iter().map(to_tract).collect::<anyhow::Result<TVec<TValue>>>()?;
        let outputs = self.plan.run(values).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        outputs.iter().zip(&self.outputs).map(|(t, port)| from_tract(t, &port.name)).collect()
    }
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
