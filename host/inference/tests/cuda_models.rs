//! The GPU engine against tract on the shipped models (`models/sr2x`,
//! `models/cell_fg`).
//!
//! - Everywhere with g++: `nn.cu` runs under the CPU shim
//!   (host/accel/tests/emulate/nn_harness.cpp), executing the exact launch
//!   plan `GpuNet::run` sends a GPU, on the models' real weights and a few
//!   inputs; the output must match tract's within [`TOLERANCE`].
//! - With CUDA: the same comparison on the GPU, through `Models` (the
//!   batcher, the breaker), and `stagecraft models` says `cuda`.
//! - Without CUDA: `Models` on `auto` puts every model on tract, says why,
//!   and inference works.

use stagecraft_accel::cuda::net::Layer;
use stagecraft_inference::engine::CompiledModel;
use stagecraft_inference::gpu::{self, max_abs_diff, probe_input, Placement};
use stagecraft_inference::{ModelConfig, Models, Tensor};
use std::path::{Path, PathBuf};

/// Largest absolute difference from tract allowed (outputs are O(1): sr2x
/// an image in about [0, 1], cell_fg a probability). The kernels sum in
/// another order than tract's matrix products, so the last bits differ.
const TOLERANCE: f32 = 1e-5;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn tract(name: &str) -> CompiledModel {
    let dir = models_dir().join(name);
    let config = ModelConfig::load(&dir.join("config.json"), name).unwrap();
    CompiledModel::load(&dir.join("model.onnx"), &config).unwrap()
}

fn write_f32(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

#[test]
fn shipped_models_lower_to_the_cuda_op_set_with_relu_fused() {
    for name in ["sr2x", "cell_fg"] {
        let spec = gpu::lower(&models_dir().join(name).join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let layers: Vec<String> =
            spec.layers.iter().map(|l| format!("{l:?}").split([' ', '{']).next().unwrap().to_owned()).collect();
        eprintln!("{name}: {} layers: {}", layers.len(), layers.join(" "));
        assert!(layers.iter().filter(|l| *l == "Conv").count() >= 4, "{name}: {layers:?}");
        assert!(
            !layers.contains(&"Relu".to_owned()),
            "{name}: every Relu follows a Conv or Add and is fused: {layers:?}"
        );
    }
}

#[test]
fn nn_kernels_under_cpu_emulation_match_tract_on_the_shipped_models() {
    if std::process::Command::new("g++").arg("--version").output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED CPU emulation of nn.cu: g++ not found");
        return;
    }
    let emulate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../accel/tests/emulate");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("nn_harness");
    let build = std::process::Command::new("g++")
        .args(["-O2", "-std=c++20", "-pthread", "-o"])
        .arg(&exe)
        .arg(emulate.join("nn_harness.cpp"))
        .output()
        .unwrap();
    assert!(build.status.success(), "g++: {}", String::from_utf8_lossy(&build.stderr));

    // Sizes that are no multiple of the 16-pixel tile, batch 1 and 3.
    for (name, n, h, w) in [("sr2x", 1, 20, 28), ("sr2x", 3, 17, 9), ("cell_fg", 1, 40, 33), ("cell_fg", 3, 18, 21)] {
        let spec = gpu::lower(&models_dir().join(name).join("model.onnx")).unwrap();
        let plan = spec.plan(n, h, w).unwrap();
        let input = probe_input(n * spec.input_channels * h * w, (n * h * w) as u64);
        let run = dir.path().join(format!("{name}-{n}"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("plan.txt"), plan.to_text()).unwrap();
        write_f32(&run.join("weights.f32"), &spec.weights);
        write_f32(&run.join("input.f32"), &input);
        let out = std::process::Command::new(&exe)
            .arg(&run)
            .arg(spec.input.to_string())
            .arg(spec.output.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<f32> = std::fs::read(run.join("output.f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();

        let shape = vec![n, spec.input_channels, h, w];
        let want = tract(name).run_cpu(&[Tensor::from_f32("input", shape, &input)]).unwrap();
        assert_eq!(want[0].shape, plan.shapes[spec.output].to_vec(), "{name}: output shape");
        let want = want[0].to_f32().unwrap();
        assert_eq!(got.len(), want.len());
        let diff = max_abs_diff(&got, &want);
        let range = want.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        eprintln!(
            "{name} {n}x{}x{h}x{w}: {} launches, emulated nn.cu vs tract: max abs diff {diff:.2e} (outputs in [{:.3}, {:.3}])",
            spec.input_channels,
            plan.launches.len(),
            range.0,
            range.1
        );
        assert!(diff <= TOLERANCE, "{name}: max abs diff {diff:e} above {TOLERANCE:e}");
    }
}

#[test]
fn models_run_on_cuda_when_there_is_one_else_on_the_cpu_with_the_reason() {
    let placement = Placement::current();
    let (models, report) = Models::open_on(models_dir(), placement.clone()).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let list = models.list();
    for m in &list {
        eprintln!("{}: {}", m.name, m.engine);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A batch of 2 through the repository (the batcher, the engine's
    // choice of device), compared with tract directly.
    for name in ["sr2x", "cell_fg"] {
        let c = if name == "sr2x" { 3 } else { 1 };
        let values = probe_input(2 * c * 24 * 40, 3);
        let input = Tensor::from_f32("input", vec![2, c, 24, 40], &values);
        let got = rt.block_on(models.infer(name, vec![input.clone()])).unwrap();
        let want = tract(name).run_cpu(&[input]).unwrap();
        assert_eq!(got[0].shape, want[0].shape);
        let diff = max_abs_diff(&got[0].to_f32().unwrap(), &want[0].to_f32().unwrap());
        eprintln!("{name} through Models: max abs diff vs tract {diff:.2e}");
        assert!(diff <= TOLERANCE, "{name}: {diff:e}");
    }
    let list = models.list();
    match placement {
        Placement::Cpu(why) => {
            for m in &list {
                // ONNX Runtime's CPU provider when its library is there, else tract.
                let on_cpu = m.engine.starts_with("tract (cpu)") || m.engine.starts_with("onnxruntime");
                assert!(on_cpu && m.engine.contains(&why), "{}: {}", m.name, m.engine);
                assert_eq!(m.gpu_batches, 0);
            }
            eprintln!("checked without CUDA: every model on the CPU ({why})");
        }
        Placement::Cuda(engine) => {
            for m in list.iter().filter(|m| m.name == "sr2x" || m.name == "cell_fg") {
                assert!(m.engine.starts_with("cuda"), "{}: {}", m.name, m.engine);
                assert!(m.gpu_batches >= 1 && m.gpu_fallbacks == 0, "{}: {} GPU batches", m.name, m.gpu_batches);
            }
            eprintln!("checked on {}: the shipped models run on CUDA", engine.summary);
        }
    }
}

#[test]
fn a_graph_outside_the_op_set_says_which_node() {
    let onnx = stagecraft_inference::onnx_build::pixel_logistic("input", "output", 2.0, -1.0);
    let why = gpu::lower_bytes(&onnx).unwrap_err();
    assert!(why.contains("operator Mul is outside the CUDA op set"), "{why}");
}

#[test]
fn relu_fuses_into_the_producer_only_when_nothing_else_reads_it() {
    let conv = |input, output| Layer::Conv {
        input,
        output,
        cin: 1,
        cout: 1,
        kernel: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        weight: 0,
        bias: None,
        relu: false,
    };
    // 0 -conv-> 1 -relu-> 2 -conv-> 3 -relu-> 4, and 3 is read by the Add too.
    let layers = vec![
        conv(0, 1),
        Layer::Relu { input: 1, output: 2 },
        conv(2, 3),
        Layer::Relu { input: 3, output: 4 },
        Layer::Add { a: 3, b: 4, output: 5, relu: false },
    ];
    let fused = gpu::fuse_relu(layers, 5);
    assert_eq!(fused.len(), 4);
    assert!(matches!(fused[0], Layer::Conv { output: 2, relu: true, .. }));
    assert!(matches!(fused[1], Layer::Conv { output: 3, relu: false, .. }));
}

#[test]
fn gpu_faults_become_tract_runs_and_open_the_breaker() {
    use stagecraft_accel::cuda::GpuError;
    use std::time::{Duration, Instant};
    let guard = gpu::Guard::default();
    let t = Instant::now();
    assert_eq!(guard.run(t, || Ok::<_, GpuError>(1)), Some(1));
    // Memory short: tract runs it, the breaker does not count it.
    for _ in 0..5 {
        assert_eq!(guard.run(t, || Err::<u8, _>(GpuError::Busy("full".into()))), None);
    }
    assert_eq!(guard.run(t, || Ok::<_, GpuError>(2)), Some(2));
    // Failures: each batch falls back; the third in a row opens the
    // breaker, after which the GPU is not even tried until the cool-down.
    for _ in 0..gpu::BREAKER_FAILURES {
        assert_eq!(guard.run(t, || Err::<u8, _>(GpuError::Failed("launch failed".into()))), None);
    }
    let mut tried = false;
    assert_eq!(
        guard.run(t + Duration::from_secs(1), || {
            tried = true;
            Ok::<_, GpuError>(3)
        }),
        None
    );
    assert!(!tried, "an open breaker keeps batches off the GPU");
    assert_eq!(guard.counts(), (2, u64::from(gpu::BREAKER_FAILURES)));
    // After the cool-down one trial batch goes to the GPU and closes it.
    assert_eq!(guard.run(t + gpu::BREAKER_COOL_DOWN, || Ok::<_, GpuError>(4)), Some(4));
    assert_eq!(guard.run(t + gpu::BREAKER_COOL_DOWN, || Ok::<_, GpuError>(5)), Some(5));
}
