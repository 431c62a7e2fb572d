//! The batching benchmark both bench binaries print (`bench_inference`
//! alone, `bench_models` after its per-model table): one MLP (`width` wide,
//! 3 layers) written into a temporary repository twice, `single`
//! (max_batch 1) and `batched` (max_batch 32, preferred batch sizes, a
//! queue delay), both with `instances` workers on the same engine; then
//! `callers` concurrent callers each send one row at a time for `seconds`
//! per mode. Not a test: it measures, it asserts nothing.

use crate::engine::{EngineChoice, EngineOptions};
use crate::gpu::Placement;
use crate::onnx_build::{self, Dense};
use crate::{Models, Tensor};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BatchingArgs {
    pub callers: usize,
    pub seconds: f64,
    pub width: usize,
    pub delay_ms: f64,
    pub instances: usize,
    /// Preferred batch sizes of the batched mode; empty: max_batch / instances.
    pub preferred: Vec<usize>,
}

impl Default for BatchingArgs {
    fn default() -> Self {
        BatchingArgs { callers: 32, seconds: 5.0, width: 512, delay_ms: 2.0, instances: 2, preferred: Vec::new() }
    }
}

/// One mode's result.
#[derive(Debug, Clone)]
pub struct Row {
    pub mode: String,
    pub engine: &'static str,
    pub calls: usize,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_batch: f64,
}

const MAX_BATCH: usize = 32;

async fn measure(models: &Arc<Models>, name: &str, a: &BatchingArgs) -> anyhow::Result<Row> {
    let width = a.width;
    // Warm up: the first runs allocate the engines' scratch buffers.
    for _ in 0..5 {
        models.infer(name, vec![Tensor::from_f32("x", vec![1, width], &vec![0.5; width])]).await?;
    }
    let before = models.stats(name).unwrap_or_default();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(a.seconds);
    let tasks: Vec<_> = (0..a.callers)
        .map(|c| {
            let (models, name) = (models.clone(), name.to_owned());
            tokio::spawn(async move {
                let x: Vec<f32> = (0..width).map(|j| ((c * width + j) as f32 * 0.01).sin()).collect();
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    models.infer(&name, vec![Tensor::from_f32("x", vec![1, width], &x)]).await?;
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
    let after = models.stats(name).unwrap_or_default();
    let (batches, rows) = (after.batches - before.batches, after.rows - before.rows);
    let info = models.list().into_iter().find(|m| m.name == name);
    Ok(Row {
        mode: String::new(),
        engine: info.map_or("?", |m| m.engine_kind),
        calls: latencies.len(),
        per_s: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        mean_batch: rows as f64 / batches.max(1) as f64,
    })
}

/// Measures max_batch 1 against dynamic batching on each engine in
/// `choices` (tract, ONNX Runtime), in that order, in one run.
pub async fn batching(a: &BatchingArgs, choices: &[EngineChoice], cpus: usize) -> anyhow::Result<Vec<Row>> {
    let layers: Vec<Dense> = (1..=3).map(|seed| Dense::seeded(a.width, a.width, seed)).collect();
    let onnx = onnx_build::mlp("x", "y", &layers);
    let preferred =
        if a.preferred.is_empty() { vec![(MAX_BATCH / a.instances.max(1)).max(1)] } else { a.preferred.clone() };
    let mut rows = Vec::new();
    for &choice in choices {
        let repo = tempfile::tempdir()?;
        for (name, max_batch, delay, pref) in
            [("single", 1, 0.0, vec![]), ("batched", MAX_BATCH, a.delay_ms, preferred.clone())]
        {
            let config = json!({
                "max_batch": max_batch, "instances": a.instances, "batch_delay_ms": delay, "max_queue": 1024,
                "preferred_batch_size": pref,
                "inputs": [{"name": "x", "type": "fp32", "shape": [a.width]}],
                "outputs": [{"name": "y", "type": "fp32", "shape": [a.width]}],
            });
            onnx_build::write_model(repo.path(), name, &onnx, &config)?;
        }
        let options = EngineOptions { choice, cpus };
        let (models, report) = Models::open_with(repo.path(), Placement::Cpu("benchmark".into()), options)?;
        anyhow::ensure!(report.failed.is_empty(), "models failed to load: {:?}", report.failed);
        let mut single = measure(&models, "single", a).await?;
        single.mode = format!("max_batch 1, {} inst", a.instances);
        let mut batched = measure(&models, "batched", a).await?;
        batched.mode = format!("dynamic 32, pref {preferred:?}, {} ms, {} inst", a.delay_ms, a.instances);
        rows.push(single);
        rows.push(batched);
    }
    Ok(rows)
}

/// Prints [`batching`]'s rows and each engine's ratios.
pub fn print_batching(a: &BatchingArgs, rows: &[Row]) {
    println!(
        "\nBatching: MLP {w}x{w} x3 (fp32), {} callers sending one row each, {} s per mode",
        a.callers,
        a.seconds,
        w = a.width
    );
    println!(
        "{:<17} {:<40} {:>8} {:>9} {:>8} {:>8} {:>8} {:>10}",
        "engine", "mode", "calls", "calls/s", "p50 ms", "p95 ms", "p99 ms", "mean batch"
    );
    for r in rows {
        println!(
            "{:<17} {:<40} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>10.1}",
            r.engine, r.mode, r.calls, r.per_s, r.p50_ms, r.p95_ms, r.p99_ms, r.mean_batch
        );
    }
    for pair in rows.chunks(2) {
        if let [single, batched] = pair {
            println!(
                "{}: dynamic / max_batch 1: throughput {:.2}x, p50 {:.2}x, p95 {:.2}x",
                batched.engine,
                batched.per_s / single.per_s,
                batched.p50_ms / single.p50_ms,
                batched.p95_ms / single.p95_ms
            );
        }
    }
}
