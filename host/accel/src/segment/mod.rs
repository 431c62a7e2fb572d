//! The classical segmentation pipeline on the CPU, and its options.
//!
//! gaussian denoise → foreground (Otsu, or a probability map > 0.5) →
//! exact distance transform → markers (distance maxima `min_distance`
//! apart, one per plateau) → watershed on the distance map within the
//! foreground (components no seed reached are labelled whole) → drop
//! objects under `min_area` → relabel 1..N → measure. Rows of the blur and
//! of the distance transform run in parallel on rayon's pool; [`segment_batch`] runs images in parallel.

pub mod blur;
pub mod edt;
pub mod label;
pub mod measure;
pub mod otsu;
pub mod peaks;
pub mod watershed;

pub use measure::Cell;

use crate::gray::GrayImage;
use rayon::prelude::*;

/// Options, as the WIT `segment-options` record.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// Gaussian denoise sigma in pixels (0 disables).
    pub sigma: f32,
    /// Objects smaller than this (pixels) are dropped.
    pub min_area: u32,
    /// Minimum distance between two watershed seeds, in pixels.
    pub min_distance: u32,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self { sigma: 2.0, min_area: 30, min_distance: 5 }
    }
}

/// How foreground is decided.
#[derive(Debug, Clone, Copy)]
pub enum Foreground<'a> {
    /// Otsu's threshold on the denoised image.
    Otsu,
    /// A per-pixel foreground probability (from a model); foreground is > 0.5.
    Probability(&'a [f32]),
}

/// A label image and its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub width: u32,
    pub height: u32,
    /// One label per pixel, row-major; 0 is background, objects are 1..=N.
    pub labels: Vec<u32>,
    pub cells: Vec<Cell>,
    /// The foreground threshold used (Otsu's, in sample units), if any.
    pub threshold: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SegmentError {
    /// The caller's fault: bad sizes, bit depth, options.
    InvalidInput(String),
    /// Transient (device busy).
    Unavailable(String),
    Failed(String),
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Unavailable(m) => write!(f, "unavailable: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for SegmentError {}

/// Checks options before any work.
pub fn validate(options: &SegmentOptions) -> Result<(), SegmentError> {
    if !options.sigma.is_finite() || options.sigma < 0.0 || options.sigma > 100.0 {
        return Err(SegmentError::InvalidInput(format!("sigma must be in 0..=100, got {}", options.sigma)));
    }
    if options.min_distance > 10_000 {
        return Err(SegmentError::InvalidInput(format!(
            "min-distance must be at most 10000, got {}",
            options.min_distance
        )));
    }
    Ok(())
}

/// Checks the image against its size and the options, before any work
/// (on either device).
pub fn check_input(image: &GrayImage, options: &SegmentOptions, foreground: Foreground) -> Result<(), SegmentError> {
    validate(options)?;
    let (w, h) = (image.width as usize, image.height as usize);
    if w == 0 || h == 0 || image.samples.len() != w * h {
        return Err(SegmentError::InvalidInput(format!(
            "{}x{} image with {} samples",
            image.width,
            image.height,
            image.samples.len()
        )));
    }
    if let Foreground::Probability(p) = foreground {
        if p.len() != w * h {
            return Err(SegmentError::InvalidInput(format!(
                "probability map has {} values for a {w}x{h} image",
                p.len()
            )));
        }
    }
    Ok(())
}

/// Segments one image on the CPU.
pub fn segment(
    image: &GrayImage,
    options: &SegmentOptions,
    foreground: Foreground,
) -> Result<Segmentation, SegmentError> {
    check_input(image, options, foreground)?;
    let (w, h) = (image.width as usize, image.height as usize);
    let smooth = blur::gaussian(&image.to_f32(), w, h, options.sigma);
    let (mask, threshold): (Vec<bool>, Option<f32>) = match foreground {
        Foreground::Otsu => {
            let t = otsu::threshold(&smooth);
            (smooth.iter().map(|&v| v > t).collect(), Some(t))
        }
        Foreground::Probability(p) => (p.iter().map(|&v| v > 0.5).collect(), None),
    };
    let distance = edt::distance_transform(&mask, w, h);
    let (markers, seeds) = peaks::markers(&distance, &mask, w, h, options.min_distance);
    let mut labels = watershed::watershed(&distance, &mask, &markers, w, h);
    watershed::label_unreached(&mut labels, &mask, w, h, seeds);
    let count = label::drop_small_and_relabel(&mut labels, options.min_area);
    let cells = measure::measure(&labels, &image.samples, w, count);
    Ok(Segmentation { width: image.width, height: image.height, labels, cells, threshold })
}

/// Segments many images, in parallel across images.
pub fn segment_batch(images: &[GrayImage], options: &SegmentOptions) -> Vec<Result<Segmentation, SegmentError>> {
    images.par_iter().map(|image| segment(image, options, Foreground::Otsu)).collect()
}
