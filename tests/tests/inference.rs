//! End to end through the real host: the `infer` test plugin calling the
//! host's `inference` import (stagecraft-inference: tract, dynamic
//! batching) and its `segmentation` import with a foreground model, on
//! models written into a temporary repository.

use serde_json::{json, Value};
use stagecraft_inference::onnx_build;
use stagecraft_inference::Tensor;
use stagecraft_runtime::{InvokeError, InvokeOptions, StageInput};
use std::path::Path;
use std::sync::{Arc, OnceLock};

mod model_host;

use model_host::{assert_close, row, write_mlp, Host, IN, OUT};

fn write_foreground(repo: &Path, name: &str, scale: f32, bias: f32) {
    let config = json!({
        "max_batch": 4, "batch_delay_ms": 0,
        "inputs": [{"name": "image", "type": "fp32", "shape": [1, -1, -1]}],
        "outputs": [{"name": "probability", "type": "fp32", "shape": [1, -1, -1]}],
    });
    onnx_build::write_model(repo, name, &onnx_build::pixel_logistic("image", "probability", scale, bias), &config)
        .unwrap();
}

/// One runtime with a model repository and the `infer` test plugin.
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::start(
            |repo| {
                write_mlp(repo, "mlp", 1, 0);
                write_mlp(repo, "batched", 2, 200);
                write_mlp(repo, "swap", 3, 1);
                // Foreground above mid-gray, and a model that sees no foreground at all.
                write_foreground(repo, "cells", 40.0, -20.0);
                write_foreground(repo, "nothing", 0.0, -5.0);
            },
            &["infer.wasm"],
        )
    })
}

async fn infer(model: &str, shape: &[usize], values: &[f32]) -> Result<Vec<f32>, InvokeError> {
    host().infer_via("infer", model, shape, values).await
}

#[tokio::test]
async fn the_import_returns_what_tract_computes_on_the_same_file() {
    let x: Vec<f32> = (0..2).flat_map(row).collect();
    let got = infer("mlp", &[2, IN], &x).await.unwrap();
    assert_close(&got, &host().tract_direct("mlp", &x));
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
    let calls: Vec<_> =
        (0..8).map(|i| tokio::spawn(async move { (i, infer("batched", &[1, IN], &row(i)).await) })).collect();
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
        Err(InvokeError::InvalidInput(m)) => {
            assert!(m.contains("unknown-model: ") && m.contains("no_such_model"), "{m}")
        }
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
    let old = host().models.infer("swap", vec![Tensor::from_f32("x", vec![1, IN], &row(0))]).await.unwrap()[0]
        .to_f32()
        .unwrap();
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
            if inside(6) || inside(30) {
                220
            } else {
                20
            }
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
    // Two separate squares: at least two cells (the watershed may split one).
    let cells = segment("cells").await.unwrap().metadata["cells"].as_u64().unwrap();
    assert!(cells >= 2, "{cells} cells");
    // The same image, a model that calls nothing foreground: no cells, so
    // the model (not Otsu) decided.
    assert_eq!(segment("nothing").await.unwrap().metadata["cells"], 0);
    match segment("no_such_model").await {
        Err(InvokeError::InvalidInput(m)) => {
            assert!(m.contains("foreground model") && m.contains("no_such_model"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
