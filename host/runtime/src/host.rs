//! Host services that plugins import (`log`, `progress`, `inference`,
//! `segmentation`), and the generated bindings of the `plugin` world.
//!
//! `segmentation` runs stagecraft-accel's CPU pipeline on a blocking
//! thread (off the async executor; the pipeline itself uses rayon's pool).
//! `inference` answers `unavailable` until the model repository lands: a
//! plugin that calls it gets a clear, retryable error instead of a link
//! failure.

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

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, message: String) {
        let stage = self.events.stage();
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
        self.events.emit(StageEvent::Log { level, message });
    }
}

impl progress::Host for StoreState {
    fn report(&mut self, fraction: f32, message: String) {
        let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
        self.events.emit(StageEvent::Progress { fraction, message });
    }
}

impl inference::Host for StoreState {
    async fn infer(
        &mut self,
        model: String,
        _inputs: Vec<inference::Tensor>,
    ) -> Result<Vec<inference::Tensor>, inference::InferenceError> {
        Err(inference::InferenceError::Unavailable(format!(
            "the inference service is not available in this host yet (model '{model}')"
        )))
    }
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
        if let Some(model) = &options.model {
            return Err(E::InvalidInput(format!(
                "unknown model '{model}': this host has no model repository yet; leave `model` unset for Otsu foreground"
            )));
        }
        let stage = self.events.stage().to_owned();
        let work = move || {
            let gray = stagecraft_accel::GrayImage::from_bytes(
                image.width,
                image.height,
                image.bits_per_sample,
                &image.data,
            )?;
            drop(image);
            let opts = stagecraft_accel::SegmentOptions {
                sigma: options.sigma,
                min_area: options.min_area,
                min_distance: options.min_distance,
            };
            let started = std::time::Instant::now();
            let result = stagecraft_accel::Segmenter::global().segment(&gray, &opts, stagecraft_accel::Foreground::Otsu)?;
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
