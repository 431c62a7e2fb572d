//! The shipped models on every engine side by side in one run, then the
//! batching table: for `sr2x` and `cell_fg` at batch 1 and 8 and sizes
//! 128² and 384² (`--sizes`), the median time of a batch on tract, on ONNX
//! Runtime's CPU provider with 1 and 2 intra-op threads, and on CUDA where
//! there is one (ONNX Runtime's CUDA provider when the library has it, and
//! the five-op engine); GFLOP/s of each (the convolutions' multiply-adds
//! x 2, counted from the graph), and the largest difference from tract's
//! output. Columns of an engine that is not here print `-`, and the header
//! says why.
//!
//! `cargo run --release -p stagecraft-inference --bin bench_models -- --rounds 3 --sizes 128,384 --seconds 3`

use stagecraft_accel::cuda::net::{Layer, NetSpec};
use stagecraft_inference::bench::{self, BatchingArgs};
use stagecraft_inference::engine::CompiledModel;
use stagecraft_inference::gpu::{self, max_abs_diff, probe_input, GpuPath, Placement};
use stagecraft_inference::{ort_engine, EngineChoice, EngineKind, EngineOptions, ModelConfig, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Floating-point operations of one item of `h` x `w` (2 per multiply-add
/// of every convolution; the element-wise ops are noise next to them).
fn flops(spec: &NetSpec, h: usize, w: usize) -> f64 {
    let mut size = vec![(h, w); spec.slots];
    let mut total = 0.0;
    for layer in &spec.layers {
        match *layer {
            Layer::Conv { input, output, cin, cout, kernel, pads, dilations, .. } => {
                let (ih, iw) = size[input];
                let oh = ih + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1);
                let ow = iw + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1);
                size[output] = (oh, ow);
                total += 2.0 * (cout * cin * kernel[0] * kernel[1] * oh * ow) as f64;
            }
            Layer::DepthToSpace { input, output, block, .. } => {
                size[output] = (size[input].0 * block, size[input].1 * block)
            }
            Layer::Relu { input, output } | Layer::Sigmoid { input, output } => size[output] = size[input],
            Layer::Add { a, output, .. } => size[output] = size[a],
        }
    }
    total
}

fn time(rounds: usize, mut f: impl FnMut() -> anyhow::Result<Vec<f32>>) -> anyhow::Result<(f64, Vec<f32>)> {
    let out = f()?; // warm-up, and the output to compare
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(times), out))
}

fn ort_engine_for(onnx: &Path, config: &ModelConfig, threads: usize, placement: &Placement) -> Option<CompiledModel> {
    let mut config = config.clone();
    config.cpu_threads = Some(threads);
    let options = EngineOptions { choice: EngineChoice::Ort, cpus: threads };
    match CompiledModel::load_with(onnx, &config, placement, &options) {
        Ok(e) => Some(e),
        Err(e) => {
            println!("{}: ONNX Runtime ({threads} threads) failed to load: {e:#}", config.name);
            None
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut rounds = 3usize;
    let mut sizes = vec![128usize, 384];
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut batching = BatchingArgs { seconds: 3.0, ..BatchingArgs::default() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => rounds = value.parse()?,
            "--sizes" => sizes = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--models" => dir = value.into(),
            "--seconds" => batching.seconds = value.parse()?,
            "--callers" => batching.callers = value.parse()?,
            other => anyhow::bail!("unknown flag {other} (--rounds --sizes 128,384 --models --seconds --callers)"),
        }
    }
    let rounds = rounds.max(1);
    let rt = ort_engine::runtime();
    match &rt {
        Ok(rt) => println!("ONNX Runtime {} ({}; cuda provider: {})", rt.version, rt.path.display(), rt.has_cuda),
        Err(why) => println!("ONNX Runtime: {why}"),
    }
    let cuda = stagecraft_accel::cuda::engine();
    match &cuda {
        Ok(e) => println!("CUDA: {}", e.summary),
        Err(why) => println!("CUDA: unavailable: {why}"),
    }
    let cpus = EngineOptions::from_env().cpus;
    println!("tract: {cpus} threads; {rounds} rounds per cell, median ms per batch; GFLOP/s in brackets\n");
    println!(
        "{:<8} {:>5} {:>5} {:>16} {:>16} {:>16} {:>16} {:>16} {:>10}",
        "model", "size", "batch", "tract", "ort cpu 1 thr", "ort cpu 2 thr", "ort cuda", "cuda (5-op)", "max|diff|"
    );
    for name in ["sr2x", "cell_fg"] {
        let folder = dir.join(name);
        let config = ModelConfig::load(&folder.join("config.json"), name)?;
        let onnx = folder.join("model.onnx");
        let spec = gpu::lower(&onnx).map_err(anyhow::Error::msg)?;
        let tract = CompiledModel::load(&onnx, &config)?;
        let cpu = Placement::Cpu("benchmark".into());
        let (ort1, ort2) = match &rt {
            Ok(_) => (ort_engine_for(&onnx, &config, 1, &cpu), ort_engine_for(&onnx, &config, 2, &cpu)),
            Err(_) => (None, None),
        };
        let ort_cuda = match (&rt, &cuda) {
            (Ok(rt), Ok(engine)) if rt.has_cuda => {
                ort_engine_for(&onnx, &config, 1, &Placement::Cuda(engine)).filter(|e| e.kind == EngineKind::OrtCuda)
            }
            _ => None,
        };
        let five_op = match &cuda {
            Ok(engine) => Some(GpuPath::load(engine, spec.clone()).map_err(anyhow::Error::msg)?),
            Err(_) => None,
        };
        for &size in &sizes {
            for batch in [1usize, 8] {
                let c = spec.input_channels;
                let values = probe_input(batch * c * size * size, batch as u64);
                let input = [Tensor::from_f32("input", vec![batch, c, size, size], &values)];
                let work = flops(&spec, size, size) * batch as f64;
                let on = |e: &CompiledModel| -> anyhow::Result<Vec<f32>> {
                    Ok(e.run(&input)?[0].to_f32().unwrap_or_default())
                };
                let (tract_ms, want) = time(rounds, || Ok(tract.run_tract(&input)?[0].to_f32().unwrap_or_default()))?;
                let mut diff = 0f32;
                let mut cell = |engine: Option<&CompiledModel>| -> anyhow::Result<String> {
                    let Some(e) = engine else { return Ok("-".into()) };
                    let (ms, got) = time(rounds, || on(e))?;
                    diff = diff.max(max_abs_diff(&got, &want));
                    Ok(format!("{ms:.1} [{:.1}]", work / ms / 1e6))
                };
                let (c1, c2, cc) = (cell(ort1.as_ref())?, cell(ort2.as_ref())?, cell(ort_cuda.as_ref())?);
                let c5 = match &five_op {
                    Some(g) => {
                        let (ms, got) = time(rounds, || {
                            g.run_direct(&values, batch, size, size).map(|r| r.0).map_err(|e| anyhow::anyhow!("{e:?}"))
                        })?;
                        diff = diff.max(max_abs_diff(&got, &want));
                        format!("{ms:.1} [{:.1}]", work / ms / 1e6)
                    }
                    None => "-".into(),
                };
                println!(
                    "{:<8} {:>5} {:>5} {:>16} {:>16} {:>16} {:>16} {:>16} {:>10.1e}",
                    name,
                    format!("{size}²"),
                    batch,
                    format!("{tract_ms:.1} [{:.1}]", work / tract_ms / 1e6),
                    c1,
                    c2,
                    cc,
                    c5,
                    diff
                );
            }
        }
    }
    let mut engines = vec![EngineChoice::Tract];
    if rt.is_ok() {
        engines.push(EngineChoice::Ort);
    }
    let rows = bench::batching(&batching, &engines, cpus).await?;
    bench::print_batching(&batching, &rows);
    Ok(())
}
