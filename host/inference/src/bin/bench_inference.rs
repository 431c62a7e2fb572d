//! Dynamic batching against batch size 1, side by side in one run.
//!
//! Writes one MLP (`--width` wide, 3 layers) into a temporary model
//! repository twice: `batched` (max_batch 32, `--delay-ms`) and `single`
//! (max_batch 1), both with `--instances` workers. Then `--callers`
//! concurrent callers each send one row at a time for `--seconds` per
//! mode, and a table prints calls/s, p50/p99 latency and mean batch size.
//!
//! `cargo run --release -p stagecraft-inference --bin bench_inference -- --callers 32 --seconds 5`

use serde_json::json;
use stagecraft_inference::onnx_build::{self, Dense};
use stagecraft_inference::{Models, Tensor};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    callers: usize,
    seconds: f64,
    width: usize,
    delay_ms: f64,
    instances: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { callers: 32, seconds: 5.0, width: 512, delay_ms: 2.0, instances: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--callers" => a.callers = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--width" => a.width = value.parse()?,
            "--delay-ms" => a.delay_ms = value.parse()?,
            "--instances" => a.instances = value.parse()?,
            other => anyhow::bail!("unknown flag {other} (--callers --seconds --width --delay-ms --instances)"),
        }
    }
    Ok(a)
}

struct Row {
    mode: &'static str,
    calls: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
}

async fn measure(models: &Arc<Models>, mode: &'static str, a: &Args) -> anyhow::Result<Row> {
    let width = a.width;
    // Warm up: the first runs allocate tract's scratch buffers.
    for _ in 0..3 {
        models.infer(mode, vec![Tensor::from_f32("x", vec![1, width], &vec![0.5; width])]).await?;
    }
    let before = models.stats(mode).unwrap_or_default();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(a.seconds);
    let tasks: Vec<_> = (0..a.callers)
        .map(|c| {
            let models = models.clone();
            tokio::spawn(async move {
                let x: Vec<f32> = (0..width).map(|j| ((c * width + j) as f32 * 0.01).sin()).collect();
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    models.infer(mode, vec![Tensor::from_f32("x", vec![1, width], &x)]).await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let after = models.stats(mode).unwrap_or_default();
    let (batches, rows) = (after.batches - before.batches, after.rows - before.rows);
    Ok(Row {
        mode,
        calls: latencies.len(),
        per_s: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        mean_batch: rows as f64 / batches.max(1) as f64,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let repo = tempfile::tempdir()?;
    let layers = vec![
        Dense::seeded(a.width, a.width, 1),
        Dense::seeded(a.width, a.width, 2),
        Dense::seeded(a.width, a.width, 3),
    ];
    let onnx = onnx_build::mlp("x", "y", &layers);
    for (name, max_batch, delay) in [("batched", 32, a.delay_ms), ("single", 1, 0.0)] {
        let config = json!({
            "max_batch": max_batch, "instances": a.instances, "batch_delay_ms": delay, "max_queue": 1024,
            "inputs": [{"name": "x", "type": "fp32", "shape": [a.width]}],
            "outputs": [{"name": "y", "type": "fp32", "shape": [a.width]}],
        });
        onnx_build::write_model(repo.path(), name, &onnx, &config)?;
    }
    let (models, report) = Models::open(repo.path())?;
    anyhow::ensure!(report.failed.is_empty(), "models failed to load: {:?}", report.failed);

    println!(
        "MLP {w}x{w} x3 (fp32, tract CPU), {} callers, {} s per mode, {} instance(s), batch delay {} ms",
        a.callers,
        a.seconds,
        a.instances,
        a.delay_ms,
        w = a.width
    );
    let single = measure(&models, "single", &a).await?;
    let batched = measure(&models, "batched", &a).await?;
    println!("{:<22} {:>8} {:>10} {:>9} {:>9} {:>11}", "mode", "calls", "calls/s", "p50 ms", "p99 ms", "mean batch");
    for r in [&single, &batched] {
        let label = if r.mode == "single" { "max_batch 1" } else { "dynamic (max_batch 32)" };
        println!(
            "{:<22} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>11.1}",
            label, r.calls, r.per_s, r.p50_ms, r.p99_ms, r.mean_batch
        );
    }
    println!(
        "ratio dynamic / single: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
        batched.per_s / single.per_s,
        batched.p50_ms / single.p50_ms,
        batched.p99_ms / single.p99_ms
    );
    Ok(())
}
