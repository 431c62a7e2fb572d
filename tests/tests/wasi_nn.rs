//! End to end through the real host: the `nn-infer` test plugin, written
//! against the standard `wasi:nn@0.2.0-rc-2024-10-28` WIT, loading models
//! by name from a temporary repository (stagecraft-inference: tract,
//! dynamic batching), next to the `infer` plugin that uses the custom
//! `inference` import on the same models.

use serde_json::{json, Value};
use stagecraft_inference::Tensor;
use stagecraft_runtime::{InvokeError, InvokeOptions, Runtime, StageInput, StageOutput};
use std::sync::OnceLock;

mod model_host;

use model_host::{assert_close, row, write_mlp, Host, IN, OUT};

/// One runtime with a model repository, `nn-infer` and `infer`.
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::start(
            |repo| {
                write_mlp(repo, "mlp", 1, 0);
                write_mlp(repo, "batched", 2, 200);
            },
            &["nn-infer.wasm", "infer.wasm"],
        )
    })
}

async fn run(runtime: &Runtime, stage: &str, params: Value) -> Result<StageOutput, InvokeError> {
    runtime.invoke(stage, StageInput::new(vec![], params), InvokeOptions::default()).await
}

/// Runs `model` on one `x` tensor through `stage` (`nn_infer` or `infer`).
async fn infer_via(stage: &str, model: &str, shape: &[usize], values: &[f32]) -> Result<Vec<f32>, InvokeError> {
    host().infer_via(stage, model, shape, values).await
}

async fn nn(model: &str, shape: &[usize], values: &[f32]) -> Result<Vec<f32>, InvokeError> {
    infer_via("nn_infer", model, shape, values).await
}

#[tokio::test]
async fn wasi_nn_returns_what_the_repository_and_tract_compute_on_the_same_input() {
    let x: Vec<f32> = (0..2).flat_map(row).collect();
    let got = nn("mlp", &[2, IN], &x).await.unwrap();

    let repo = host().models.infer("mlp", vec![Tensor::from_f32("x", vec![2, IN], &x)]).await.unwrap();
    assert_eq!(repo[0].shape, vec![2, OUT]);
    assert_close(&got, &repo[0].to_f32().unwrap());

    assert_close(&got, &host().tract_direct("mlp", &x));

    // The same answer as the custom `inference` import gives.
    assert_close(&got, &infer_via("infer", "mlp", &[2, IN], &x).await.unwrap());
}

#[tokio::test]
async fn an_unknown_model_is_not_found_and_the_host_keeps_serving() {
    match nn("no_such_model", &[1, IN], &row(0)).await {
        Err(InvokeError::InvalidInput(m)) => {
            assert!(m.contains("not-found: ") && m.contains("no_such_model") && m.contains("batched, mlp"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(nn("mlp", &[1, IN], &row(0)).await.unwrap().len(), OUT);
}

#[tokio::test]
async fn wrong_shapes_are_invalid_arguments_checked_against_the_config() {
    match nn("mlp", &[1, 7], &row(0)[..7]).await {
        Err(InvokeError::InvalidInput(m)) => {
            assert!(m.contains("invalid-argument: ") && m.contains("expected fp32 [N, 8], got fp32 [1, 7]"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Dimensions whose product overflows are refused before anything is sized.
    let huge = u32::MAX as usize;
    match nn("mlp", &[huge, huge, huge], &row(0)).await {
        Err(InvokeError::InvalidInput(m)) => {
            assert!(m.contains("invalid-argument: ") && m.contains("bytes, got 32"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn graph_load_from_bytes_is_unsupported_and_points_at_load_by_name() {
    let params = json!({"model": "mlp", "load_bytes": [8, 1, 18, 0]});
    match run(&host().runtime, "nn_infer", params).await {
        Err(InvokeError::Unavailable(m)) => {
            assert!(m.contains("unsupported-operation: ") && m.contains("load-by-name") && m.contains("mlp"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_host_without_a_model_repository_says_to_start_with_models() {
    let runtime = Runtime::new(stagecraft_tests::test_config()).unwrap();
    runtime.install_file(stagecraft_tests::test_plugins_dir().join("nn-infer.wasm")).unwrap();
    let params = json!({"model": "mlp", "tensors": [{"name": "x", "shape": [1, IN], "values": row(0)}]});
    match run(&runtime, "nn_infer", params).await {
        Err(InvokeError::Unavailable(m)) => {
            assert!(m.contains("unsupported-operation: ") && m.contains("--models DIR") && m.contains("mlp"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tensors_a_guest_parks_on_the_host_count_against_its_memory_limit() {
    let x = json!([{"name": "x", "shape": [1, IN], "values": row(0)}]);
    // 64 MiB of host-held tensors fit the tests' 256 MiB limit...
    let out = run(&host().runtime, "nn_infer", json!({"model": "mlp", "tensors": x, "hold_mib": 64})).await.unwrap();
    assert_eq!(out.metadata["held_mib"], 64);
    // ...400 MiB do not: the stage is stopped as a memory hog, the host serves on.
    match run(&host().runtime, "nn_infer", json!({"model": "mlp", "tensors": x, "hold_mib": 400})).await {
        Err(InvokeError::MemoryLimit { requested, limit }) => {
            assert!(requested > limit && limit == 256 << 20, "{requested} {limit}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(nn("mlp", &[1, IN], &row(0)).await.unwrap().len(), OUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wasi_nn_calls_are_batched_and_each_gets_its_own_result() {
    let mut direct = Vec::new();
    for i in 0..8 {
        let out = host().models.infer("batched", vec![Tensor::from_f32("x", vec![1, IN], &row(i))]).await.unwrap();
        direct.push(out[0].to_f32().unwrap());
    }
    let before = host().models.stats("batched").unwrap();
    let calls: Vec<_> =
        (0..8).map(|i| tokio::spawn(async move { (i, nn("batched", &[1, IN], &row(i)).await) })).collect();
    for call in calls {
        let (i, got) = call.await.unwrap();
        assert_close(&got.unwrap(), &direct[i]);
    }
    let after = host().models.stats("batched").unwrap();
    let (batches, rows) = (after.batches - before.batches, after.rows - before.rows);
    assert_eq!(rows, 8);
    assert!(batches < 8, "8 concurrent stages within the 200 ms window should share batches ({batches} batches)");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// wasi:nn against the custom `inference` import, one stage call each, the
/// two paths interleaved in one run:
/// `cargo test --workspace --test wasi_nn -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints a table"]
async fn bench_wasi_nn_against_the_inference_import() {
    const CALLS: usize = 200;
    let paths = [("inference import (infer)", "infer"), ("wasi:nn (nn_infer)", "nn_infer")];
    for (_, stage) in paths {
        infer_via(stage, "mlp", &[1, IN], &row(0)).await.unwrap();
    }
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..CALLS {
        for (k, (_, stage)) in paths.iter().enumerate() {
            let started = std::time::Instant::now();
            infer_via(stage, "mlp", &[1, IN], &row(i)).await.expect("bench call");
            times[k].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let [import, nn] = times.map(median);
    println!("{CALLS} sequential stage calls per path, model mlp (8->12->3), 1 row each");
    println!("| path | median per call (ms) | vs import |");
    println!("|---|---:|---:|");
    println!("| {} | {import:.3} | 1.00x |", paths[0].0);
    println!("| {} | {nn:.3} | {:.2}x |", paths[1].0, nn / import);
}
