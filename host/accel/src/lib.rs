//! `stagecraft-accel`: the numeric work the host does for plugins.
//!
//! - [`segment`]: classical instance segmentation of fluorescence-like cell
//!   images on the CPU (gaussian denoise, Otsu, exact distance transform,
//!   seeded watershed, labelling, measurements), multi-threaded with rayon.
//! - [`synth`]: a seeded generator of cell images with ground-truth labels.
//! - [`metrics`]: average precision at an IoU threshold, as in the
//!   cell-segmentation literature.
//! - [`device`]: which device runs the work (`auto|cpu|cuda`), decided at
//!   start with the CUDA driver loaded only at run time.
//! - [`cuda`]: the same pipeline as CUDA kernels (cudarc, NVRTC).
//! - [`Segmenter`]: the entry point that dispatches CPU or CUDA, with a
//!   circuit breaker ([`breaker`]) and the CPU as the fallback.

pub mod breaker;
pub mod cuda;
pub mod device;
pub mod gray;
pub mod metrics;
pub mod segment;
pub mod segmenter;
pub mod synth;

pub use device::{Device, DeviceInfo};
pub use gray::GrayImage;
pub use segment::{segment, Cell, Foreground, SegmentError, SegmentOptions, Segmentation};
pub use segmenter::Segmenter;
