//! Without an ONNX Runtime library (here: `--ort-lib` naming a file that is
//! not there, which wins over every other place), models run on tract and
//! say why; requiring ONNX Runtime makes the load fail with that reason.
//! Its own test binary: the library is loaded (or not) once per process.

use serde_json::json;
use stagecraft_inference::gpu::Placement;
use stagecraft_inference::onnx_build::{self, Dense};
use stagecraft_inference::{ort_engine, EngineChoice, EngineOptions, Models, Tensor};

#[tokio::test]
async fn no_library_means_tract_with_the_reason_and_nothing_else_touches_ort() {
    assert!(ort_engine::set_library("/nonexistent/libonnxruntime.so"));
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"max_batch": 4, "inputs": [{"name": "x", "type": "fp32", "shape": [8]}],
        "outputs": [{"name": "y", "type": "fp32", "shape": [4]}]});
    onnx_build::write_model(dir.path(), "mlp", &onnx_build::mlp("x", "y", &[Dense::seeded(8, 4, 1)]), &config).unwrap();

    let auto = EngineOptions { choice: EngineChoice::Auto, cpus: 2 };
    let (models, report) = Models::open_with(dir.path(), Placement::Cpu("test".into()), auto).unwrap();
    assert_eq!(report.loaded, vec!["mlp"]);
    let info = &models.list()[0];
    assert_eq!(info.engine_kind, "tract");
    assert!(
        info.engine.contains("--ort-lib names /nonexistent/libonnxruntime.so, which is not a file"),
        "{}",
        info.engine
    );
    let out = models.infer("mlp", vec![Tensor::from_f32("x", vec![1, 8], &[0.5; 8])]).await.unwrap();
    assert_eq!(out[0].shape, vec![1, 4]);

    let required = EngineOptions { choice: EngineChoice::Ort, cpus: 2 };
    let (_, report) = Models::open_with(dir.path(), Placement::Cpu("test".into()), required).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0].1.contains("STAGECRAFT_ENGINE=ort but the model cannot run on ONNX Runtime"),
        "{:?}",
        report.failed
    );
    // Too late to change the library once it was looked for.
    assert!(!ort_engine::set_library("/elsewhere/libonnxruntime.so"));
}
