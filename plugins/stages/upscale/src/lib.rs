//! `upscale`: Lanczos3 resampling, or a super-resolution model run by the
//! host, by a factor (2, 3, 4) or to a target size. PNG or JPEG in; PNG or
//! JPEG out (same as the input unless `format` says).
//!
//! `method: model` runs a 2x model (default `sr2x`) through the host's
//! `inference` import once or twice, in tiles (see `tiles`), then Lanczos3
//! to the exact target when it is not a power of two (factor 3 is 4x by
//! the model, then Lanczos3 down). Alpha is always Lanczos3.

mod model;
mod resize;
pub mod tiles;

use image::{DynamicImage, GenericImageView};
use stagecraft_sdk::images::{self, Format};
use stagecraft_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Scale factor; ignored when `width` or `height` is given.
    #[schemars(range(min = 2, max = 4))]
    factor: Option<u32>,
    /// Target width in pixels; with only one of width/height, the other keeps the aspect ratio.
    #[schemars(range(min = 1, max = 16384))]
    width: Option<u32>,
    /// Target height in pixels.
    #[schemars(range(min = 1, max = 16384))]
    height: Option<u32>,
    /// Output encoding; defaults to the input's.
    format: Option<Format>,
    /// JPEG quality, 1-100.
    #[serde(default = "default_quality")]
    #[schemars(range(min = 1, max = 100))]
    quality: u8,
    /// Largest output allowed, in megapixels.
    #[serde(default = "default_max_megapixels")]
    max_megapixels: f64,
    /// When the output would exceed `max_megapixels`, return the original
    /// image with a warning in metadata instead of failing.
    #[serde(default)]
    fallback_to_original: bool,
    /// `lanczos3` (resampling) or `model` (a 2x super-resolution model from
    /// the host's model repository, run once for 2x, twice for 3x and 4x;
    /// 3x and sizes that are not a power of two are finished with Lanczos3).
    #[serde(default)]
    method: Method,
    /// The model for `method: model`: 2x, RGB NCHW float32 in [0, 1].
    #[serde(default = "default_model")]
    model: String,
    /// Tile size in source pixels for `method: model`; each call to the
    /// model sees a tile plus an 8-pixel margin, so memory stays bounded.
    #[serde(default = "default_tile")]
    #[schemars(range(min = 32, max = 1024))]
    tile: u32,
    /// With `method: model`, when the host has no such model or no
    /// inference service, upscale with Lanczos3 and put a warning in
    /// metadata instead of failing.
    #[serde(default)]
    fallback_to_lanczos: bool,
}

/// How pixels are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Method {
    /// Lanczos3 resampling in the stage.
    #[default]
    Lanczos3,
    /// A super-resolution model run by the host.
    Model,
}

fn default_quality() -> u8 {
    90
}
fn default_max_megapixels() -> f64 {
    64.0
}
fn default_model() -> String {
    "sr2x".to_owned()
}
fn default_tile() -> u32 {
    128
}

pub struct Upscale;

impl Stage for Upscale {
    type Params = Params;
    const NAME: &'static str = "upscale";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Upscales images with Lanczos3 resampling or a super-resolution model on the host, by a factor or to a target size";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png", "image/jpeg"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let p = &input.params;
        if let Some(f) = p.factor {
            if !(2..=4).contains(&f) {
                return Err(StageError::invalid_input(format!("factor must be 2, 3 or 4, not {f}")));
            }
        }
        if !(32..=1024).contains(&p.tile) {
            return Err(StageError::invalid_input(format!("tile must be in 32..=1024, not {}", p.tile)));
        }
        input.first()?;
        let mut output = Output::new();
        let mut used_model = false;
        let mut sizes = Vec::new();
        let total = input.artifacts.len();
        for (i, artifact) in input.artifacts.iter().enumerate() {
            let source = images::decode(artifact)?;
            let (w, h) = source.dimensions();
            let (nw, nh) = target_size(p, w, h)?;
            let format = p.format.or_else(|| Format::of(artifact)).unwrap_or(Format::Png);
            let name = format!("{}_x{}.{}", images::stem(&artifact.name), nw, format.extension());

            let megapixels = nw as f64 * nh as f64 / 1e6;
            let result = if megapixels > p.max_megapixels {
                let why = format!(
                    "{}: {nw}x{nh} is {megapixels:.1} MP, over the {} MP limit",
                    artifact.name, p.max_megapixels
                );
                if !p.fallback_to_original {
                    return Err(StageError::invalid_input(why));
                }
                log::warn(&format!("{why}; returning the original"));
                output = output.meta("warning", format!("{why}; returned the original image"));
                source
            } else if p.method == Method::Model {
                let (image, warning) = model::upscale(&source, nw, nh, p, i, total)?;
                if let Some(w) = warning {
                    log::warn(&w);
                    output = output.meta("warning", w);
                } else {
                    used_model = true;
                }
                image
            } else {
                resample(&source, nw, nh)?
            };
            let (ow, oh) = result.dimensions();
            sizes.push(json!({ "name": name, "width": ow, "height": oh, "source_width": w, "source_height": h }));
            output = output.artifact(name, format.media_type(), images::encode(&result, format, p.quality)?);
            progress((i + 1) as f32 / total as f32, &artifact.name);
        }
        let filter = if used_model { format!("model:{}", p.model) } else { "lanczos3".to_owned() };
        Ok(output.meta("images", sizes).meta("filter", filter))
    }
}

/// The output size: explicit width/height (aspect kept when only one is
/// given), else the factor (default 2).
fn target_size(p: &Params, w: u32, h: u32) -> Result<(u32, u32), StageError> {
    let scaled = |num: u32, of: u32, den: u32| ((num as u64 * of as u64 + den as u64 / 2) / den as u64).max(1) as u32;
    let size = match (p.width, p.height) {
        (Some(nw), Some(nh)) => (nw, nh),
        (Some(nw), None) => (nw, scaled(nw, h, w)),
        (None, Some(nh)) => (scaled(nh, w, h), nh),
        (None, None) => {
            let f = p.factor.unwrap_or(2);
            (w * f, h * f)
        }
    };
    if size.0 == 0 || size.1 == 0 || size.0 > 16384 || size.1 > 16384 {
        return Err(StageError::invalid_input(format!("target size {}x{} is out of range (1..16384)", size.0, size.1)));
    }
    Ok(size)
}

fn resample(source: &DynamicImage, nw: u32, nh: u32) -> Result<DynamicImage, StageError> {
    let (w, h) = source.dimensions();
    if source.color().has_alpha() {
        let rgba = source.to_rgba8();
        let out = resize::lanczos3(rgba.as_raw(), w, h, 4, nw, nh).map_err(StageError::failed)?;
        Ok(DynamicImage::ImageRgba8(image::RgbaImage::from_raw(nw, nh, out).expect("sized by resize")))
    } else {
        let rgb = source.to_rgb8();
        let out = resize::lanczos3(rgb.as_raw(), w, h, 3, nw, nh).map_err(StageError::failed)?;
        Ok(DynamicImage::ImageRgb8(image::RgbImage::from_raw(nw, nh, out).expect("sized by resize")))
    }
}

export_stage!(Upscale);
