// Lanczos3 resampling of raw 8-bit RGB/RGBA pixels with fast_image_resize.
//
// No `//!` docs or other inner attributes here, and no dependency but
// fast_image_resize: `plugins/stages/upscale/src/resize.rs` pulls this file
// in with `include!`, and the host's benchmark compiles that file by path
// to measure the sandbox's cost against the very code the stage runs.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Resizes `pixels` (`width` x `height`, `channels` 3 or 4, row-major) to
/// `new_width` x `new_height` with a Lanczos3 filter. RGBA is resized with
/// premultiplied alpha (and un-premultiplied after), so transparent edges
/// do not bleed colour.
pub fn lanczos3(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    new_width: u32,
    new_height: u32,
) -> Result<Vec<u8>, String> {
    let pixel_type = match channels {
        3 => PixelType::U8x3,
        4 => PixelType::U8x4,
        n => return Err(format!("unsupported channel count {n}")),
    };
    let src = ImageRef::new(width, height, pixels, pixel_type).map_err(|e| format!("source image: {e}"))?;
    let mut dst = Image::new(new_width, new_height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new().resize(&src, &mut dst, &options).map_err(|e| format!("resize: {e}"))?;
    Ok(dst.into_vec())
}
