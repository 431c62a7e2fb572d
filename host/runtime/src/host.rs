//! Host services that plugins import (`log`, `progress`, `inference`,
//! `segmentation`), and the generated bindings of the `plugin` world.
//!
//! `inference` and `segmentation` answer `unavailable` until the accel
//! backends land: a plugin that calls them gets a clear, retryable error
//! instead of a link failure.

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
        _image: segmentation::GrayImage,
        _options: segmentation::SegmentOptions,
    ) -> Result<segmentation::SegmentationResult, segmentation::SegmentationError> {
        Err(segmentation::SegmentationError::Unavailable(
            "the segmentation service is not available in this host yet".into(),
        ))
    }
}
