//! Lanczos3 resampling of `image` buffers, the one resampler the stages
//! share (`social_formats`, `video`, `generate`; `upscale` through
//! [`crate::lanczos`]). RGBA goes through premultiplied alpha and back, so
//! transparent pixels do not bleed their (arbitrary) colour into the edges.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{RgbImage, RgbaImage};

/// Resamples `src`, or the region `crop` of it (`[x, y, width, height]` in
/// source pixels, fractions allowed), to `width` x `height` with Lanczos3.
pub fn resize_rgba(src: &RgbaImage, crop: Option<[f64; 4]>, width: u32, height: u32) -> RgbaImage {
    let raw = resize_raw(src.as_raw(), src.dimensions(), PixelType::U8x4, crop, (width, height));
    RgbaImage::from_raw(width, height, raw).expect("buffer matches its size")
}

/// Resamples `src` to `width` x `height` with Lanczos3.
pub fn resize_rgb(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let raw = resize_raw(src.as_raw(), src.dimensions(), PixelType::U8x3, None, (width, height));
    RgbImage::from_raw(width, height, raw).expect("buffer matches its size")
}

fn resize_raw(
    pixels: &[u8],
    (sw, sh): (u32, u32),
    pixel_type: PixelType,
    crop: Option<[f64; 4]>,
    (w, h): (u32, u32),
) -> Vec<u8> {
    let src = ImageRef::new(sw, sh, pixels, pixel_type).expect("buffer matches its size");
    let mut dst = Image::new(w, h, pixel_type);
    // Lanczos3 and alpha premultiplication are fast_image_resize's defaults;
    // spelled out so a change of default cannot change the stages' output.
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(true);
    if let Some([x, y, cw, ch]) = crop {
        options = options.crop(x, y, cw, ch);
    }
    Resizer::new().resize(&src, &mut dst, &options).expect("same pixel types");
    dst.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, Rgba};

    #[test]
    fn flat_colour_stays_flat() {
        let src = RgbaImage::from_pixel(400, 400, Rgba([37, 99, 201, 255]));
        let out = resize_rgba(&src, None, 123, 77);
        assert_eq!(out.dimensions(), (123, 77));
        assert!(out.pixels().all(|p| p.0 == [37, 99, 201, 255]));
        let src = RgbImage::from_pixel(40, 30, Rgb([5, 6, 7]));
        let out = resize_rgb(&src, 97, 61);
        assert!(out.pixels().all(|p| p.0 == [5, 6, 7]));
    }

    #[test]
    fn transparent_pixels_do_not_bleed() {
        // Opaque red next to fully transparent green: straight-alpha
        // resampling would tint the red edge green.
        let src = RgbaImage::from_fn(64, 64, |x, _| if x < 32 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 255, 0, 0]) });
        let out = resize_rgba(&src, None, 21, 21);
        for p in out.pixels().filter(|p| p[3] > 16) {
            assert!(p[1] < 8 && p[0] > 200, "{p:?}");
        }
    }

    #[test]
    fn crop_takes_the_region() {
        let src =
            RgbaImage::from_fn(100, 50, |x, _| if x < 50 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 0, 255, 255]) });
        let out = resize_rgba(&src, Some([60.0, 0.0, 40.0, 50.0]), 20, 25);
        assert!(out.pixels().all(|p| p.0 == [0, 0, 255, 255]));
    }

    #[test]
    fn raw_lanczos3_matches_the_image_helper() {
        let src = RgbaImage::from_fn(33, 17, |x, y| Rgba([(x * 7) as u8, (y * 13) as u8, 90, (x * y) as u8]));
        let raw = crate::lanczos::lanczos3(src.as_raw(), 33, 17, 4, 70, 40).unwrap();
        assert_eq!(raw, resize_rgba(&src, None, 70, 40).into_raw());
        assert!(crate::lanczos::lanczos3(src.as_raw(), 33, 17, 2, 70, 40).is_err());
    }
}
