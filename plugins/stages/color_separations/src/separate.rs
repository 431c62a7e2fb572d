//! The separation algorithm, free of host imports so a native benchmark and
//! the unit tests can call [`separate`] directly.

use image::RgbaImage;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stagecraft_imaging::color::{self, ColorSpace};
use stagecraft_imaging::{quantize, QuantizeOptions, Quantized, SwatchFrom, TRANSPARENT};

/// Parameters of `color_separations`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Number of spot colours to separate into (2 to 16). Fewer come back
    /// when the image has fewer distinct colours.
    #[schemars(range(min = 2, max = 16))]
    pub colors: u8,
    /// Colour space in which k-means measures distances: `oklab` (default)
    /// or CIE `lab` (D65).
    pub color_space: ColorSpace,
    /// Seed of the k-means++ initialisation: the same image, params and
    /// seed always give the same separation.
    pub seed: u64,
    /// Upper bound on Lloyd iterations (1 to 1000); k-means usually
    /// converges far sooner.
    #[schemars(range(min = 1, max = 1000))]
    pub max_iterations: u32,
    /// Pixels whose alpha is below this are transparent: ignored by the
    /// clustering and left transparent in every output (0 keeps all pixels).
    pub alpha_threshold: u8,
    /// Colour of each separation: `dominant` (most frequent actual colour in
    /// the cluster, keeps exact brand colours; default) or `centroid` (the
    /// cluster mean; better for photographs).
    pub swatch: SwatchFrom,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            colors: 4,
            color_space: ColorSpace::Oklab,
            seed: 1,
            max_iterations: 100,
            alpha_threshold: 128,
            swatch: SwatchFrom::Dominant,
        }
    }
}

impl Params {
    /// Checks ranges the JSON types cannot express; the message is for the caller.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=16).contains(&self.colors) {
            return Err(format!("colors must be between 2 and 16, got {}", self.colors));
        }
        if !(1..=1000).contains(&self.max_iterations) {
            return Err(format!("max_iterations must be between 1 and 1000, got {}", self.max_iterations));
        }
        Ok(())
    }
}

/// The result of [`separate`]: a palette (largest share first) and, per
/// pixel, which palette entry it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Separation {
    pub colors_requested: u8,
    pub color_space: ColorSpace,
    pub quantized: Quantized,
}

/// Separates `rgba` into at most `params.colors` spot colours. Params are
/// clamped to their valid ranges (call [`Params::validate`] first to
/// report bad ones). Deterministic for given params.
pub fn separate(rgba: &RgbaImage, params: &Params) -> Separation {
    let opts = QuantizeOptions {
        colors: params.colors.clamp(2, 16) as usize,
        space: params.color_space,
        seed: params.seed,
        max_iterations: params.max_iterations.clamp(1, 1000),
        alpha_threshold: params.alpha_threshold,
        swatch: params.swatch,
        ..QuantizeOptions::default()
    };
    Separation { colors_requested: params.colors, color_space: params.color_space, quantized: quantize(rgba, &opts) }
}

impl Separation {
    pub fn width(&self) -> u32 {
        self.quantized.width
    }
    pub fn height(&self) -> u32 {
        self.quantized.height
    }
    /// Number of separations (palette entries).
    pub fn len(&self) -> usize {
        self.quantized.palette.len()
    }
    pub fn is_empty(&self) -> bool {
        self.quantized.palette.is_empty()
    }

    /// Layer `i` as RGBA: its colour where assigned, transparent elsewhere.
    pub fn layer_rgba(&self, i: usize) -> RgbaImage {
        let [r, g, b] = self.quantized.palette[i].rgb;
        let mut out = RgbaImage::new(self.width(), self.height());
        for (px, &l) in out.as_mut().chunks_exact_mut(4).zip(&self.quantized.labels) {
            if l as usize == i {
                px.copy_from_slice(&[r, g, b, 255]);
            }
        }
        out
    }

    /// Every pixel in its palette colour; left-out pixels transparent.
    pub fn composite_rgba(&self) -> RgbaImage {
        let mut out = RgbaImage::new(self.width(), self.height());
        for (px, &l) in out.as_mut().chunks_exact_mut(4).zip(&self.quantized.labels) {
            if l != TRANSPARENT {
                let [r, g, b] = self.quantized.palette[l as usize].rgb;
                px.copy_from_slice(&[r, g, b, 255]);
            }
        }
        out
    }

    /// Layer `i` as a 1-bit indexed PNG (transparent + the colour): small
    /// files that any viewer shows as RGBA.
    pub fn layer_png(&self, i: usize) -> Result<Vec<u8>, String> {
        let rgb = self.quantized.palette[i].rgb;
        let indices: Vec<u8> = self.quantized.labels.iter().map(|&l| (l as usize == i) as u8).collect();
        indexed_png(self.width(), self.height(), &[[0, 0, 0], rgb], Some(0), &indices)
    }

    /// The composite as an indexed PNG (palette plus one transparent entry
    /// when some pixels are transparent).
    pub fn composite_png(&self) -> Result<Vec<u8>, String> {
        let mut palette: Vec<[u8; 3]> = self.quantized.palette.iter().map(|s| s.rgb).collect();
        let has_transparent = self.quantized.opaque_pixels < self.quantized.labels.len() as u64;
        let transparent = if has_transparent {
            palette.push([0, 0, 0]);
            Some((palette.len() - 1) as u8)
        } else {
            None
        };
        let indices: Vec<u8> = self
            .quantized
            .labels
            .iter()
            .map(|&l| if l == TRANSPARENT { transparent.unwrap_or(0) } else { l })
            .collect();
        indexed_png(self.width(), self.height(), &palette, transparent, &indices)
    }

    /// Smallest CIE ΔE*76 between two palette colours (None with < 2 colours):
    /// a small value means two separations are nearly the same ink.
    pub fn min_delta_e(&self) -> Option<f32> {
        let p = &self.quantized.palette;
        let mut best: Option<f32> = None;
        for i in 0..p.len() {
            for j in i + 1..p.len() {
                let d = stagecraft_imaging::kmeans::dist2(&p[i].lab, &p[j].lab).sqrt();
                best = Some(best.map_or(d, |b: f32| b.min(d)));
            }
        }
        best
    }

    /// The palette as JSON: hex, RGB, CIE Lab, OKLab, pixel count and share
    /// of the opaque pixels, and the layer file of each colour.
    pub fn palette_json(&self, layer_names: &[String]) -> Value {
        let opaque = self.quantized.opaque_pixels.max(1) as f64;
        let colors: Vec<Value> = self
            .quantized
            .palette
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "index": i + 1,
                    "hex": color::hex(s.rgb),
                    "rgb": s.rgb,
                    "lab": s.lab.map(|v| round(v as f64, 2)),
                    "oklab": s.oklab.map(|v| round(v as f64, 4)),
                    "pixels": s.pixels,
                    "share": round(s.pixels as f64 / opaque, 4),
                    "layer": layer_names.get(i),
                })
            })
            .collect();
        json!({
            "width": self.width(),
            "height": self.height(),
            "color_space": self.color_space.name(),
            "colors_requested": self.colors_requested,
            "opaque_pixels": self.quantized.opaque_pixels,
            "colors": colors,
        })
    }
}

pub fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// Encodes an indexed-colour PNG at the smallest bit depth that holds the palette.
fn indexed_png(
    width: u32,
    height: u32,
    palette: &[[u8; 3]],
    transparent: Option<u8>,
    indices: &[u8],
) -> Result<Vec<u8>, String> {
    let depth: u8 = match palette.len() {
        0..=2 => 1,
        3..=4 => 2,
        5..=16 => 4,
        _ => 8,
    };
    let per_byte = (8 / depth) as usize;
    let row_bytes = (width as usize).div_ceil(per_byte);
    let mut packed = vec![0u8; row_bytes * height as usize];
    for (row, out) in indices.chunks_exact(width.max(1) as usize).zip(packed.chunks_exact_mut(row_bytes.max(1))) {
        for (x, &v) in row.iter().enumerate() {
            let shift = 8 - depth as usize * (x % per_byte + 1);
            out[x / per_byte] |= v << shift;
        }
    }
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width, height);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(match depth {
            1 => png::BitDepth::One,
            2 => png::BitDepth::Two,
            4 => png::BitDepth::Four,
            _ => png::BitDepth::Eight,
        });
        enc.set_palette(palette.iter().flatten().copied().collect::<Vec<u8>>());
        if let Some(t) = transparent {
            let mut trns = vec![255u8; t as usize + 1];
            trns[t as usize] = 0;
            enc.set_trns(trns);
        }
        enc.set_compression(png::Compression::Balanced);
        let mut w = enc.write_header().map_err(|e| format!("png header: {e}"))?;
        w.write_image_data(&packed).map_err(|e| format!("png data: {e}"))?;
        w.finish().map_err(|e| format!("png finish: {e}"))?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    /// A logo: transparent margin, white plate, blue ring with a hole, red
    /// bar, anti-aliased edge pixels.
    pub(crate) fn logo() -> RgbaImage {
        RgbaImage::from_fn(120, 80, |x, y| {
            if x < 4 || y < 4 || x >= 116 || y >= 76 {
                return Rgba([0, 0, 0, 0]);
            }
            let (dx, dy) = (x as f32 - 40.0, y as f32 - 40.0);
            let r = (dx * dx + dy * dy).sqrt();
            if (12.0..24.0).contains(&r) {
                Rgba([25, 70, 190, 255])
            } else if (24.0..25.0).contains(&r) {
                Rgba([140, 165, 225, 255])
            } else if (70..108).contains(&x) && (30..50).contains(&y) {
                Rgba([215, 35, 45, 255])
            } else {
                Rgba([250, 250, 248, 255])
            }
        })
    }

    #[test]
    fn three_spot_colours() {
        let sep = separate(&logo(), &Params { colors: 3, ..Params::default() });
        assert_eq!(sep.len(), 3);
        let hexes: Vec<String> = sep.quantized.palette.iter().map(|s| color::hex(s.rgb)).collect();
        assert_eq!(hexes[0], "#fafaf8");
        assert!(hexes.contains(&"#1946be".to_string()), "{hexes:?}");
        assert!(hexes.contains(&"#d7232d".to_string()), "{hexes:?}");
        assert!(sep.quantized.converged);
        assert!(sep.min_delta_e().unwrap() > 30.0);
    }

    #[test]
    fn layers_recompose_to_the_composite() {
        let sep = separate(&logo(), &Params { colors: 4, color_space: ColorSpace::Lab, ..Params::default() });
        let composite = sep.composite_rgba();
        let mut stacked = RgbaImage::new(sep.width(), sep.height());
        let mut covered = vec![0u8; (sep.width() * sep.height()) as usize];
        for i in 0..sep.len() {
            let layer = sep.layer_rgba(i);
            for (k, (dst, src)) in stacked.pixels_mut().zip(layer.pixels()).enumerate() {
                if src[3] == 255 {
                    *dst = *src;
                    covered[k] += 1;
                }
            }
        }
        assert_eq!(stacked, composite);
        // Layers are disjoint, and cover exactly the opaque input pixels.
        assert!(covered.iter().all(|&c| c <= 1));
        let opaque = logo().pixels().filter(|p| p[3] >= 128).count();
        assert_eq!(covered.iter().filter(|&&c| c == 1).count(), opaque);
    }

    #[test]
    fn pngs_decode_to_the_same_pixels() {
        let sep = separate(&logo(), &Params { colors: 3, ..Params::default() });
        let composite = image::load_from_memory(&sep.composite_png().unwrap()).unwrap().to_rgba8();
        assert_eq!(composite, sep.composite_rgba());
        for i in 0..sep.len() {
            let layer = image::load_from_memory(&sep.layer_png(i).unwrap()).unwrap().to_rgba8();
            assert_eq!(layer, sep.layer_rgba(i), "layer {i}");
        }
        // Odd widths exercise the bit packing.
        let small =
            RgbaImage::from_fn(
                13,
                5,
                |x, y| if (x + y) % 3 == 0 { Rgba([0, 0, 0, 255]) } else { Rgba([255, 255, 0, 255]) },
            );
        let sep = separate(&small, &Params { colors: 2, ..Params::default() });
        let back = image::load_from_memory(&sep.composite_png().unwrap()).unwrap().to_rgba8();
        assert_eq!(back, small);
    }

    #[test]
    fn deterministic() {
        let p = Params { colors: 5, seed: 1234, ..Params::default() };
        assert_eq!(separate(&logo(), &p), separate(&logo(), &p));
        let a = separate(&logo(), &p).composite_png().unwrap();
        let b = separate(&logo(), &p).composite_png().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn palette_json_shares_sum_to_one() {
        let sep = separate(&logo(), &Params { colors: 3, ..Params::default() });
        let names: Vec<String> = (0..sep.len()).map(|i| format!("l{i}.png")).collect();
        let v = sep.palette_json(&names);
        let colors = v["colors"].as_array().unwrap();
        assert_eq!(colors.len(), 3);
        let share: f64 = colors.iter().map(|c| c["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-3, "{share}");
        assert_eq!(colors[0]["layer"], "l0.png");
        assert_eq!(colors[0]["lab"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn params_are_strict() {
        let bad: Result<Params, _> = serde_json::from_str(r#"{"colours": 3}"#);
        assert!(bad.is_err());
        let p: Params = serde_json::from_str(r#"{"colors": 20}"#).unwrap();
        assert!(p.validate().unwrap_err().contains("between 2 and 16"));
        let p: Params = serde_json::from_str(r#"{"color_space": "lab"}"#).unwrap();
        assert_eq!(p.color_space, ColorSpace::Lab);
        assert!(p.validate().is_ok());
    }
}
