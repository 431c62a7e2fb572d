//! End to end through the real host: the `infer` test plugin calling the
//! host's `inference` import (stagecraft-inference: tract, dynamic
//! batching) and its `segmentation` import with a foreground model, on
//! models written into a temporary repository.

use serde_json::{json, Value};
use stagecraft_inference::onnx_build::{self, Dense};
use stagecraft_inference::{Models, Tensor};
use stagecraft_runtime::{InvokeError, InvokeOptions, Runtime, StageInput};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tract_onnx::prelude::*;

const IN: usize = 8;
const OUT: usize = 3;

fn write_mlp(repo: &Path, name: &str, seed: u64, delay_ms: u64) {
    let layers = vec![Dense::seeded(IN, 12, seed), Dense::seeded(12, OUT, seed + 1)];
    let config = json!({
        "max_batch": 16, "instances": 1, "batch_delay_ms": delay_ms,
        "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}],
        "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}],
    });
    onnx_build::write_model(repo, name, &onnx_build::mlp("x", "y", &layers), &config).unwrap();
}

fn write_foreground(repo: &Path, name: &str, scale: f32, bias: f32) {
    let config = json!({
        "max_batch": 4, "batch_delay_ms": 0,
        "inputs": [{"name": "image", "type": "fp32", "shape": [1, -1, -1]}],
        "outputs": [{"name": "probability", "type": "fp32", "shape": [1, -1, -1]}],
    });
    onnx_build::write_model(repo, name, &onnx_build::pixel_logistic("image", "probability", scale, bias), &config).unwrap();
}

struct Host {
    runtime: Runtime,
    models: Arc<Models>,
    repo: tempfile::TempDir,
}

/// One runtime with a model repository and the `infer` test plugin.
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let repo = tempfile::tempdir().unwrap();
        write_mlp(repo.path(), "mlp", 1, 0);
        write_mlp(repo.path(), "batched", 2, 200);
        write_mlp(repo.path(), "swap", 3, 1);
        // Foreground above mid-gray, and a model that sees no foreground at all.
        write_foreground(repo.path(), "cells", 40.0, -20.0);
        write_foreground(repo.path(), "nothing", 0.0, -5.0);
        let (models, report) = Models::open(repo.path()).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let mut config = stagecraft_tests::test_config();
        config.models = Some(models.clone());
        let runtime = Runtime::new(config).unwrap();
        runtime.install_file(stagecraft_tests::test_plugins_dir().join("infer.wasm")).unwrap();
        Host { runtime, models, repo }
    })
}

fn row(i: usize) -> Vec<f32> {
    (0..IN).map(|j| ((i * IN + j) as f32 * 0.29).cos()).collect()
}

async fn infer(model: &str, shape: &[usize], values: &[f32]) -> Result<Vec<f32>, InvokeError> {
    let params = json!({"model": model, "tensors": [{"name": "x", "shape": shape, "values": values}]});
    let out = host().runtime.invoke("infer", StageInput::new(vec![], params), InvokeOptions::default()).await?;
    let outputs = &out.metadata["outputs"];
    assert_eq!(outputs[0]["name"], "y");
    assert_eq!(outputs[0]["shape"], json!([shape[0], OUT]));
    Ok(outputs[0]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "got {got:?}, want {want:?}");
    }
}

#[tokio::test]
async fn the_import_returns_what_tract_computes_on_the_same_file() {
    let x: Vec<f32> = (0..2).flat_map(row).collect();
    let got = infer("mlp", &[2, IN], &x).await.unwrap();
    let plan = tract_onnx::onnx()
        .model_for_path(host().repo.path().join("mlp/model.onnx"))
        .unwrap()
        .with_input_fact(0, f32::fact([2, IN]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_ndarray::Array2::from_shape_vec((2, IN), x).unwrap().into_tensor();
    let direct = plan.run(tvec![input.into()]).unwrap();
    let direct: Vec<f32> = direct[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
    assert_close(&got, &direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stages_are_batched_and_each_gets_its_own_result() {
    let expected: Vec<Vec<f32>> = {
        let mut v = Vec::new();
        for i in 0..8 {
            let out = host().models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(i))]).await.unwrap();
            v.push(out[0].to_f32().unwrap());
        }
        v
    };
    // "batched" has mlp's architecture but its own weights: compute its
    // answers directly, outside the sandbox, first.
    let mut direct = Vec::new();
    for i in 0..8 {
        let out = host().models.infer("batched", vec![Tensor::from_f32("x", vec![1, IN], &row(i))]).await.unwrap();
        direct.push(out[0].to_f32().unwrap());
    }
    assert_ne!(direct[0], expected[0], "two models with different weights");
    let before = host().models.stats("batched").unwrap();
    let calls: Vec<_> = (0..8).map(|i| tokio::spawn(async move { (i, infer("batched", &[1, IN], &row(i)).await) })).collect();
    for call in calls {
        let (i, got) = call.await.unwrap();
        assert_close(&got.unwrap(), &direct[i]);
    }
    let after = host().models.stats("batched").unwrap();
    let (batches, rows) = (after.batches - before.batches, after.rows - before.rows);
    assert_eq!(rows, 8);
    assert!(batches < 8, "8 concurrent stages within the 200 ms window should share batches ({batches} batches)");
}

#[tokio::test]
async fn unknown_models_and_wrong_shapes_reach_the_plugin_as_their_variants() {
    match infer("no_such_model", &[1, IN], &row(0)).await {
        Err(InvokeError::InvalidInput(m)) => assert!(m.contains("unknown-model: ") && m.contains("no_such_model"), "{m}"),
        other => panic!("{other:?}"),
    }
    match infer("mlp", &[1, 7], &row(0)[..7]).await {
        Err(InvokeError::InvalidInput(m)) => {
            assert!(m.contains("invalid-input: ") && m.contains("expected fp32 [N, 8], got fp32 [1, 7]"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_swaps_the_model_under_running_stages() {
    let old = host().models.infer("swap", vec![Tensor::from_f32("x", vec![1, IN], &row(0))]).await.unwrap()[0].to_f32().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut calls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    infer("swap", &[1, IN], &row(0)).await.expect("a stage failed during the reload");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    write_mlp(host().repo.path(), "swap", 30, 1);
    // A different config length, so the change shows even with coarse mtimes.
    let config = json!({"max_batch": 16, "batch_delay_ms": 1, "description": "v2",
        "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}], "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}]});
    std::fs::write(host().repo.path().join("swap/config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    let report = tokio::task::spawn_blocking(|| host().models.rescan()).await.unwrap();
    assert_eq!(report.loaded, vec!["swap"]);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        assert!(c.await.unwrap() > 0);
    }
    let new = infer("swap", &[1, IN], &row(0)).await.unwrap();
    assert!((new[0] - old[0]).abs() > 1e-3, "still the old model: {new:?} vs {old:?}");
}

/// Two bright 12x12 squares on a dark 48x32 background.
fn two_squares() -> Value {
    let (w, h) = (48u32, 32u32);
    let pixels: Vec<u8> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let inside = |x0: u32| (x0..x0 + 12).contains(&x) && (10..22).contains(&y);
            if inside(6) || inside(30) { 220 } else { 20 }
        })
        .collect();
    json!({"width": w, "height": h, "pixels": pixels})
}

#[tokio::test]
async fn segmentation_uses_the_named_foreground_model() {
    let segment = |model: &str| {
        let params = json!({"model": model, "segment": two_squares()});
        host().runtime.invoke("infer", StageInput::new(vec![], params), InvokeOptions::default())
    };
    assert_eq!(segment("cells").await.unwrap().metadata["cells"], 2);
    // The same image, a model that calls nothing foreground: no cells, so
    // the model (not Otsu) decided.
    assert_eq!(segment("nothing").await.unwrap().metadata["cells"], 0);
    match segment("no_such_model").await {
        Err(InvokeError::InvalidInput(m)) => assert!(m.contains("foreground model") && m.contains("no_such_model"), "{m}"),
        other => panic!("{other:?}"),
    }
}
