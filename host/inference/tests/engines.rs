//! The repository on each engine: tract forced, and ONNX Runtime when its
//! library is present (scripts/setup-ort installs it; CI runs it). The same
//! calls must give the arithmetic written out by hand on both, the listing
//! must name the engine, and the batcher's preferred sizes and its split
//! over instances must show in its counters.

mod common;

use common::{assert_close, layers, reference, row, IN, OUT};
use serde_json::json;
use stagecraft_inference::engine::CompiledModel;
use stagecraft_inference::gpu::{max_abs_diff, Placement};
use stagecraft_inference::onnx_build;
use stagecraft_inference::{ort_engine, EngineChoice, EngineOptions, InferError, ModelConfig, Models, Tensor};
use std::path::Path;

fn write_mlp(repo: &Path, name: &str, extra: serde_json::Value) {
    let mut config = json!({
        "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}],
        "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}],
    });
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    onnx_build::write_model(repo, name, &onnx_build::mlp("x", "y", &layers(3)), &config).unwrap();
}

/// The engines to test here: tract always, ONNX Runtime when it loads.
fn engines() -> Vec<(EngineChoice, &'static str)> {
    let mut list = vec![(EngineChoice::Tract, "tract")];
    match ort_engine::runtime() {
        Ok(rt) => {
            eprintln!("ONNX Runtime {} from {}", rt.version, rt.path.display());
            list.push((EngineChoice::Ort, "onnxruntime-cpu"));
        }
        Err(why) => eprintln!("SKIPPED the ONNX Runtime half: {why}"),
    }
    list
}

fn open(dir: &Path, choice: EngineChoice) -> std::sync::Arc<Models> {
    let (models, report) =
        Models::open_with(dir, Placement::Cpu("tests".into()), EngineOptions { choice, cpus: 2 }).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    models
}

/// `n` concurrent one-row calls of `mlp`, rows 0 to n-1.
fn spawn_rows(
    models: &std::sync::Arc<Models>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Vec<Tensor>, InferError>>> {
    (0..n)
        .map(|i| {
            let models = models.clone();
            tokio::spawn(async move { models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(i))]).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_engine_gives_the_arithmetic_and_says_it_runs_the_model() {
    for (choice, kind) in engines() {
        let dir = tempfile::tempdir().unwrap();
        write_mlp(dir.path(), "mlp", json!({"max_batch": 8, "instances": 2, "batch_delay_ms": 20}));
        let models = open(dir.path(), choice);
        let info = &models.list()[0];
        assert_eq!(info.engine_kind, kind, "{}", info.engine);
        if choice == EngineChoice::Ort {
            assert!(info.engine.contains("probe vs tract: max abs diff"), "{}", info.engine);
            assert!(info.engine.contains("1 thread(s) per instance"), "2 cpus / 2 instances: {}", info.engine);
        }
        // Concurrent one-row callers and one three-row caller, batched together.
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let models = models.clone();
                tokio::spawn(async move {
                    let rows = if i == 0 { 3 } else { 1 };
                    let x: Vec<f32> = (i * 10..i * 10 + rows).flat_map(row).collect();
                    (i, rows, models.infer("mlp", vec![Tensor::from_f32("x", vec![rows, IN], &x)]).await)
                })
            })
            .collect();
        for call in calls {
            let (i, rows, out) = call.await.unwrap();
            let out = out.unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(out[0].shape, vec![rows, OUT]);
            let want: Vec<f32> = (i * 10..i * 10 + rows).flat_map(|r| reference(&layers(3), &row(r))).collect();
            assert_close(&out[0].to_f32().unwrap(), &want);
        }
        let stats = models.stats("mlp").unwrap();
        assert_eq!((stats.completed, stats.rows, stats.failed), (6, 8, 0), "{kind}: {stats:?}");
        // Bad input is refused before any engine sees it, on both.
        match models.infer("mlp", vec![Tensor::from_f32("x", vec![1, 7], &[0.0; 7])]).await {
            Err(InferError::InvalidInput(m)) => assert!(m.contains("expected fp32 [N, 8]"), "{m}"),
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preferred_batch_size_is_sent_without_waiting_out_the_delay() {
    for (choice, kind) in engines() {
        let dir = tempfile::tempdir().unwrap();
        // The delay is past the deadline: only the preferred size can answer in time.
        write_mlp(
            dir.path(),
            "mlp",
            json!({"max_batch": 16, "preferred_batch_size": [4], "batch_delay_ms": 9000, "timeout_ms": 3000}),
        );
        let models = open(dir.path(), choice);
        let calls = spawn_rows(&models, 4);
        for call in calls {
            call.await.unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        let stats = models.stats("mlp").unwrap();
        assert_eq!((stats.batches, stats.rows, stats.timed_out), (1, 4, 0), "{kind}: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_is_split_over_idle_instances() {
    for instances in [1usize, 2] {
        let dir = tempfile::tempdir().unwrap();
        write_mlp(dir.path(), "mlp", json!({"max_batch": 16, "instances": instances, "batch_delay_ms": 2000}));
        let models = open(dir.path(), EngineChoice::Tract);
        let calls = spawn_rows(&models, 16);
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let stats = models.stats("mlp").unwrap();
        assert_eq!(stats.rows, 16);
        if instances == 1 {
            assert_eq!(stats.batches, 1, "one instance takes the full batch: {stats:?}");
        } else {
            // Two idle workers: the first takes half, so at least two batches ran.
            assert!(stats.batches >= 2 && stats.mean_batch <= 8.0, "{stats:?}");
        }
    }
}

#[tokio::test]
async fn a_file_that_fixes_batch_1_still_batches_on_each_engine() {
    for (choice, kind) in engines() {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({"max_batch": 8, "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}],
            "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}]});
        onnx_build::write_model(dir.path(), "mlp", &onnx_build::mlp_with_batch("x", "y", &layers(3), 1), &config)
            .unwrap();
        let models = open(dir.path(), choice);
        assert_eq!(models.list()[0].engine_kind, kind);
        let x: Vec<f32> = (0..3).flat_map(row).collect();
        let out = models.infer("mlp", vec![Tensor::from_f32("x", vec![3, IN], &x)]).await.unwrap();
        assert_eq!(out[0].shape, vec![3, OUT]);
        let want: Vec<f32> = (0..3).flat_map(|r| reference(&layers(3), &row(r))).collect();
        assert_close(&out[0].to_f32().unwrap(), &want);
    }
}

/// ONNX Runtime against tract on the shipped models, at sizes off any tile.
#[test]
fn onnx_runtime_agrees_with_tract_on_the_shipped_models() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    if let Err(why) = ort_engine::runtime() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let options = EngineOptions { choice: EngineChoice::Ort, cpus: 2 };
    for (name, c) in [("sr2x", 3), ("cell_fg", 1)] {
        let config = ModelConfig::load(&dir.join(name).join("config.json"), name).unwrap();
        let engine = CompiledModel::load_with(
            &dir.join(name).join("model.onnx"),
            &config,
            &Placement::Cpu("test".into()),
            &options,
        )
        .unwrap();
        assert_eq!(engine.kind.as_str(), "onnxruntime-cpu", "{}", engine.runs_on);
        let n = 2 * c * 37 * 45;
        let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin() * 0.5 + 0.5).collect();
        let input = [Tensor::from_f32("input", vec![2, c, 37, 45], &x)];
        let got = engine.run(&input).unwrap();
        let want = engine.run_tract(&input).unwrap();
        assert_eq!(got[0].shape, want[0].shape);
        let diff = max_abs_diff(&got[0].to_f32().unwrap(), &want[0].to_f32().unwrap());
        eprintln!("{name}: ONNX Runtime vs tract max abs diff {diff:.1e}");
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}
