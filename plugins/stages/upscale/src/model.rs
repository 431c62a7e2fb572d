//! `method: model`: 2x super-resolution by a model in the host's model
//! repository, run in tiles through the `inference` import; Lanczos3 for
//! alpha and for the last step to a size that is not a power of two.

use super::tiles;
use super::{resample, resize, Params};
use image::{DynamicImage, GenericImageView};
use stagecraft_sdk::inference::{self, InferenceError};
use stagecraft_sdk::prelude::*;

/// Context pixels around each tile: at least the model's receptive-field
/// radius (4 for sr2x), so tiles join without seams.
pub const MARGIN: usize = 8;
/// Tiles of one shape per inference call.
pub const MAX_BATCH: usize = 4;

/// How many 2x passes reach `target` from `source` (1 or 2): the fewest
/// that reach it, at most two (4x); Lanczos3 covers the rest.
pub fn passes(source: (u32, u32), target: (u32, u32)) -> u32 {
    if target.0 <= source.0 * 2 && target.1 <= source.1 * 2 {
        1
    } else {
        2
    }
}

/// Upscales `source` to `nw` x `nh` with the model. Returns the image and,
/// when the model could not be used and `fallback_to_lanczos` is set, the
/// warning saying so (the image is then Lanczos3's).
pub fn upscale(
    source: &DynamicImage,
    nw: u32,
    nh: u32,
    p: &Params,
    index: usize,
    total: usize,
) -> Result<(DynamicImage, Option<String>), StageError> {
    let (w, h) = source.dimensions();
    let n = passes((w, h), (nw, nh));
    let alpha = source.color().has_alpha();
    let rgba = source.to_rgba8();
    let mut planes = tiles::planes_from_u8(rgba.as_raw(), w as usize, h as usize, 4, 3);
    for pass in 0..n {
        let report = |f: f32| {
            let share = (pass as f32 + f) / n as f32;
            progress((index as f32 + share) / total as f32, &format!("{} pass {} of {n}", p.model, pass + 1));
        };
        let result = tiles::upscale2x(&planes, p.tile as usize, MARGIN, MAX_BATCH, |b| run_model(&p.model, b), report);
        planes = match result {
            Ok(up) => up,
            Err(tiles::TileError::Model(e)) => return fallback_or_fail(source, nw, nh, p, e),
            Err(tiles::TileError::Shape(m)) => {
                return Err(StageError::failed(format!("model '{}' is not a 2x RGB model: {m}", p.model)))
            }
        };
    }
    let (mw, mh) = (planes.width as u32, planes.height as u32);
    let rgb = tiles::planes_to_u8(&planes);
    let rgb = if (mw, mh) == (nw, nh) {
        rgb
    } else {
        resize::lanczos3(&rgb, mw, mh, 3, nw, nh).map_err(StageError::failed)?
    };
    let image = if alpha {
        let a: Vec<u8> = rgba.pixels().map(|px| px.0[3]).collect();
        let a = lanczos_gray(&a, w, h, nw, nh)?;
        let pixels = rgb.chunks_exact(3).zip(a).flat_map(|(c, a)| [c[0], c[1], c[2], a]).collect();
        DynamicImage::ImageRgba8(image::RgbaImage::from_raw(nw, nh, pixels).expect("sized by the model and resize"))
    } else {
        DynamicImage::ImageRgb8(image::RgbImage::from_raw(nw, nh, rgb).expect("sized by the model and resize"))
    };
    Ok((image, None))
}

/// One batch of tiles through the model; the answer must be one fp32 tensor.
fn run_model(model: &str, b: &tiles::Batch) -> Result<Vec<f32>, InferenceError> {
    let dims = [b.n as u32, b.channels as u32, b.height as u32, b.width as u32];
    let outputs = inference::infer(model, &[inference::f32_tensor("input", &dims, b.data)])?;
    let out = outputs.first().ok_or_else(|| InferenceError::Failed(format!("model '{model}' returned no tensor")))?;
    let want = [b.n as u32, b.channels as u32, 2 * b.height as u32, 2 * b.width as u32];
    if out.dimensions != want {
        return Err(InferenceError::Failed(format!(
            "model '{model}' returned shape {:?} for input {dims:?}; a 2x model returns {want:?}",
            out.dimensions
        )));
    }
    inference::f32_values(out).map_err(|e| InferenceError::Failed(e.to_string()))
}

/// An unknown model or a host without inference falls back to Lanczos3
/// when asked to; everything else (and those, when not asked) fails.
fn fallback_or_fail(
    source: &DynamicImage,
    nw: u32,
    nh: u32,
    p: &Params,
    e: InferenceError,
) -> Result<(DynamicImage, Option<String>), StageError> {
    let recoverable = matches!(e, InferenceError::UnknownModel(_) | InferenceError::Unavailable(_));
    let err = inference::to_stage_error(&p.model, e);
    if recoverable && p.fallback_to_lanczos {
        let warning = format!("{err}; upscaled with lanczos3 instead (fallback_to_lanczos)");
        return Ok((resample(source, nw, nh)?, Some(warning)));
    }
    Err(match err {
        StageError::InvalidInput(m) => StageError::invalid_input(format!(
            "{m} (method: model needs a 2x RGB model in the host's model repository; set fallback_to_lanczos to upscale anyway)"
        )),
        other => other,
    })
}

/// Lanczos3 on one 8-bit channel (through the RGB path: one plane thrice).
fn lanczos_gray(a: &[u8], w: u32, h: u32, nw: u32, nh: u32) -> Result<Vec<u8>, StageError> {
    let rgb: Vec<u8> = a.iter().flat_map(|&v| [v, v, v]).collect();
    let out = resize::lanczos3(&rgb, w, h, 3, nw, nh).map_err(StageError::failed)?;
    Ok(out.chunks_exact(3).map(|c| c[0]).collect())
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn passes_reach_the_target_then_lanczos_finishes() {
        assert_eq!(passes((100, 50), (200, 100)), 1);
        assert_eq!(passes((100, 50), (150, 75)), 1);
        assert_eq!(passes((100, 50), (300, 150)), 2); // 3x: model 4x, Lanczos down
        assert_eq!(passes((100, 50), (400, 200)), 2);
        assert_eq!(passes((100, 50), (900, 450)), 2); // beyond 4x: Lanczos up the rest
    }
}
