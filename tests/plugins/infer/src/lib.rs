//! `infer`: forwards fp32 tensors from its params to the host's
//! `inference` import (or a gray image to `segmentation` with a foreground
//! model) and reports what came back, for the end-to-end inference tests.
//! Errors keep the WIT variant's name in the message (`unknown-model: ...`)
//! so a test can tell them apart.

use stagecraft_sdk::bindings::stagecraft::stage::inference::{self, InferenceError, Tensor, TensorType};
use stagecraft_sdk::prelude::*;
use stagecraft_sdk::segmentation::{self, GrayImage, SegmentOptions};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The model to run.
    model: String,
    /// fp32 input tensors (for `inference`).
    #[serde(default)]
    tensors: Vec<Fp32Tensor>,
    /// An 8-bit gray image to segment with `model` as its foreground model.
    #[serde(default)]
    segment: Option<Gray>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
struct Fp32Tensor {
    name: String,
    shape: Vec<u32>,
    values: Vec<f32>,
}

#[derive(Deserialize, JsonSchema)]
struct Gray {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

struct Infer;

impl Stage for Infer {
    type Params = Params;
    const NAME: &'static str = "infer";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Forwards tensors to a host model and reports the outputs (test plugin)";
    const ACCEPTS: &'static [&'static str] = &["*/*"];
    const PRODUCES: &'static [&'static str] = &["application/json"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let p = &input.params;
        if let Some(g) = &p.segment {
            let image = GrayImage { width: g.width, height: g.height, bits_per_sample: 8, data: g.pixels.clone() };
            let options = SegmentOptions { sigma: 1.0, min_area: 4, min_distance: 3, model: Some(p.model.clone()) };
            let result = segmentation::segment(&image, &options)?;
            return Ok(Output::new().meta("cells", result.cells.len()));
        }
        let tensors: Vec<Tensor> = p
            .tensors
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                dimensions: t.shape.clone(),
                ty: TensorType::Fp32,
                data: t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            })
            .collect();
        let outputs = inference::infer(&p.model, &tensors).map_err(|e| match e {
            InferenceError::UnknownModel(m) => StageError::invalid_input(format!("unknown-model: {m}")),
            InferenceError::InvalidInput(m) => StageError::invalid_input(format!("invalid-input: {m}")),
            InferenceError::Unavailable(m) => StageError::unavailable(format!("unavailable: {m}")),
            InferenceError::Failed(m) => StageError::failed(format!("failed: {m}")),
        })?;
        let mut report = Vec::new();
        for t in outputs {
            if t.ty != TensorType::Fp32 {
                return Err(StageError::failed(format!("output '{}' is not fp32", t.name)));
            }
            let values = t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            report.push(Fp32Tensor { name: t.name, shape: t.dimensions, values });
        }
        Ok(Output::new().meta("outputs", &report))
    }
}

export_stage!(Infer);
