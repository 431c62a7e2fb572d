//! The shipped models on tract (CPU) and on CUDA side by side in one run:
//! for `sr2x` and `cell_fg` at batch 1 and 8, the median time of a batch
//! on each engine, items per second, the speed-up, and the largest
//! difference between the two outputs. Without CUDA the CUDA columns say
//! why they are empty.
//!
//! `cargo run --release -p stagecraft-inference --bin bench_models -- --rounds 10 --size 256`

use stagecraft_inference::engine::Engine;
use stagecraft_inference::gpu::{self, max_abs_diff, probe_input, GpuPath};
use stagecraft_inference::{ModelConfig, Tensor};
use std::path::PathBuf;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let (mut rounds, mut size, mut dir) =
        (10usize, 256usize, PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => rounds = value.parse()?,
            "--size" => size = value.parse()?,
            "--models" => dir = value.into(),
            other => anyhow::bail!("unknown flag {other} (--rounds --size --models)"),
        }
    }
    let rounds = rounds.max(1);
    let cuda = stagecraft_accel::cuda::engine();
    match &cuda {
        Ok(e) => println!("CUDA: {}", e.summary),
        Err(why) => println!("CUDA: unavailable: {why}"),
    }
    println!(
        "tract: {} threads; input {size}x{size}; {rounds} rounds per cell, median\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<8} {:>5} {:>12} {:>12} {:>12} {:>12} {:>8} {:>12}",
        "model", "batch", "tract ms", "tract img/s", "cuda ms", "cuda img/s", "speedup", "max |diff|"
    );
    for name in ["sr2x", "cell_fg"] {
        let folder = dir.join(name);
        let config = ModelConfig::load(&folder.join("config.json"), name)?;
        let onnx = folder.join("model.onnx");
        let tract = Engine::load(&onnx, &config)?;
        let gpu = match &cuda {
            Ok(engine) => Some(
                GpuPath::load(engine, gpu::lower(&onnx).map_err(anyhow::Error::msg)?).map_err(anyhow::Error::msg)?,
            ),
            Err(_) => None,
        };
        for batch in [1usize, 8] {
            let c = gpu::lower(&onnx).map_err(anyhow::Error::msg)?.input_channels;
            let values = probe_input(batch * c * size * size, batch as u64);
            let input = [Tensor::from_f32("input", vec![batch, c, size, size], &values)];
            let want = tract.run_cpu(&input)?; // warm-up
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                tract.run_cpu(&input)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let tract_ms = median(times);
            let (cuda_ms, diff) = match &gpu {
                Some(g) => {
                    let (got, _) = g.run_direct(&values, batch, size, size).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    let diff = max_abs_diff(&got, &want[0].to_f32().unwrap_or_default());
                    let mut times = Vec::with_capacity(rounds);
                    for _ in 0..rounds {
                        let t = Instant::now();
                        g.run_direct(&values, batch, size, size).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    (Some(median(times)), Some(diff))
                }
                None => (None, None),
            };
            let per_s = |ms: f64| batch as f64 / ms * 1e3;
            let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "-".to_owned(), f);
            println!(
                "{:<8} {:>5} {:>12.2} {:>12.1} {:>12} {:>12} {:>8} {:>12}",
                name,
                batch,
                tract_ms,
                per_s(tract_ms),
                opt(cuda_ms, &|v| format!("{v:.2}")),
                opt(cuda_ms, &|v| format!("{:.1}", per_s(v))),
                opt(cuda_ms, &|v| format!("{:.1}x", tract_ms / v)),
                opt(diff.map(f64::from), &|v| format!("{v:.1e}")),
            );
        }
    }
    Ok(())
}
