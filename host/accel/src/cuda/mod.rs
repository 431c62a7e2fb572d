//! The CUDA path of segmentation. cudarc loads `libcuda` and `libnvrtc`
//! at run time only (no CUDA toolkit at build time, nothing loaded on a
//! machine without a driver); the kernels are CUDA C compiled by NVRTC
//! once per process for the GPU found.
//!
//! - [`compile`]: the CUDA C source and its NVRTC compile to a CUBIN.
//! - [`context`]: the engine: context, kernels, stream pool, memory accounting.
//! - [`pipeline`]: every step of segmentation on one stream.
//! - [`net`]: small convolutional networks (the shipped ONNX models'
//!   operators, `nn.cu`) uploaded once and run on batches.
//!
//! Callers use [`crate::Segmenter`], which adds the CPU fallback and the
//! circuit breaker.

pub mod compile;
pub mod context;
pub mod net;
pub mod pipeline;

pub use context::Gpu;

use crate::segment::{Foreground, SegmentError, SegmentOptions, Segmentation};
use crate::GrayImage;
use std::sync::OnceLock;

/// The process's engine, started (and its kernels compiled) on first use;
/// the error says why CUDA cannot be used here.
pub fn engine() -> Result<&'static Gpu, &'static str> {
    static ENGINE: OnceLock<Result<Gpu, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let engine = Gpu::start();
            match &engine {
                Ok(e) => tracing::info!(engine = %e.summary, ms = started.elapsed().as_millis() as u64, "CUDA engine started"),
                Err(why) => tracing::info!(%why, "CUDA unavailable"),
            }
            engine
        })
        .as_ref()
        .map_err(String::as_str)
}

/// A GPU job's failure.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuError {
    /// Not enough device memory now: retry later (or elsewhere).
    Busy(String),
    /// The device failed the job (counts towards the circuit breaker).
    Failed(String),
}

impl From<GpuError> for SegmentError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Busy(m) => SegmentError::Unavailable(m),
            GpuError::Failed(m) => SegmentError::Failed(m),
        }
    }
}

impl Gpu {
    /// Segments one checked image on the GPU: reserves its memory, waits
    /// for a stream, runs the pipeline. A panic inside is a failure.
    pub fn segment(
        &self,
        image: &GrayImage,
        options: &SegmentOptions,
        foreground: Foreground,
    ) -> Result<Segmentation, GpuError> {
        let bytes = pipeline::estimate_bytes(image.width, image.height, &foreground);
        let _reservation = self.reserve(bytes).map_err(GpuError::Busy)?;
        let stream = self.stream();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::segment(self, &stream, image, options, foreground)
        }));
        match run {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(GpuError::Failed(e)),
            Err(_) => Err(GpuError::Failed("the CUDA pipeline panicked".into())),
        }
    }
}
