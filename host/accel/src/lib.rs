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

pub mod cuda;
pub mod device;
pub mod gray;
pub mod metrics;
pub mod segment;
pub mod synth;

pub use device::{Device, DeviceInfo};
pub use gray::GrayImage;
pub use segment::{segment, Cell, Foreground, SegmentError, SegmentOptions, Segmentation};
