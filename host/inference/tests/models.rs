//! The model repository as a caller sees it: results equal tract's own,
//! concurrent calls batch and get their own rows back, bad inputs and
//! unknown models get the right errors, and reloads swap models while
//! calls keep succeeding.

mod common;

use common::{assert_close, layers, reference, row, IN, OUT};
use serde_json::json;
use stagecraft_inference::onnx_build;
use stagecraft_inference::{InferError, Models, Tensor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tract_onnx::prelude::*;

fn write_mlp(repo: &Path, name: &str, seed: u64, max_batch: usize, delay_ms: u64) {
    let config = json!({
        "name": name, "max_batch": max_batch, "instances": 1, "batch_delay_ms": delay_ms,
        "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}],
        "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}],
    });
    onnx_build::write_model(repo, name, &onnx_build::mlp("x", "y", &layers(seed)), &config).unwrap();
}

#[tokio::test]
async fn outputs_equal_tract_run_directly_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 7, 8, 0);
    let (models, report) = Models::open(dir.path()).unwrap();
    assert_eq!(report.loaded, vec!["mlp"]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let x: Vec<f32> = (0..3).flat_map(row).collect();
    let out = models.infer("mlp", vec![Tensor::from_f32("x", vec![3, IN], &x)]).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "y");
    assert_eq!(out[0].shape, vec![3, OUT]);

    // tract on its own, on the same file, with the shape fixed.
    let plan = tract_onnx::onnx()
        .model_for_path(dir.path().join("mlp/model.onnx"))
        .unwrap()
        .with_input_fact(0, f32::fact([3, IN]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let direct = plan
        .run(tvec![tract_ndarray::Array2::from_shape_vec((3, IN), x.clone()).unwrap().into_tensor().into()])
        .unwrap();
    let direct: Vec<f32> = direct[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
    assert_close(&out[0].to_f32().unwrap(), &direct);

    // And both agree with the arithmetic written out.
    let by_hand: Vec<f32> = (0..3).flat_map(|i| reference(&layers(7), &row(i))).collect();
    assert_close(&direct, &by_hand);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_are_batched_and_each_gets_its_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 3, 16, 100);
    let (models, _) = Models::open(dir.path()).unwrap();
    let calls = (0..12).map(|i| {
        let models = models.clone();
        tokio::spawn(async move { (i, models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(i))]).await) })
    });
    for call in calls.collect::<Vec<_>>() {
        let (i, out) = call.await.unwrap();
        let out = out.unwrap();
        assert_eq!(out[0].shape, vec![1, OUT]);
        assert_close(&out[0].to_f32().unwrap(), &reference(&layers(3), &row(i)));
    }
    let stats = models.stats("mlp").unwrap();
    assert_eq!(stats.completed, 12);
    assert_eq!(stats.rows, 12);
    assert!(stats.batches < 12, "12 concurrent calls within 100 ms should share batches: {stats:?}");
    assert!(stats.mean_batch > 1.0, "{stats:?}");
    assert_eq!(stats.pending, 0);
}

#[tokio::test]
async fn callers_with_several_rows_get_theirs_back() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 5, 8, 50);
    let (models, _) = Models::open(dir.path()).unwrap();
    let a: Vec<f32> = (0..3).flat_map(row).collect();
    let b: Vec<f32> = (3..5).flat_map(row).collect();
    let (ra, rb) = tokio::join!(
        models.infer("mlp", vec![Tensor::from_f32("x", vec![3, IN], &a)]),
        models.infer("mlp", vec![Tensor::from_f32("x", vec![2, IN], &b)]),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra[0].shape, vec![3, OUT]);
    assert_eq!(rb[0].shape, vec![2, OUT]);
    assert_close(&ra[0].to_f32().unwrap(), &(0..3).flat_map(|i| reference(&layers(5), &row(i))).collect::<Vec<_>>());
    assert_close(&rb[0].to_f32().unwrap(), &(3..5).flat_map(|i| reference(&layers(5), &row(i))).collect::<Vec<_>>());
    let stats = models.stats("mlp").unwrap();
    assert_eq!((stats.batches, stats.rows), (1, 5), "both calls fit one batch of 8: {stats:?}");
}

#[tokio::test]
async fn unknown_models_and_bad_inputs_get_their_error_variants() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 1, 4, 0);
    let (models, _) = Models::open(dir.path()).unwrap();

    match models.infer("nope", vec![]).await {
        Err(InferError::UnknownModel(m)) => assert!(m.contains("'nope'") && m.contains("mlp"), "{m}"),
        other => panic!("{other:?}"),
    }
    let wrong_shape = models.infer("mlp", vec![Tensor::from_f32("x", vec![1, 7], &[0.0; 7])]).await;
    match wrong_shape {
        Err(InferError::InvalidInput(m)) => assert!(m.contains("expected fp32 [N, 8], got fp32 [1, 7]"), "{m}"),
        other => panic!("{other:?}"),
    }
    let wrong_type =
        Tensor { name: "x".into(), shape: vec![1, IN], dtype: stagecraft_inference::DType::I32, data: vec![0; 4 * IN] };
    match models.infer("mlp", vec![wrong_type]).await {
        Err(InferError::InvalidInput(m)) => assert!(m.contains("got i32 [1, 8]"), "{m}"),
        other => panic!("{other:?}"),
    }
    match models.infer("mlp", vec![Tensor::from_f32("image", vec![1, IN], &row(0))]).await {
        Err(InferError::InvalidInput(m)) => assert!(m.contains("no input named 'image'"), "{m}"),
        other => panic!("{other:?}"),
    }
    let short = Tensor { data: vec![0; 3], ..Tensor::from_f32("x", vec![1, IN], &row(0)) };
    match models.infer("mlp", vec![short]).await {
        Err(InferError::InvalidInput(m)) => assert!(m.contains("needs 32 bytes, got 3"), "{m}"),
        other => panic!("{other:?}"),
    }
    let too_many: Vec<f32> = (0..5).flat_map(row).collect();
    match models.infer("mlp", vec![Tensor::from_f32("x", vec![5, IN], &too_many)]).await {
        Err(InferError::InvalidInput(m)) => assert!(m.contains("max_batch = 4"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(models.stats("mlp").unwrap().batches, 0, "refused calls never reach the model");
}

#[tokio::test]
async fn a_bad_model_is_reported_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "good", 1, 4, 0);
    std::fs::create_dir(dir.path().join("broken")).unwrap();
    std::fs::write(dir.path().join("broken/model.onnx"), b"not a protobuf").unwrap();
    std::fs::write(dir.path().join("broken/config.json"), br#"{"inputs": [{"name": "x", "type": "fp32", "shape": [1]}], "outputs": [{"name": "y", "type": "fp32", "shape": [1]}]}"#).unwrap();
    std::fs::create_dir(dir.path().join("mismatch")).unwrap();
    std::fs::copy(dir.path().join("good/model.onnx"), dir.path().join("mismatch/model.onnx")).unwrap();
    std::fs::write(dir.path().join("mismatch/config.json"), br#"{"inputs": [{"name": "image", "type": "fp32", "shape": [8]}], "outputs": [{"name": "y", "type": "fp32", "shape": [4]}]}"#).unwrap();

    let (models, report) = Models::open(dir.path()).unwrap();
    assert_eq!(report.loaded, vec!["good"]);
    let failed: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(failed, vec!["broken", "mismatch"]);
    assert!(report.failed[0].1.contains("cannot read ONNX model"), "{}", report.failed[0].1);
    assert!(report.failed[1].1.contains("input 'x' that config.json does not declare"), "{}", report.failed[1].1);
    assert!(models.infer("good", vec![Tensor::from_f32("x", vec![1, IN], &row(0))]).await.is_ok());
    match models.infer("broken", vec![]).await {
        Err(InferError::UnknownModel(m)) => assert!(m.contains("failed to load"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_swaps_the_model_while_calls_keep_succeeding() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 10, 8, 1);
    let (models, _) = Models::open(dir.path()).unwrap();
    let old = reference(&layers(10), &row(0));
    let new = reference(&layers(20), &row(0));

    // Callers hammer the model through the whole reload.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (models, stop, old, new) = (models.clone(), stop.clone(), old.clone(), new.clone());
            tokio::spawn(async move {
                let mut seen_new = false;
                let mut calls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(0))]).await;
                    let y = out.expect("a call failed during the reload")[0].to_f32().unwrap();
                    let is_new = (y[0] - new[0]).abs() < 1e-4;
                    assert!(is_new || (y[0] - old[0]).abs() < 1e-4, "neither model's output: {y:?}");
                    assert!(!seen_new || is_new, "a call went back to the old model after the new one answered");
                    seen_new |= is_new;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Another file size too, so the fingerprint changes even when the
    // file system's mtime granularity is coarse.
    write_mlp(dir.path(), "mlp", 20, 8, 1);
    std::fs::write(
        dir.path().join("mlp/config.json"),
        serde_json::to_vec(&json!({"max_batch": 8, "batch_delay_ms": 1, "description": "second version",
            "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}], "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}]})).unwrap(),
    )
    .unwrap();
    let report = tokio::task::spawn_blocking({
        let models = models.clone();
        move || models.rescan()
    })
    .await
    .unwrap();
    assert_eq!(report.loaded, vec!["mlp"], "{report:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        assert!(c.await.unwrap() > 0);
    }
    let y = models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(0))]).await.unwrap();
    assert_close(&y[0].to_f32().unwrap(), &new);
    assert_eq!(models.list()[0].version, 2);
    assert_eq!(models.stats("mlp").unwrap().failed, 0);

    // A broken new version is refused and the current one keeps serving.
    std::fs::write(dir.path().join("mlp/model.onnx"), b"garbage").unwrap();
    let report = models.rescan();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let y = models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(0))]).await.unwrap();
    assert_close(&y[0].to_f32().unwrap(), &new);
    assert!(models.list()[0].reload_error.as_deref().unwrap().contains("cannot read ONNX model"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 10, 8, 0);
    let (models, _) = Models::open(dir.path()).unwrap();
    let _watcher = models.watch(Duration::from_millis(20));
    write_mlp(dir.path(), "other", 30, 8, 0);
    let want = reference(&layers(30), &row(1));
    let mut answer = None;
    for _ in 0..500 {
        if let Ok(out) = models.infer("other", vec![Tensor::from_f32("x", vec![1, IN], &row(1))]).await {
            answer = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_close(&answer.expect("the watcher never loaded the new model")[0].to_f32().unwrap(), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_go_away_cost_no_work() {
    let dir = tempfile::tempdir().unwrap();
    write_mlp(dir.path(), "mlp", 1, 8, 300);
    let (models, _) = Models::open(dir.path()).unwrap();
    for i in 0..5 {
        // Polled once (queued), then dropped.
        let gone = tokio::time::timeout(
            Duration::ZERO,
            models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(i))]),
        )
        .await;
        assert!(gone.is_err());
    }
    models.infer("mlp", vec![Tensor::from_f32("x", vec![1, IN], &row(9))]).await.unwrap();
    let stats = models.stats("mlp").unwrap();
    assert_eq!((stats.cancelled, stats.completed, stats.rows), (5, 1, 1), "{stats:?}");
    assert_eq!(stats.pending, 0);
}

/// The repository's shipped models (`models/`, written by
/// scripts/make-models.py) load and run; skipped where they are absent.
#[tokio::test]
async fn the_shipped_models_load_and_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    if !dir.join("sr2x/model.onnx").is_file() {
        eprintln!("no shipped models in {}; skipped", dir.display());
        return;
    }
    let (models, report) = Models::open(&dir).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let image = Tensor::from_f32("input", vec![1, 3, 16, 20], &vec![0.5; 3 * 16 * 20]);
    let out = models.infer("sr2x", vec![image]).await.unwrap();
    assert_eq!(out[0].shape, vec![1, 3, 32, 40]);
    let gray = Tensor::from_f32("input", vec![1, 1, 24, 24], &vec![0.2; 24 * 24]);
    let out = models.infer("cell_fg", vec![gray]).await.unwrap();
    assert_eq!(out[0].shape, vec![1, 1, 24, 24]);
    assert!(out[0].to_f32().unwrap().iter().all(|p| (0.0..=1.0).contains(p)));
}
