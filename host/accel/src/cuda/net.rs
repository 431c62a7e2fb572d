//! Small convolutional networks on the GPU: a [`NetSpec`] (a list of
//! layers over numbered tensors, with all weights in one fp32 array) is
//! uploaded once as a [`GpuNet`] and run on batches with `nn.cu`'s
//! kernels.
//!
//! The op set is what the shipped ONNX models use: Conv (group 1, stride
//! 1, any pads and dilations, bias and ReLU fused), ReLU, Sigmoid, Add
//! (same shape, ReLU fused) and DepthToSpace (DCR or CRD). Translating an
//! ONNX graph into a [`NetSpec`] is the model repository's job
//! (`stagecraft-inference`); this module knows nothing of ONNX.
//!
//! A run is planned on the host first ([`NetSpec::plan`]: every tensor's
//! shape and every kernel launch with its grid and arguments), so the CPU
//! emulation test (tests/emulate) executes exactly the launches the GPU
//! gets. On the GPU: one copy in, every layer on one stream from the
//! engine's pool with all intermediate tensors on the device, one copy out;
//! the job's bytes are reserved with the engine's memory account first.

use super::context::Gpu;
use super::GpuError;
use cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use std::fmt::Write as _;

/// Threads of an element-wise kernel's block.
const BLOCK: u32 = 256;
/// Threads of a convolution block (nn.cu's TILE x TILE).
const CONV_TILE: usize = 16;
/// nn.cu's `MAX_SPAN`: largest (k - 1) * dilation along an axis.
pub const MAX_SPAN: usize = 32;
/// nn.cu's `MAX_TAPS`: largest kh * kw.
pub const MAX_TAPS: usize = 49;
/// nn.cu's `COUT_BLOCK`: output channels per convolution block.
const COUT_BLOCK: usize = 8;

/// One layer; tensors are numbered slots of a [`NetSpec`].
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Weights `[cout, cin, kh, kw]` at `weights[weight..]`, bias `[cout]`
    /// at `weights[bias..]`. `pads`: top, left, bottom, right.
    Conv {
        input: usize,
        output: usize,
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        weight: usize,
        bias: Option<usize>,
        relu: bool,
    },
    Relu {
        input: usize,
        output: usize,
    },
    Sigmoid {
        input: usize,
        output: usize,
    },
    Add {
        a: usize,
        b: usize,
        output: usize,
        relu: bool,
    },
    DepthToSpace {
        input: usize,
        output: usize,
        block: usize,
        crd: bool,
    },
}

/// A network: layers in execution order over `slots` tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSpec {
    pub slots: usize,
    pub input: usize,
    pub output: usize,
    /// Channels of the input (NCHW).
    pub input_channels: usize,
    pub layers: Vec<Layer>,
    pub weights: Vec<f32>,
}

/// A buffer a launch reads or writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Buf {
    Slot(usize),
    /// The weights array from this offset.
    Weights(usize),
}

/// One kernel launch: pointers first, then `int`s, as nn.cu declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub kernel: &'static str,
    pub grid: u32,
    pub block: u32,
    pub bufs: Vec<Buf>,
    pub ints: Vec<i32>,
}

/// A run of a [`NetSpec`] on one input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every slot's NCHW shape (unused slots are all zero).
    pub shapes: Vec<[usize; 4]>,
    pub launches: Vec<Launch>,
}

impl Plan {
    /// Elements of one slot's tensor.
    pub fn elements(&self, slot: usize) -> usize {
        self.shapes[slot].iter().product()
    }

    /// Device bytes of all the run's tensors (each slot is its own buffer).
    pub fn bytes(&self) -> u64 {
        (0..self.shapes.len()).map(|s| self.elements(s) as u64 * 4).sum()
    }

    /// The plan as text for the CPU emulation harness: a `slots` line with
    /// each slot's element count, then one line a launch:
    /// `kernel grid block nbufs (sK|wOFFSET)... nints INT...`.
    pub fn to_text(&self) -> String {
        let mut s = format!("slots {}", self.shapes.len());
        for k in 0..self.shapes.len() {
            let _ = write!(s, " {}", self.elements(k));
        }
        s.push('\n');
        for l in &self.launches {
            let _ = write!(s, "{} {} {} {}", l.kernel, l.grid, l.block, l.bufs.len());
            for b in &l.bufs {
                let _ = match b {
                    Buf::Slot(k) => write!(s, " s{k}"),
                    Buf::Weights(o) => write!(s, " w{o}"),
                };
            }
            let _ = write!(s, " {}", l.ints.len());
            for i in &l.ints {
                let _ = write!(s, " {i}");
            }
            s.push('\n');
        }
        s
    }
}

fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} ({v}) does not fit the kernels' 32-bit indices"))
}

fn blocks(count: usize, block: u32) -> Result<u32, String> {
    u32::try_from(count.div_ceil(block as usize).max(1))
        .map_err(|_| format!("{count} elements is too many for one launch"))
}

impl NetSpec {
    /// Checks what the kernels can run, independent of the input size.
    pub fn check(&self) -> Result<(), String> {
        let slot_ok = |s: usize| s < self.slots;
        if !slot_ok(self.input) || !slot_ok(self.output) || self.input == self.output {
            return Err("input and output must be distinct slots".into());
        }
        for (ix, layer) in self.layers.iter().enumerate() {
            match *layer {
                Layer::Conv { input, output, cin, cout, kernel, dilations, weight, bias, .. } => {
                    if !slot_ok(input) || !slot_ok(output) || input == output {
                        return Err(format!("layer {ix}: bad slots"));
                    }
                    if cin == 0 || cout == 0 || kernel.contains(&0) || dilations.contains(&0) {
                        return Err(format!("layer {ix}: empty convolution"));
                    }
                    if kernel[0] * kernel[1] > MAX_TAPS {
                        return Err(format!(
                            "layer {ix}: a {}x{} kernel has more than {MAX_TAPS} taps",
                            kernel[0], kernel[1]
                        ));
                    }
                    for a in 0..2 {
                        if (kernel[a] - 1) * dilations[a] > MAX_SPAN {
                            return Err(format!("layer {ix}: (kernel - 1) x dilation above {MAX_SPAN}"));
                        }
                    }
                    if weight + cout * cin * kernel[0] * kernel[1] > self.weights.len()
                        || bias.is_some_and(|b| b + cout > self.weights.len())
                    {
                        return Err(format!("layer {ix}: weights out of range"));
                    }
                }
                Layer::Relu { input, output } | Layer::Sigmoid { input, output } => {
                    if !slot_ok(input) || !slot_ok(output) {
                        return Err(format!("layer {ix}: bad slots"));
                    }
                }
                Layer::Add { a, b, output, .. } => {
                    if !slot_ok(a) || !slot_ok(b) || !slot_ok(output) {
                        return Err(format!("layer {ix}: bad slots"));
                    }
                }
                Layer::DepthToSpace { input, output, block, .. } => {
                    if !slot_ok(input) || !slot_ok(output) || input == output || block == 0 {
                        return Err(format!("layer {ix}: bad DepthToSpace"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every tensor's shape and every launch for an `n x C x h x w` input.
    pub fn plan(&self, n: usize, h: usize, w: usize) -> Result<Plan, String> {
        self.check()?;
        let mut shapes = vec![[0usize; 4]; self.slots];
        shapes[self.input] = [n, self.input_channels, h, w];
        let mut launches = Vec::with_capacity(self.layers.len());
        let known = |shapes: &Vec<[usize; 4]>, s: usize, ix: usize| {
            let shape = shapes[s];
            if shape[0] == 0 {
                Err(format!("layer {ix} reads tensor {s} before it is written"))
            } else {
                Ok(shape)
            }
        };
        for (ix, layer) in self.layers.iter().enumerate() {
            match *layer {
                Layer::Conv { input, output, cin, cout, kernel, pads, dilations, weight, bias, relu } => {
                    let [n, c, h, w] = known(&shapes, input, ix)?;
                    if c != cin {
                        return Err(format!("layer {ix}: convolution of {cin} channels given {c}"));
                    }
                    let span = |a: usize| (kernel[a] - 1) * dilations[a];
                    let (oh, ow) =
                        ((h + pads[0] + pads[2]).checked_sub(span(0)), (w + pads[1] + pads[3]).checked_sub(span(1)));
                    let (Some(oh), Some(ow)) = (oh, ow) else {
                        return Err(format!("layer {ix}: a {h}x{w} input is smaller than the kernel"));
                    };
                    if oh == 0 || ow == 0 {
                        return Err(format!("layer {ix}: empty output"));
                    }
                    shapes[output] = [n, cout, oh, ow];
                    let grid = oh.div_ceil(CONV_TILE) * ow.div_ceil(CONV_TILE) * cout.div_ceil(COUT_BLOCK) * n;
                    let ints = [
                        bias.is_some() as usize,
                        n,
                        cin,
                        h,
                        w,
                        cout,
                        oh,
                        ow,
                        kernel[0],
                        kernel[1],
                        pads[0],
                        pads[1],
                        dilations[0],
                        dilations[1],
                        relu as usize,
                    ];
                    launches.push(Launch {
                        kernel: "conv2d",
                        grid: u32::try_from(grid).map_err(|_| format!("layer {ix}: too many blocks"))?,
                        block: (CONV_TILE * CONV_TILE) as u32,
                        bufs: vec![
                            Buf::Slot(input),
                            Buf::Slot(output),
                            Buf::Weights(weight),
                            Buf::Weights(bias.unwrap_or(weight)),
                        ],
                        ints: ints.iter().map(|&v| int(v, "a convolution size")).collect::<Result<_, _>>()?,
                    });
                }
                Layer::Relu { input, output } | Layer::Sigmoid { input, output } => {
                    let shape = known(&shapes, input, ix)?;
                    shapes[output] = shape;
                    let count: usize = shape.iter().product();
                    let kernel = if matches!(layer, Layer::Relu { .. }) { "nn_relu" } else { "nn_sigmoid" };
                    launches.push(Launch {
                        kernel,
                        grid: blocks(count, BLOCK)?,
                        block: BLOCK,
                        bufs: vec![Buf::Slot(input), Buf::Slot(output)],
                        ints: vec![int(count, "a tensor's size")?],
                    });
                }
                Layer::Add { a, b, output, relu } => {
                    let (sa, sb) = (known(&shapes, a, ix)?, known(&shapes, b, ix)?);
                    if sa != sb {
                        return Err(format!(
                            "layer {ix}: Add of shapes {sa:?} and {sb:?} (broadcasting is not supported)"
                        ));
                    }
                    shapes[output] = sa;
                    let count: usize = sa.iter().product();
                    launches.push(Launch {
                        kernel: "nn_add",
                        grid: blocks(count, BLOCK)?,
                        block: BLOCK,
                        bufs: vec![Buf::Slot(a), Buf::Slot(b), Buf::Slot(output)],
                        ints: vec![int(count, "a tensor's size")?, relu as i32],
                    });
                }
                Layer::DepthToSpace { input, output, block, crd } => {
                    let [n, c, h, w] = known(&shapes, input, ix)?;
                    if c % (block * block) != 0 {
                        return Err(format!("layer {ix}: DepthToSpace({block}) of {c} channels"));
                    }
                    shapes[output] = [n, c / (block * block), h * block, w * block];
                    let count = n * c * h * w;
                    int(count, "a tensor's size")?;
                    launches.push(Launch {
                        kernel: "depth_to_space",
                        grid: blocks(count, BLOCK)?,
                        block: BLOCK,
                        bufs: vec![Buf::Slot(input), Buf::Slot(output)],
                        ints: [n, c, h, w, block, crd as usize]
                            .iter()
                            .map(|&v| int(v, "a size"))
                            .collect::<Result<_, _>>()?,
                    });
                }
            }
        }
        if shapes[self.output][0] == 0 {
            return Err("no layer writes the output".into());
        }
        Ok(Plan { shapes, launches })
    }
}

/// A network uploaded to the GPU, ready to run batches (any number of runs
/// at once, each on its own stream).
pub struct GpuNet {
    engine: &'static Gpu,
    spec: NetSpec,
    weights: CudaSlice<f32>,
}

impl std::fmt::Debug for GpuNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuNet({} layers, {} weights on {})",
            self.spec.layers.len(),
            self.spec.weights.len(),
            self.engine.summary
        )
    }
}

impl Gpu {
    /// Checks `spec`, compiles `nn.cu` if not done yet and uploads the
    /// weights once.
    pub fn load_net(&'static self, spec: NetSpec) -> Result<GpuNet, String> {
        spec.check()?;
        self.nn_kernels()?;
        let stream = self.stream();
        let weights = stream.clone_htod(&spec.weights).map_err(|e| format!("CUDA upload of the weights: {e}"))?;
        stream.synchronize().map_err(|e| format!("CUDA upload of the weights: {e}"))?;
        Ok(GpuNet { engine: self, spec, weights })
    }
}

impl GpuNet {
    pub fn spec(&self) -> &NetSpec {
        &self.spec
    }

    /// Runs an `n x C x h x w` batch; returns the output and its shape.
    /// Device memory short: [`GpuError::Busy`]; anything else that fails
    /// (driver error, panic) is [`GpuError::Failed`].
    pub fn run(&self, input: &[f32], n: usize, h: usize, w: usize) -> Result<(Vec<f32>, [usize; 4]), GpuError> {
        let plan = self.spec.plan(n, h, w).map_err(GpuError::Failed)?;
        if input.len() != plan.elements(self.spec.input) {
            return Err(GpuError::Failed(format!(
                "{} input values for shape {:?}",
                input.len(),
                plan.shapes[self.spec.input]
            )));
        }
        let _reservation = self.engine.reserve(plan.bytes() + (1 << 20)).map_err(GpuError::Busy)?;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_plan(&plan, input)));
        match run {
            Ok(Ok(out)) => Ok((out, plan.shapes[self.spec.output])),
            Ok(Err(e)) => Err(GpuError::Failed(e)),
            Err(_) => Err(GpuError::Failed("the CUDA network run panicked".into())),
        }
    }

    fn run_plan(&self, plan: &Plan, input: &[f32]) -> Result<Vec<f32>, String> {
        let kernels = self.engine.nn_kernels()?;
        let stream = self.engine.stream();
        let mut slots: Vec<Option<CudaSlice<f32>>> = Vec::with_capacity(plan.shapes.len());
        for (k, _) in plan.shapes.iter().enumerate() {
            let len = plan.elements(k);
            slots.push(if k == self.spec.input {
                Some(stream.clone_htod(input).map_err(|e| format!("CUDA upload of the input: {e}"))?)
            } else if len == 0 {
                None
            } else {
                // SAFETY: every slot is written in full by the launch that
                // produces it before any launch reads it (plan order).
                Some(unsafe { stream.alloc::<f32>(len) }.map_err(|e| format!("CUDA allocation of tensor {k}: {e}"))?)
            });
        }
        for launch in &plan.launches {
            let views: Vec<CudaView<'_, f32>> = launch
                .bufs
                .iter()
                .map(|b| match *b {
                    Buf::Slot(k) => {
                        slots[k].as_ref().map(|s| s.slice(..)).ok_or_else(|| format!("tensor {k} has no buffer"))
                    }
                    Buf::Weights(offset) => Ok(self.weights.slice(offset..)),
                })
                .collect::<Result<_, String>>()?;
            let f = kernels.get(launch.kernel).ok_or_else(|| format!("kernel {} is not in nn.cu", launch.kernel))?;
            let mut builder = stream.launch_builder(f);
            for v in &views {
                builder.arg(v);
            }
            for i in &launch.ints {
                builder.arg(i);
            }
            let cfg =
                LaunchConfig { grid_dim: (launch.grid, 1, 1), block_dim: (launch.block, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the plan pushes the pointers and ints in the order and
            // of the types nn.cu declares, and sized every slot from the
            // same shapes the kernel indexes with.
            unsafe { builder.launch(cfg) }.map_err(|e| format!("CUDA {}: {e}", launch.kernel))?;
        }
        let output = slots[self.spec.output].as_ref().ok_or("the output has no buffer")?;
        stream.clone_dtoh(output).map_err(|e| format!("CUDA download of the output: {e}"))
    }
}
