//! The model host shared by the `inference` and `wasi_nn` test files: a
//! temporary model repository of small seeded MLPs (ONNX written by
//! `stagecraft_inference::onnx_build`), and one runtime serving it.

use serde_json::json;
use stagecraft_inference::onnx_build::{self, Dense};
use stagecraft_inference::Models;
use stagecraft_runtime::{InvokeError, InvokeOptions, Runtime, StageInput};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

/// Width of the MLPs' input row.
pub const IN: usize = 8;
/// Width of their output row.
pub const OUT: usize = 3;

/// Writes an `IN -> 12 -> OUT` MLP named `name` (input `x`, output `y`),
/// its weights drawn from `seed`, batching up to 16 calls within `delay_ms`.
pub fn write_mlp(repo: &Path, name: &str, seed: u64, delay_ms: u64) {
    let layers = vec![Dense::seeded(IN, 12, seed), Dense::seeded(12, OUT, seed + 1)];
    let config = json!({
        "max_batch": 16, "instances": 1, "batch_delay_ms": delay_ms,
        "inputs": [{"name": "x", "type": "fp32", "shape": [IN]}],
        "outputs": [{"name": "y", "type": "fp32", "shape": [OUT]}],
    });
    onnx_build::write_model(repo, name, &onnx_build::mlp("x", "y", &layers), &config).unwrap();
}

/// A deterministic input row, different for each `i`.
pub fn row(i: usize) -> Vec<f32> {
    (0..IN).map(|j| ((i * IN + j) as f32 * 0.29).cos()).collect()
}

pub struct Host {
    pub runtime: Runtime,
    pub models: Arc<Models>,
    pub repo: tempfile::TempDir,
}

impl Host {
    /// A repository filled by `write`, opened (every model must load), and
    /// a runtime serving it with the named test plugins installed.
    pub fn start(write: impl FnOnce(&Path), plugins: &[&str]) -> Host {
        let repo = tempfile::tempdir().unwrap();
        write(repo.path());
        let (models, report) = Models::open(repo.path()).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let mut config = stagecraft_tests::test_config();
        config.models = Some(models.clone());
        let runtime = Runtime::new(config).unwrap();
        for plugin in plugins {
            runtime.install_file(stagecraft_tests::test_plugins_dir().join(plugin)).unwrap();
        }
        Host { runtime, models, repo }
    }

    /// Runs `model` on one `x` tensor through a test plugin (`infer`, on
    /// the custom import, or `nn_infer`, on wasi:nn) and returns `y`.
    pub async fn infer_via(
        &self,
        stage: &str,
        model: &str,
        shape: &[usize],
        values: &[f32],
    ) -> Result<Vec<f32>, InvokeError> {
        let params = json!({"model": model, "tensors": [{"name": "x", "shape": shape, "values": values}]});
        let out = self.runtime.invoke(stage, StageInput::new(vec![], params), InvokeOptions::default()).await?;
        let outputs = &out.metadata["outputs"];
        assert_eq!(outputs[0]["name"], "y");
        assert_eq!(outputs[0]["shape"], json!([shape[0], OUT]));
        Ok(outputs[0]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
    }

    /// What tract computes for `model`'s ONNX file on the rows of `x`,
    /// called directly (no repository, no batcher): the reference.
    pub fn tract_direct(&self, model: &str, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / IN;
        let plan = tract_onnx::onnx()
            .model_for_path(self.repo.path().join(model).join("model.onnx"))
            .unwrap()
            .with_input_fact(0, f32::fact([rows, IN]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let input = tract_ndarray::Array2::from_shape_vec((rows, IN), x.to_vec()).unwrap().into_tensor();
        let out = plan.run(tvec![input.into()]).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }
}

/// Equal within float noise (1e-4 relative).
pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "got {got:?}, want {want:?}");
    }
}
