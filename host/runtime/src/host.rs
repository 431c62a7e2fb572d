//! Host services that plugins import (`log`, `progress`, `inference`,
//! `segmentation`), and the generated bindings of the `plugin` world.
//!
//! `segmentation` runs stagecraft-accel's CPU pipeline on a blocking
//! thread (off the async executor; the pipeline itself uses rayon's pool).
//! `inference` runs named models from the runtime's model repository
//! (stagecraft-inference: tract on the CPU, dynamic batching across
//! concurrent calls); a host started without one answers `unavailable`.
//! `segmentation`'s `model` option runs such a model for a per-pixel
//! foreground probability instead of Otsu's threshold.

use crate::capacity::WaitKind;
use crate::invoke::StageEvent;
use crate::sandbox::StoreState;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        imports: {
            "stagecraft:stage/inference.infer": async,
            "stagecraft:stage/segmentation.segment": async,
        },
        exports: { default: async },
    });
}

use bindings::stagecraft::stage::{inference, log, progress, segmentation, types};

impl types::Host for StoreState {}

/// Logs one line as the host's tracing event (target `stage`) and passes it
/// to the caller. Shared with the end-of-call summary line.
pub(crate) fn emit_log(state: &StoreState, level: log::Level, message: String) {
    let stage = state.events.stage();
    match level {
        log::Level::Trace => tracing::trace!(target: "stage", stage, "{message}"),
        log::Level::Debug => tracing::debug!(target: "stage", stage, "{message}"),
        log::Level::Info => tracing::info!(target: "stage", stage, "{message}"),
        log::Level::Warn => tracing::warn!(target: "stage", stage, "{message}"),
        log::Level::Error => tracing::error!(target: "stage", stage, "{message}"),
    }
    let level = match level {
        log::Level::Trace => "trace",
        log::Level::Debug => "debug",
        log::Level::Info => "info",
        log::Level::Warn => "warn",
        log::Level::Error => "error",
    };
    state.events.emit(StageEvent::Log { level, message });
}

impl log::Host for StoreState {
    /// Within the log quotas ([`crate::throttle`]): past them the line is
    /// dropped and counted.
    fn log(&mut self, level: log::Level, message: String) {
        if let Some(message) = self.gate.log(&message) {
            emit_log(self, level, message);
        }
    }
}

impl progress::Host for StoreState {
    /// Coalesced ([`crate::throttle`]): a few reports per second go on.
    fn report(&mut self, fraction: f32, message: String) {
        let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
        if let Some((fraction, message)) = self.gate.progress(fraction, &message) {
            self.events.emit(StageEvent::Progress { fraction, message });
        }
    }
}

impl inference::Host for StoreState {
    async fn infer(
        &mut self,
        model: String,
        inputs: Vec<inference::Tensor>,
    ) -> Result<Vec<inference::Tensor>, inference::InferenceError> {
        use inference::InferenceError as E;
        let models = self.models.clone().ok_or_else(|| {
            E::Unavailable(format!("this host has no model repository (start it with --models DIR); model '{model}'"))
        })?;
        let span = tracing::debug_span!("infer", stage = self.events.stage(), model = %model);
        let inputs = inputs.into_iter().map(tensor_in).collect::<Result<Vec<_>, _>>()?;
        let _parked = self.meter.waiting(WaitKind::Inference);
        let outputs =
            tracing::Instrument::instrument(models.infer(&model, inputs), span).await.map_err(|e| match e {
                stagecraft_inference::InferError::UnknownModel(m) => E::UnknownModel(m),
                stagecraft_inference::InferError::InvalidInput(m) => E::InvalidInput(m),
                stagecraft_inference::InferError::Unavailable(m) => E::Unavailable(m),
                stagecraft_inference::InferError::Failed(m) => E::Failed(m),
            })?;
        Ok(outputs.into_iter().map(tensor_out).collect())
    }
}

fn tensor_in(t: inference::Tensor) -> Result<stagecraft_inference::Tensor, inference::InferenceError> {
    use inference::TensorType as T;
    use stagecraft_inference::DType;
    let dtype = match t.ty {
        T::Fp16 => DType::F16,
        T::Fp32 => DType::F32,
        T::Bf16 => DType::Bf16,
        T::U8 => DType::U8,
        T::I32 => DType::I32,
        T::I64 => DType::I64,
    };
    if matches!(dtype, DType::F16 | DType::Bf16) {
        return Err(inference::InferenceError::InvalidInput(format!(
            "tensor '{}' is {dtype}: the CPU engine takes fp32, u8, i32 and i64 tensors; convert to fp32",
            t.name
        )));
    }
    let shape = t.dimensions.iter().map(|&d| d as usize).collect();
    Ok(stagecraft_inference::Tensor { name: t.name, shape, dtype, data: t.data })
}

fn tensor_out(t: stagecraft_inference::Tensor) -> inference::Tensor {
    use inference::TensorType as T;
    use stagecraft_inference::DType;
    let ty = match t.dtype {
        DType::F16 => T::Fp16,
        DType::F32 => T::Fp32,
        DType::Bf16 => T::Bf16,
        DType::U8 => T::U8,
        DType::I32 => T::I32,
        DType::I64 => T::I64,
    };
    inference::Tensor { name: t.name, dimensions: t.shape.iter().map(|&d| d as u32).collect(), ty, data: t.data }
}

/// Runs a foreground model on a gray image: input `[1, 1, H, W]` fp32
/// scaled to [0, 1] (8-bit by 255, 16-bit by 65535), output one fp32
/// probability per pixel (`[1, 1, H, W]` or any shape of H x W values).
async fn foreground_probability(
    models: Option<&std::sync::Arc<stagecraft_inference::Models>>,
    model: &str,
    image: &segmentation::GrayImage,
) -> Result<Vec<f32>, segmentation::SegmentationError> {
    use segmentation::SegmentationError as E;
    use stagecraft_inference::InferError;
    let models = models.ok_or_else(|| {
        E::Unavailable(format!("this host has no model repository (start it with --models DIR); model '{model}'"))
    })?;
    let gray = stagecraft_accel::GrayImage::from_bytes(image.width, image.height, image.bits_per_sample, &image.data)
        .map_err(|e| match e {
        stagecraft_accel::SegmentError::InvalidInput(m) => E::InvalidInput(m),
        stagecraft_accel::SegmentError::Unavailable(m) => E::Unavailable(m),
        stagecraft_accel::SegmentError::Failed(m) => E::Failed(m),
    })?;
    let full_scale = if image.bits_per_sample == 16 { 65535.0 } else { 255.0 };
    let pixels: Vec<f32> = gray.to_f32().iter().map(|v| v / full_scale).collect();
    let (w, h) = (image.width as usize, image.height as usize);
    let input = stagecraft_inference::Tensor::from_f32("", vec![1, 1, h, w], &pixels);
    let outputs = models.infer(model, vec![input]).await.map_err(|e| match e {
        InferError::UnknownModel(m) | InferError::InvalidInput(m) => E::InvalidInput(format!("foreground model: {m}")),
        InferError::Unavailable(m) => E::Unavailable(m),
        InferError::Failed(m) => E::Failed(m),
    })?;
    let probs = outputs.first().and_then(|t| t.to_f32()).unwrap_or_default();
    if probs.len() != w * h {
        return Err(E::Failed(format!(
            "foreground model '{model}' returned {} fp32 values for a {w}x{h} image; it must give one probability per pixel",
            probs.len()
        )));
    }
    Ok(probs)
}

impl segmentation::Host for StoreState {
    async fn segment(
        &mut self,
        image: segmentation::GrayImage,
        options: segmentation::SegmentOptions,
    ) -> Result<segmentation::SegmentationResult, segmentation::SegmentationError> {
        use segmentation::SegmentationError as E;
        use stagecraft_accel::SegmentError;
        let device = stagecraft_accel::device::current().map_err(|e| E::Unavailable(e.clone()))?;
        let _parked = self.meter.waiting(WaitKind::Segmentation);
        let probability = match &options.model {
            Some(model) => Some(foreground_probability(self.models.as_ref(), model, &image).await?),
            None => None,
        };
        let stage = self.events.stage().to_owned();
        let work = move || {
            let gray =
                stagecraft_accel::GrayImage::from_bytes(image.width, image.height, image.bits_per_sample, &image.data)?;
            drop(image);
            let opts = stagecraft_accel::SegmentOptions {
                sigma: options.sigma,
                min_area: options.min_area,
                min_distance: options.min_distance,
            };
            let started = std::time::Instant::now();
            let foreground = match &probability {
                Some(p) => stagecraft_accel::Foreground::Probability(p),
                None => stagecraft_accel::Foreground::Otsu,
            };
            let result = stagecraft_accel::Segmenter::global().segment(&gray, &opts, foreground)?;
            tracing::debug!(
                stage,
                width = gray.width,
                height = gray.height,
                cells = result.cells.len(),
                device = %device,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "segmented"
            );
            Ok::<_, SegmentError>(result)
        };
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| E::Failed(format!("the segmentation task panicked or was cancelled: {e}")))?
            .map_err(|e| match e {
                SegmentError::InvalidInput(m) => E::InvalidInput(m),
                SegmentError::Unavailable(m) => E::Unavailable(m),
                SegmentError::Failed(m) => E::Failed(m),
            })?;
        Ok(segmentation::SegmentationResult {
            width: result.width,
            height: result.height,
            labels: result.labels,
            cells: result
                .cells
                .into_iter()
                .map(|c| segmentation::Cell {
                    id: c.id,
                    area: c.area,
                    centroid_x: c.centroid_x,
                    centroid_y: c.centroid_y,
                    bbox_x: c.bbox_x,
                    bbox_y: c.bbox_y,
                    bbox_width: c.bbox_width,
                    bbox_height: c.bbox_height,
                    mean_intensity: c.mean_intensity,
                })
                .collect(),
        })
    }
}
