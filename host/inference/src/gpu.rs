//! The GPU engine: a model whose graph stays inside the CUDA op set runs
//! as `stagecraft-accel`'s CUDA kernels (`cuda::net`), with tract as the
//! reference and the fallback.
//!
//! - [`lower`] translates an ONNX graph into a [`NetSpec`], or says which
//!   node keeps the model on tract. The op set: Conv (group 1, stride 1,
//!   any pads and dilations, 2-D, weights and bias as initializers), Relu,
//!   Add (two activations of the same shape), Sigmoid, DepthToSpace (DCR
//!   or CRD). A Relu right after a Conv or Add that nothing else reads is
//!   fused into it.
//! - [`GpuPath`] is one model on the GPU: weights uploaded once, checked
//!   at load against tract on a probe input, run behind a circuit breaker.
//!   A batch the GPU cannot run (memory short, driver error, panic) returns
//!   `None` and the engine runs it on tract: callers never see a GPU fault.
//!
//! Where the split lies: `stagecraft-accel` owns the device (context,
//! NVRTC, streams, memory account, breaker) and knows nothing of ONNX;
//! this crate owns the model format and decides what runs where.

use crate::tensor::Tensor;
use prost::Message;
use stagecraft_accel::breaker::{Breaker, Route};
use stagecraft_accel::cuda::net::{GpuNet, Layer, NetSpec};
use stagecraft_accel::cuda::{self, GpuError};
use stagecraft_accel::device::Device;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tract_onnx::pb::{tensor_shape_proto::dimension::Value as DimValue, type_proto, ModelProto, NodeProto};

/// Largest difference from tract allowed on the load-time probe (outputs
/// of the shipped models are O(1); the kernels sum in another order than
/// tract, which moves the last bits only).
pub const PROBE_TOLERANCE: f32 = 1e-3;
/// Consecutive GPU failures that move a model's batches to tract.
pub const BREAKER_FAILURES: u32 = 3;
/// How long they stay there before one batch tries the GPU again.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// Where the repository may run models: decided once per process from the
/// host's device choice (`--device` / `STAGECRAFT_DEVICE`).
#[derive(Debug, Clone)]
pub enum Placement {
    /// Every model on tract, and why.
    Cpu(String),
    /// Supported models on this CUDA engine, the rest on tract.
    Cuda(&'static cuda::Gpu),
}

impl Placement {
    /// The placement for the host's resolved device.
    pub fn current() -> Placement {
        match stagecraft_accel::device::current() {
            Ok(info) if info.device == Device::Cuda => match cuda::engine() {
                Ok(engine) => Placement::Cuda(engine),
                Err(why) => Placement::Cpu(format!("CUDA unavailable: {why}")),
            },
            Ok(info) => Placement::Cpu(info.summary.clone()),
            Err(e) => Placement::Cpu(e.clone()),
        }
    }
}

const FLOAT: i32 = 1;

/// Translates the ONNX model at `path` (see the module docs).
pub fn lower(path: &Path) -> Result<NetSpec, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    lower_bytes(&bytes)
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a tract_onnx::pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str, default: &[i64]) -> Vec<i64> {
    attr(node, name).map_or_else(|| default.to_vec(), |a| a.ints.clone())
}

fn size(v: i64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} is {v}"))
}

/// [`lower`] on the bytes of a model.
pub fn lower_bytes(bytes: &[u8]) -> Result<NetSpec, String> {
    let model = ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
    let graph = model.graph.ok_or("the model has no graph")?;
    let mut constants: HashMap<&str, (Vec<i64>, Vec<f32>)> = HashMap::new();
    for t in &graph.initializer {
        if t.data_type != FLOAT || t.data_location == Some(1) {
            continue; // only fp32 weights stored in the file can be uploaded; used elsewhere, refused below
        }
        let values = if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        constants.insert(&t.name, (t.dims.clone(), values));
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !graph.initializer.iter().any(|t| t.name == i.name)).collect();
    let ([input], [output]) = (inputs.as_slice(), graph.output.as_slice()) else {
        return Err(format!(
            "{} inputs and {} outputs (the CUDA engine runs one of each)",
            inputs.len(),
            graph.output.len()
        ));
    };
    let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        _ => return Err(format!("input '{}' is not a tensor", input.name)),
    };
    let dims = tensor_type.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    let channels = match dims.get(1).and_then(|d| d.value.as_ref()) {
        Some(DimValue::DimValue(c)) if *c > 0 && dims.len() == 4 && tensor_type.elem_type == FLOAT => *c as usize,
        _ => return Err(format!("input '{}' is not fp32 N x C x H x W with a fixed C", input.name)),
    };

    let mut slots: HashMap<String, usize> = HashMap::from([(input.name.clone(), 0)]);
    let mut layers = Vec::new();
    let mut weights: Vec<f32> = Vec::new();
    for node in &graph.node {
        let op = node.op_type.as_str();
        let at = || format!("{op} node '{}'", node.name);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(format!("{}: operator domain '{}' is outside the CUDA op set", at(), node.domain));
        }
        if node.output.len() != 1 {
            return Err(format!("{}: {} outputs", at(), node.output.len()));
        }
        let activation = |ix: usize| -> Result<usize, String> {
            let name = node.input.get(ix).ok_or_else(|| format!("{}: input {ix} missing", at()))?;
            slots.get(name).copied().ok_or_else(|| {
                format!("{}: input '{name}' is a constant or unknown (the CUDA engine takes activations here)", at())
            })
        };
        let out = slots.len();
        let layer = match op {
            "Conv" => {
                let x = activation(0)?;
                let (w_dims, w) = node
                    .input
                    .get(1)
                    .and_then(|n| constants.get(n.as_str()))
                    .ok_or_else(|| format!("{}: the weights are not an fp32 initializer", at()))?;
                let [cout, cin, kh, kw] = w_dims.as_slice() else {
                    return Err(format!("{}: weights of rank {} (2-D convolutions only)", at(), w_dims.len()));
                };
                if attr(node, "group").map_or(1, |a| a.i) != 1 {
                    return Err(format!("{}: grouped convolution", at()));
                }
                if ints(node, "strides", &[1, 1]).iter().any(|&s| s != 1) {
                    return Err(format!("{}: strides other than 1", at()));
                }
                if attr(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
                    return Err(format!("{}: auto_pad (explicit pads only)", at()));
                }
                let pads = ints(node, "pads", &[0, 0, 0, 0]);
                let dil = ints(node, "dilations", &[1, 1]);
                let ([pt, pl, pb, pr], [dh, dw]) = (pads.as_slice(), dil.as_slice()) else {
                    return Err(format!("{}: pads {pads:?} / dilations {dil:?} are not 2-D", at()));
                };
                let kernel_shape = ints(node, "kernel_shape", &[*kh, *kw]);
                if kernel_shape != [*kh, *kw] {
                    return Err(format!("{}: kernel_shape {kernel_shape:?} disagrees with the weights", at()));
                }
                let (cout, cin) = (size(*cout, "cout")?, size(*cin, "cin")?);
                let weight = weights.len();
                weights.extend_from_slice(w);
                let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
                    None => None,
                    Some(b) => {
                        let (_, b) = constants
                            .get(b.as_str())
                            .ok_or_else(|| format!("{}: the bias is not an fp32 initializer", at()))?;
                        if b.len() != cout {
                            return Err(format!("{}: {} bias values for {cout} channels", at(), b.len()));
                        }
                        weights.extend_from_slice(b);
                        Some(weight + w.len())
                    }
                };
                Layer::Conv {
                    input: x,
                    output: out,
                    cin,
                    cout,
                    kernel: [size(*kh, "kh")?, size(*kw, "kw")?],
                    pads: [size(*pt, "pad")?, size(*pl, "pad")?, size(*pb, "pad")?, size(*pr, "pad")?],
                    dilations: [size(*dh, "dilation")?, size(*dw, "dilation")?],
                    weight,
                    bias,
                    relu: false,
                }
            }
            "Relu" => Layer::Relu { input: activation(0)?, output: out },
            "Sigmoid" => Layer::Sigmoid { input: activation(0)?, output: out },
            "Add" => Layer::Add { a: activation(0)?, b: activation(1)?, output: out, relu: false },
            "DepthToSpace" => {
                let block = attr(node, "blocksize").map(|a| a.i).ok_or_else(|| format!("{}: no blocksize", at()))?;
                let crd = match attr(node, "mode").map(|a| a.s.as_slice()) {
                    None | Some(b"DCR") => false,
                    Some(b"CRD") => true,
                    Some(other) => return Err(format!("{}: mode {}", at(), String::from_utf8_lossy(other))),
                };
                Layer::DepthToSpace { input: activation(0)?, output: out, block: size(block, "blocksize")?, crd }
            }
            other => {
                return Err(format!(
                    "{}: operator {other} is outside the CUDA op set (Conv, Relu, Add, Sigmoid, DepthToSpace)",
                    at()
                ))
            }
        };
        slots.insert(node.output[0].clone(), out);
        layers.push(layer);
    }
    let output = *slots.get(&output.name).ok_or_else(|| format!("no node produces the output '{}'", output.name))?;
    let spec = NetSpec {
        slots: slots.len(),
        input: 0,
        output,
        input_channels: channels,
        layers: fuse_relu(layers, output),
        weights,
    };
    spec.check()?;
    // Shapes that only some sizes satisfy (an Add of two different shapes)
    // are refused here, not on the first batch.
    for (h, w) in [(32, 48), (21, 17)] {
        spec.plan(1, h, w).map_err(|e| format!("on a {h}x{w} input: {e}"))?;
    }
    Ok(spec)
}

/// Folds a Relu into the Conv or Add that produces its input when nothing
/// else reads that tensor (`output` is the graph's output slot).
pub fn fuse_relu(layers: Vec<Layer>, output: usize) -> Vec<Layer> {
    let mut reads: HashMap<usize, usize> = HashMap::from([(output, 1)]);
    for l in &layers {
        let read: Vec<usize> = match *l {
            Layer::Conv { input, .. }
            | Layer::Relu { input, .. }
            | Layer::Sigmoid { input, .. }
            | Layer::DepthToSpace { input, .. } => {
                vec![input]
            }
            Layer::Add { a, b, .. } => vec![a, b],
        };
        for s in read {
            *reads.entry(s).or_default() += 1;
        }
    }
    let mut fused: Vec<Layer> = Vec::with_capacity(layers.len());
    for l in layers {
        if let Layer::Relu { input, output: relu_out } = l {
            if reads.get(&input) == Some(&1) {
                if let Some(Layer::Conv { output, relu, .. } | Layer::Add { output, relu, .. }) = fused.last_mut() {
                    if *output == input && !*relu {
                        *output = relu_out;
                        *relu = true;
                        continue;
                    }
                }
            }
        }
        fused.push(l);
    }
    fused
}

/// One model on the GPU (see the module docs).
pub struct GpuPath {
    net: GpuNet,
    guard: Guard,
}

/// The breaker and counters around one model's GPU runs: decides whether a
/// batch goes to the GPU and turns a GPU fault into "run it on tract".
#[derive(Debug)]
pub struct Guard {
    breaker: Breaker,
    batches: AtomicU64,
    fallbacks: AtomicU64,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            breaker: Breaker::new(BREAKER_FAILURES, BREAKER_COOL_DOWN),
            batches: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }
}

impl Guard {
    /// Batches run on the GPU, and batches the GPU failed (re-run on tract).
    pub fn counts(&self) -> (u64, u64) {
        (self.batches.load(Relaxed), self.fallbacks.load(Relaxed))
    }

    /// Runs `gpu` at `now` unless the breaker routes the batch to the CPU;
    /// `None`: run it on tract. Memory short leaves the breaker alone (and
    /// frees a half-open trial); a failure counts towards opening it.
    pub fn run<T>(&self, now: Instant, gpu: impl FnOnce() -> Result<T, GpuError>) -> Option<T> {
        let route = self.breaker.route(now);
        if route == Route::Cpu {
            return None;
        }
        match gpu() {
            Ok(out) => {
                self.breaker.success();
                self.batches.fetch_add(1, Relaxed);
                Some(out)
            }
            Err(GpuError::Busy(why)) => {
                if route == Route::GpuTrial {
                    self.breaker.abandon_trial(now);
                }
                tracing::debug!(%why, "GPU memory short; running this batch on tract");
                None
            }
            Err(GpuError::Failed(why)) => {
                let opened = self.breaker.failure(now);
                self.fallbacks.fetch_add(1, Relaxed);
                tracing::warn!(%why, breaker_opened = opened, "GPU inference failed; running this batch on tract");
                None
            }
        }
    }
}

impl std::fmt::Debug for GpuPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.net)
    }
}

/// A fixed pseudo-random input in [0, 1): the load-time probe.
pub fn probe_input(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Largest absolute difference of two equally long slices (NaN counts as infinite).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| if (x - y).is_nan() { f32::INFINITY } else { (x - y).abs() }).fold(0.0, f32::max)
}

impl GpuPath {
    /// Uploads `spec` to `engine`.
    pub fn load(engine: &'static cuda::Gpu, spec: NetSpec) -> Result<GpuPath, String> {
        Ok(GpuPath { net: engine.load_net(spec)?, guard: Guard::default() })
    }

    pub fn spec(&self) -> &NetSpec {
        self.net.spec()
    }

    /// Batches run on the GPU, and batches the GPU failed (re-run on tract).
    pub fn counts(&self) -> (u64, u64) {
        self.guard.counts()
    }

    /// Runs one batch on the GPU straight, without the breaker (the probe
    /// and the benchmark).
    pub fn run_direct(&self, input: &[f32], n: usize, h: usize, w: usize) -> Result<(Vec<f32>, [usize; 4]), GpuError> {
        self.net.run(input, n, h, w)
    }

    /// Runs `input` (fp32 N x C x H x W) on the GPU unless the breaker says
    /// otherwise; `None`: run it on tract.
    pub fn try_run(&self, input: &Tensor) -> Option<Tensor> {
        let &[n, _, h, w] = input.shape.as_slice() else { return None };
        // A shape the kernels cannot take (e.g. smaller than a kernel) is
        // the input's doing, not the GPU's: tract gives the answer or error.
        if let Err(why) = self.net.spec().plan(n, h, w) {
            tracing::debug!(%why, "batch shape not runnable on the GPU; running it on tract");
            return None;
        }
        let values = input.to_f32()?;
        let (out, shape) = self.guard.run(Instant::now(), || self.net.run(&values, n, h, w))?;
        Some(Tensor::from_f32(String::new(), shape.to_vec(), &out))
    }
}
