//! Colour quantisation of an RGBA image to a small palette.
//!
//! 1. Histogram of the opaque pixels' exact colours (or, past
//!    `max_distinct` colours, of 15-bit RGB bins holding their mean colour).
//! 2. Weighted k-means (k-means++ seeding, seeded) on those colours in a
//!    perceptual space: the cost depends on the number of distinct colours,
//!    not on the number of pixels.
//! 3. Every pixel takes the cluster of its colour; clusters are ordered by
//!    pixel count, largest first.

use crate::color::{self, ColorSpace};
use crate::kmeans::{self, KMeans};
use image::RgbaImage;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Label of pixels left out (alpha below the threshold).
pub const TRANSPARENT: u8 = u8::MAX;

/// How a cluster's swatch colour is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwatchFrom {
    /// The most frequent actual colour in the cluster: flat logo fills keep
    /// their exact colour, whatever anti-aliased edge pixels join them.
    #[default]
    Dominant,
    /// The cluster centroid (mean in the perceptual space): better for photos.
    Centroid,
}

#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Palette size wanted (1..=255); fewer come back if the image has fewer colours.
    pub colors: usize,
    pub space: ColorSpace,
    pub seed: u64,
    pub max_iterations: u32,
    /// Pixels with alpha below this are left out (label [`TRANSPARENT`]).
    /// 0 keeps every pixel.
    pub alpha_threshold: u8,
    pub swatch: SwatchFrom,
    /// Past this many distinct colours, cluster 15-bit RGB bins instead.
    pub max_distinct: usize,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            colors: 4,
            space: ColorSpace::Oklab,
            seed: 1,
            max_iterations: 100,
            alpha_threshold: 128,
            swatch: SwatchFrom::Dominant,
            max_distinct: 1 << 16,
        }
    }
}

/// One palette entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Swatch {
    pub rgb: [u8; 3],
    /// Pixels assigned to it.
    pub pixels: u64,
    /// CIE L*a*b* (D65) of `rgb`.
    pub lab: [f32; 3],
    /// OKLab of `rgb`.
    pub oklab: [f32; 3],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub width: u32,
    pub height: u32,
    /// Largest first.
    pub palette: Vec<Swatch>,
    /// Palette index per pixel, row-major; [`TRANSPARENT`] where left out.
    pub labels: Vec<u8>,
    pub opaque_pixels: u64,
    /// Distinct colours (or colour bins, when `binned`) that were clustered.
    pub distinct_colors: usize,
    pub binned: bool,
    pub iterations: u32,
    pub converged: bool,
    /// Mean squared distance (in the chosen space) of opaque pixels to their
    /// cluster centre.
    pub mean_sq_error: f64,
}

/// Multiplicative hasher for `u32` colour keys (std's SipHash is several
/// times slower here and needs no DoS resistance).
#[derive(Default)]
struct ColorHasher(u64);

impl Hasher for ColorHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(b as u32);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ i as u64).wrapping_mul(0xf135_7aea_2e62_a9c5).rotate_left(26);
    }
}

type ColorMap = HashMap<u32, u32, BuildHasherDefault<ColorHasher>>;

struct Histogram {
    /// Representative sRGB colour of each entry (exact colour or bin mean).
    colors: Vec<[u8; 3]>,
    /// Linear-light colour used for clustering.
    linear: Vec<[f64; 3]>,
    counts: Vec<u64>,
    /// Entry per pixel, `u32::MAX` for left-out pixels.
    index: Vec<u32>,
    binned: bool,
}

fn exact_histogram(img: &RgbaImage, alpha_threshold: u8, max_distinct: usize) -> Option<Histogram> {
    let mut map = ColorMap::default();
    let mut colors = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut index = Vec::with_capacity(img.as_raw().len() / 4);
    let mut last_key = u32::MAX;
    let mut last_idx = u32::MAX;
    for px in img.as_raw().chunks_exact(4) {
        if px[3] < alpha_threshold {
            index.push(u32::MAX);
            continue;
        }
        let key = (px[0] as u32) << 16 | (px[1] as u32) << 8 | px[2] as u32;
        if key != last_key {
            last_key = key;
            last_idx = *map.entry(key).or_insert_with(|| {
                colors.push([px[0], px[1], px[2]]);
                counts.push(0);
                (colors.len() - 1) as u32
            });
            if colors.len() > max_distinct {
                return None;
            }
        }
        counts[last_idx as usize] += 1;
        index.push(last_idx);
    }
    let linear = colors.iter().map(|&c| color::srgb8_to_linear(c)).collect();
    Some(Histogram { colors, linear, counts, index, binned: false })
}

fn binned_histogram(img: &RgbaImage, alpha_threshold: u8) -> Histogram {
    const BINS: usize = 1 << 15;
    let lut = color::srgb_to_linear_lut();
    let mut sums = vec![[0f64; 3]; BINS];
    let mut counts = vec![0u64; BINS];
    let mut bin_of_pixel = Vec::with_capacity(img.as_raw().len() / 4);
    for px in img.as_raw().chunks_exact(4) {
        if px[3] < alpha_threshold {
            bin_of_pixel.push(u32::MAX);
            continue;
        }
        let bin = ((px[0] as usize >> 3) << 10) | ((px[1] as usize >> 3) << 5) | (px[2] as usize >> 3);
        let s = &mut sums[bin];
        s[0] += lut[px[0] as usize] as f64;
        s[1] += lut[px[1] as usize] as f64;
        s[2] += lut[px[2] as usize] as f64;
        counts[bin] += 1;
        bin_of_pixel.push(bin as u32);
    }
    // Compact to the bins in use.
    let mut remap = vec![u32::MAX; BINS];
    let mut colors = Vec::new();
    let mut linear = Vec::new();
    let mut used_counts = Vec::new();
    for bin in 0..BINS {
        if counts[bin] == 0 {
            continue;
        }
        let n = counts[bin] as f64;
        let lin = [sums[bin][0] / n, sums[bin][1] / n, sums[bin][2] / n];
        remap[bin] = colors.len() as u32;
        colors.push(color::linear_to_srgb8(lin));
        linear.push(lin);
        used_counts.push(counts[bin]);
    }
    let index = bin_of_pixel.into_iter().map(|b| if b == u32::MAX { b } else { remap[b as usize] }).collect();
    Histogram { colors, linear, counts: used_counts, index, binned: true }
}

/// Quantises `img` to at most `opts.colors` colours. An image without any
/// opaque pixel gives an empty palette.
pub fn quantize(img: &RgbaImage, opts: &QuantizeOptions) -> Quantized {
    let hist = exact_histogram(img, opts.alpha_threshold, opts.max_distinct.max(1))
        .unwrap_or_else(|| binned_histogram(img, opts.alpha_threshold));
    let points: Vec<[f32; 3]> = hist.linear.iter().map(|&l| opts.space.from_linear(l)).collect();
    let weights: Vec<f64> = hist.counts.iter().map(|&c| c as f64).collect();
    let KMeans { centres, assignment, iterations, converged, inertia } =
        kmeans::kmeans(&points, &weights, opts.colors.clamp(1, 255), opts.seed, opts.max_iterations);

    // Pixel count and swatch candidate of each cluster.
    let k = centres.len();
    let mut pixels = vec![0u64; k];
    let mut dominant: Vec<Option<usize>> = vec![None; k];
    for (i, &c) in assignment.iter().enumerate() {
        let c = c as usize;
        pixels[c] += hist.counts[i];
        let better = match dominant[c] {
            None => true,
            Some(d) => {
                hist.counts[i] > hist.counts[d] || (hist.counts[i] == hist.counts[d] && hist.colors[i] < hist.colors[d])
            }
        };
        if better {
            dominant[c] = Some(i);
        }
    }
    let swatch_rgb = |c: usize| -> [u8; 3] {
        match opts.swatch {
            SwatchFrom::Dominant => hist.colors[dominant[c].expect("non-empty cluster")],
            SwatchFrom::Centroid => opts.space.to_srgb8(centres[c]),
        }
    };
    // Order: most pixels first; ties by colour, so the order is total.
    let mut order: Vec<usize> = (0..k).filter(|&c| pixels[c] > 0).collect();
    let rgbs: Vec<[u8; 3]> = (0..k).map(|c| if pixels[c] > 0 { swatch_rgb(c) } else { [0; 3] }).collect();
    order.sort_by(|&a, &b| pixels[b].cmp(&pixels[a]).then(rgbs[a].cmp(&rgbs[b])));
    let mut rank = vec![TRANSPARENT; k];
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r as u8;
    }
    let palette: Vec<Swatch> = order
        .iter()
        .map(|&c| Swatch {
            rgb: rgbs[c],
            pixels: pixels[c],
            lab: color::srgb8_to_lab(rgbs[c]),
            oklab: color::srgb8_to_oklab(rgbs[c]),
        })
        .collect();
    let entry_label: Vec<u8> = assignment.iter().map(|&c| rank[c as usize]).collect();
    let labels: Vec<u8> =
        hist.index.iter().map(|&i| if i == u32::MAX { TRANSPARENT } else { entry_label[i as usize] }).collect();
    let opaque_pixels: u64 = hist.counts.iter().sum();
    Quantized {
        width: img.width(),
        height: img.height(),
        palette,
        labels,
        opaque_pixels,
        distinct_colors: hist.colors.len(),
        binned: hist.binned,
        iterations,
        converged,
        mean_sq_error: if opaque_pixels > 0 { inertia / opaque_pixels as f64 } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    /// White background, a blue disc, a red square, anti-aliased-ish edges,
    /// and a transparent border.
    fn logo() -> RgbaImage {
        RgbaImage::from_fn(64, 48, |x, y| {
            if x < 2 || y < 2 {
                return Rgba([0, 0, 0, 0]);
            }
            let (dx, dy) = (x as f32 - 20.0, y as f32 - 24.0);
            let r = (dx * dx + dy * dy).sqrt();
            if r < 10.0 {
                Rgba([30, 60, 200, 255])
            } else if r < 11.0 {
                Rgba([140, 155, 225, 255]) // edge blend
            } else if (40..56).contains(&x) && (16..32).contains(&y) {
                Rgba([220, 30, 40, 255])
            } else {
                Rgba([255, 255, 255, 255])
            }
        })
    }

    #[test]
    fn three_colours_from_a_logo() {
        let q = quantize(&logo(), &QuantizeOptions { colors: 3, ..Default::default() });
        assert_eq!(q.palette.len(), 3);
        assert_eq!(q.palette[0].rgb, [255, 255, 255]);
        let rgbs: Vec<_> = q.palette.iter().map(|s| s.rgb).collect();
        assert!(rgbs.contains(&[30, 60, 200]) && rgbs.contains(&[220, 30, 40]), "{rgbs:?}");
        let opaque = q.labels.iter().filter(|&&l| l != TRANSPARENT).count() as u64;
        assert_eq!(opaque, q.opaque_pixels);
        assert_eq!(q.opaque_pixels, 62 * 46);
        assert_eq!(q.palette.iter().map(|s| s.pixels).sum::<u64>(), q.opaque_pixels);
        assert!(q.converged);
        assert!(!q.binned);
        assert_eq!(q.distinct_colors, 4);
    }

    #[test]
    fn deterministic_and_seed_stable_on_flat_art() {
        let img = logo();
        let a = quantize(&img, &QuantizeOptions { colors: 3, seed: 5, ..Default::default() });
        let b = quantize(&img, &QuantizeOptions { colors: 3, seed: 5, ..Default::default() });
        assert_eq!(a, b);
        let c = quantize(&img, &QuantizeOptions { colors: 3, seed: 77, ..Default::default() });
        assert_eq!(a.palette, c.palette, "well separated colours do not depend on the seed");
    }

    #[test]
    fn binned_path_for_many_colours() {
        let img =
            RgbaImage::from_fn(300, 300, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8, 255]));
        let q = quantize(&img, &QuantizeOptions { colors: 8, max_distinct: 1000, ..Default::default() });
        assert!(q.binned);
        assert_eq!(q.palette.len(), 8);
        assert_eq!(q.palette.iter().map(|s| s.pixels).sum::<u64>(), 90_000);
        let cent = quantize(
            &img,
            &QuantizeOptions { colors: 8, max_distinct: 1000, swatch: SwatchFrom::Centroid, ..Default::default() },
        );
        assert_eq!(cent.palette.len(), 8);
    }

    #[test]
    fn fully_transparent_image() {
        let img = RgbaImage::from_pixel(8, 8, Rgba([10, 10, 10, 0]));
        let q = quantize(&img, &QuantizeOptions::default());
        assert!(q.palette.is_empty());
        assert_eq!(q.opaque_pixels, 0);
        assert!(q.labels.iter().all(|&l| l == TRANSPARENT));
    }
}
