//! `segment_cells`: instance segmentation of fluorescence-like cell images.
//!
//! The stage decodes each input (gray or colour PNG/JPEG, 8 or 16 bits),
//! turns it into one gray channel at its own depth, and asks the host's
//! `segmentation` import for labels and per-cell measurements (the heavy
//! numeric work runs natively on the host, next to the GPU when there is
//! one). It writes, per input:
//!
//! - `<stem>_labels.png`: 16-bit gray, each pixel its cell's id (0 = background);
//! - `<stem>_overlay.png`: the input with each cell's outline (or a tint) in its own colour;
//! - `<stem>_cells.csv`: `id,area,centroid_x,centroid_y,bbox_x,bbox_y,bbox_width,bbox_height,mean_intensity`.
//!
//! Metadata: the cell count per image and in total.

use image::{DynamicImage, ImageBuffer, Luma, Rgb, RgbImage};
use stagecraft_sdk::images::{decode, stem};
use stagecraft_sdk::prelude::*;
use stagecraft_sdk::segmentation::{self, Cell, GrayImage, SegmentOptions, SegmentationResult};

fn default_sigma() -> f32 {
    2.0
}
fn default_min_area() -> u32 {
    30
}
fn default_min_distance() -> u32 {
    5
}

/// Parameters of `segment_cells`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Gaussian denoise sigma in pixels before thresholding (0 disables).
    #[serde(default = "default_sigma")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub sigma: f32,
    /// Objects smaller than this many pixels are dropped.
    #[serde(default = "default_min_area")]
    #[schemars(range(min = 0, max = 10000000))]
    pub min_area: u32,
    /// Minimum distance between the centres of two cells, in pixels: the
    /// spacing of the watershed seeds that split touching cells. About a
    /// third of a typical cell diameter.
    #[serde(default = "default_min_distance")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_distance: u32,
    /// A foreground-probability model from the host's model repository
    /// (`cell_fg` ships with stagecraft); unset for Otsu's threshold.
    #[serde(default)]
    pub model: Option<String>,
    /// How cells are drawn on the overlay.
    #[serde(default)]
    pub overlay: OverlayStyle,
}

/// Drawing of the overlay image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverlayStyle {
    /// One-pixel outlines in each cell's colour.
    #[default]
    Outline,
    /// Cells tinted in their colour, outlines on top.
    Tint,
}

/// The stage.
pub struct SegmentCells;

impl Stage for SegmentCells {
    type Params = Params;
    const NAME: &'static str = "segment_cells";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Segments cells (gaussian, Otsu, distance transform, seeded watershed on the host): 16-bit label PNG, overlay PNG, per-cell CSV";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png", "text/csv"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        input.first()?;
        let p = &input.params;
        let options = SegmentOptions {
            sigma: p.sigma,
            min_area: p.min_area,
            min_distance: p.min_distance,
            model: p.model.clone(),
        };
        let mut output = Output::new();
        let mut per_image = Vec::new();
        let mut total = 0usize;
        let n = input.artifacts.len();
        for (k, artifact) in input.artifacts.iter().enumerate() {
            stagecraft_sdk::progress(k as f32 / n as f32, &format!("segmenting {}", artifact.name));
            let decoded = decode(artifact)?;
            let gray = to_gray(&decoded);
            let result = segmentation::segment(&gray, &options)?;
            check_result(&gray, &result)?;
            let name = stem(&artifact.name);
            output = output
                .artifact(format!("{name}_labels.png"), "image/png", label_png(&result)?)
                .artifact(format!("{name}_overlay.png"), "image/png", png(&overlay(&gray, &result, p.overlay))?)
                .artifact(format!("{name}_cells.csv"), "text/csv", cells_csv(&result.cells).into_bytes());
            total += result.cells.len();
            per_image.push(json!({
                "name": artifact.name,
                "width": gray.width,
                "height": gray.height,
                "bits": gray.bits_per_sample,
                "cells": result.cells.len(),
            }));
        }
        stagecraft_sdk::progress(1.0, "done");
        Ok(output.meta("cells", total).meta("images", per_image))
    }
}

/// One gray channel at the input's own depth: 16-bit inputs stay 16-bit
/// (little-endian samples), everything else becomes 8-bit luma.
pub fn to_gray(image: &DynamicImage) -> GrayImage {
    let sixteen = matches!(
        image,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    );
    let (width, height) = (image.width(), image.height());
    if sixteen {
        let data = image.to_luma16().into_raw().into_iter().flat_map(u16::to_le_bytes).collect();
        GrayImage { width, height, bits_per_sample: 16, data }
    } else {
        GrayImage { width, height, bits_per_sample: 8, data: image.to_luma8().into_raw() }
    }
}

/// The host's answer must fit the image: a mismatch is the host's fault.
fn check_result(gray: &GrayImage, r: &SegmentationResult) -> Result<(), StageError> {
    if r.width != gray.width || r.height != gray.height || r.labels.len() != (gray.width * gray.height) as usize {
        return Err(StageError::failed(format!(
            "segmentation returned {}x{} with {} labels for a {}x{} image",
            r.width,
            r.height,
            r.labels.len(),
            gray.width,
            gray.height
        )));
    }
    if r.cells.len() > u16::MAX as usize {
        return Err(StageError::failed(format!("{} cells do not fit a 16-bit label image", r.cells.len())));
    }
    Ok(())
}

fn png(image: &RgbImage) -> Result<Vec<u8>, StageError> {
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| StageError::failed(format!("cannot encode PNG: {e}")))?;
    Ok(out)
}

/// The labels as a 16-bit gray PNG.
pub fn label_png(r: &SegmentationResult) -> Result<Vec<u8>, StageError> {
    let data: Vec<u16> = r.labels.iter().map(|&l| l.min(u16::MAX as u32) as u16).collect();
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_raw(r.width, r.height, data).ok_or_else(|| StageError::failed("label buffer size"))?;
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| StageError::failed(format!("cannot encode the label PNG: {e}")))?;
    Ok(out)
}

/// A distinct, saturated colour for label `id` (golden-ratio hue steps).
pub fn colour(id: u32) -> [u8; 3] {
    let h = (id as f32 * 0.618_034).fract() * 6.0;
    let x = 1.0 - (h % 2.0 - 1.0).abs();
    let (r, g, b) = match h as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// The input, contrast-stretched to 8 bits (1st to 99.8th percentile), with
/// each cell's outline (pixels with a 4-neighbour of another label) drawn in
/// its colour, or tinted.
pub fn overlay(gray: &GrayImage, r: &SegmentationResult, style: OverlayStyle) -> RgbImage {
    let (w, h) = (gray.width as usize, gray.height as usize);
    let samples: Vec<u16> = if gray.bits_per_sample == 16 {
        gray.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    } else {
        gray.data.iter().map(|&v| v as u16).collect()
    };
    let mut sorted = samples.clone();
    sorted.sort_unstable();
    let lo = sorted[sorted.len() / 100] as f32;
    let hi = (sorted[(sorted.len() * 998 / 1000).min(sorted.len() - 1)] as f32).max(lo + 1.0);
    let mut out = RgbImage::new(gray.width, gray.height);
    for (i, px) in out.pixels_mut().enumerate() {
        let v = (((samples[i] as f32 - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
        let l = r.labels[i];
        let (x, y) = (i % w, i / w);
        let edge = l != 0
            && [(x > 0, i.wrapping_sub(1)), (x + 1 < w, i + 1), (y > 0, i.wrapping_sub(w)), (y + 1 < h, i + w)]
                .iter()
                .any(|&(inside, j)| !inside || r.labels[j] != l);
        *px = if edge {
            Rgb(colour(l))
        } else if l != 0 && style == OverlayStyle::Tint {
            let c = colour(l);
            Rgb([0, 1, 2].map(|k| ((v as u16 * 6 + c[k] as u16 * 4) / 10) as u8))
        } else {
            Rgb([v, v, v])
        };
    }
    out
}

/// One CSV row per cell, with a header.
pub fn cells_csv(cells: &[Cell]) -> String {
    let mut csv = String::from("id,area,centroid_x,centroid_y,bbox_x,bbox_y,bbox_width,bbox_height,mean_intensity\n");
    for c in cells {
        csv.push_str(&format!(
            "{},{},{:.3},{:.3},{},{},{},{},{:.3}\n",
            c.id, c.area, c.centroid_x, c.centroid_y, c.bbox_x, c.bbox_y, c.bbox_width, c.bbox_height, c.mean_intensity
        ));
    }
    csv
}

#[cfg(target_arch = "wasm32")]
export_stage!(SegmentCells);

#[cfg(test)]
mod tests {
    use super::*;

    fn result(w: u32, h: u32, labels: Vec<u32>) -> SegmentationResult {
        SegmentationResult { width: w, height: h, labels, cells: Vec::new() }
    }

    #[test]
    fn gray_keeps_sixteen_bits() {
        let img = DynamicImage::ImageLuma16(ImageBuffer::from_raw(2, 1, vec![1u16, 0x1234]).unwrap());
        let g = to_gray(&img);
        assert_eq!((g.bits_per_sample, g.data.clone()), (16, vec![1, 0, 0x34, 0x12]));
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_pixel(3, 2, Rgb([10, 10, 10])));
        let g = to_gray(&rgb);
        assert_eq!((g.bits_per_sample, g.data.len()), (8, 6));
    }

    #[test]
    fn label_png_round_trips_sixteen_bit() {
        let r = result(3, 1, vec![0, 1, 300]);
        let back = image::load_from_memory(&label_png(&r).unwrap()).unwrap();
        assert!(matches!(back, DynamicImage::ImageLuma16(_)));
        assert_eq!(back.to_luma16().into_raw(), vec![0, 1, 300]);
    }

    #[test]
    fn overlay_outlines_cells_only() {
        // A 3x3 cell in the middle of a 5x5 image.
        let mut labels = vec![0u32; 25];
        for y in 1..4 {
            for x in 1..4 {
                labels[y * 5 + x] = 1;
            }
        }
        let gray = GrayImage { width: 5, height: 5, bits_per_sample: 8, data: (0..25).map(|i| i * 10).collect() };
        let o = overlay(&gray, &result(5, 5, labels), OverlayStyle::Outline);
        assert_eq!(o.get_pixel(1, 1).0, colour(1));
        let centre = o.get_pixel(2, 2).0;
        assert_eq!(centre[0], centre[1]);
        let corner = o.get_pixel(0, 0).0;
        assert_eq!(corner[0], corner[1]);
        assert_ne!(colour(1), colour(2));
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_cell() {
        let cell = Cell {
            id: 1,
            area: 12,
            centroid_x: 3.5,
            centroid_y: 4.25,
            bbox_x: 1,
            bbox_y: 2,
            bbox_width: 4,
            bbox_height: 3,
            mean_intensity: 99.5,
        };
        let csv = cells_csv(&[cell]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "1,12,3.500,4.250,1,2,4,3,99.500");
    }
}
