//! The one entry point the host calls to segment: [`Segmenter::global`]
//! runs each image on the device [`crate::device::current`] resolved,
//! CUDA behind a circuit breaker with the CPU as the fallback.
//!
//! - Invalid input is refused before either device sees it.
//! - GPU memory short: `SegmentError::Unavailable`, so the scheduler retries.
//! - GPU failure: logged, counted by the breaker, and the image is
//!   segmented on the CPU instead; after [`BREAKER_FAILURES`] failures in a
//!   row all work goes to the CPU for [`BREAKER_COOL_DOWN`], then one job
//!   tries the GPU again.

use crate::breaker::{Breaker, Route};
use crate::cuda::{Gpu, GpuError};
use crate::device::{Device, DeviceInfo};
use crate::segment::{self, Foreground, SegmentError, SegmentOptions, Segmentation};
use crate::GrayImage;
use std::time::{Duration, Instant};

/// Consecutive GPU failures that move work to the CPU.
pub const BREAKER_FAILURES: u32 = 3;
/// How long work stays on the CPU before the GPU is tried again.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// Which device ran one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    Cpu,
    Cuda,
}

/// Dispatches segmentation to the CPU or the CUDA engine.
pub struct Segmenter {
    device: Result<DeviceInfo, String>,
    engine: Option<&'static Gpu>,
    breaker: Breaker,
}

impl Segmenter {
    /// The process's segmenter, for the device `device::current()` resolved
    /// (`--device` or `STAGECRAFT_DEVICE`).
    pub fn global() -> &'static Segmenter {
        static GLOBAL: std::sync::OnceLock<Segmenter> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| Segmenter::new(crate::device::current().cloned().map_err(Clone::clone)))
    }

    /// A segmenter for a resolved device (or the reason it could not be).
    pub fn new(device: Result<DeviceInfo, String>) -> Self {
        let engine = match &device {
            Ok(info) if info.device == Device::Cuda => crate::cuda::engine().ok(),
            _ => None,
        };
        Self { device, engine, breaker: Breaker::new(BREAKER_FAILURES, BREAKER_COOL_DOWN) }
    }

    /// The device in use, or why the one asked for is unavailable.
    pub fn device(&self) -> Result<&DeviceInfo, &str> {
        self.device.as_ref().map_err(String::as_str)
    }

    /// The GPU path's circuit breaker, as operators see it.
    pub fn breaker_state(&self) -> crate::breaker::State {
        self.breaker.state()
    }

    /// Device memory promised to jobs and in use at start, and the total,
    /// in bytes; None on the CPU.
    pub fn gpu_memory(&self) -> Option<(u64, u64)> {
        self.engine.map(|e| e.memory())
    }

    /// Segments one image (see the module docs for where it runs).
    pub fn segment(
        &self,
        image: &GrayImage,
        options: &SegmentOptions,
        foreground: Foreground,
    ) -> Result<Segmentation, SegmentError> {
        self.segment_traced(image, options, foreground).map(|(s, _)| s)
    }

    /// As [`Self::segment`], also saying which device ran it.
    pub fn segment_traced(
        &self,
        image: &GrayImage,
        options: &SegmentOptions,
        foreground: Foreground,
    ) -> Result<(Segmentation, Ran), SegmentError> {
        let device = self.device.as_ref().map_err(|e| SegmentError::Unavailable(e.clone()))?;
        segment::check_input(image, options, foreground)?;
        let Some(engine) = self.engine.filter(|_| device.device == Device::Cuda) else {
            return segment::segment(image, options, foreground).map(|s| (s, Ran::Cpu));
        };
        let route = self.breaker.route(Instant::now());
        if route == Route::Cpu {
            return segment::segment(image, options, foreground).map(|s| (s, Ran::Cpu));
        }
        match engine.segment(image, options, foreground) {
            Ok(s) => {
                self.breaker.success();
                Ok((s, Ran::Cuda))
            }
            Err(GpuError::Busy(why)) => {
                if route == Route::GpuTrial {
                    self.breaker.abandon_trial(Instant::now());
                }
                Err(SegmentError::Unavailable(why))
            }
            Err(GpuError::Failed(why)) => {
                let opened = self.breaker.failure(Instant::now());
                tracing::warn!(%why, breaker_opened = opened, "GPU segmentation failed; running this image on the CPU");
                segment::segment(image, options, foreground).map(|s| (s, Ran::Cpu))
            }
        }
    }
}
