//! `distressed`: a worn, printed-and-weathered look. A seeded grunge
//! texture erodes the image's alpha; colours are kept as they are.
//!
//! The texture has four parts:
//! - wear: multi-octave Perlin noise (fbm), thresholded by `intensity`
//!   into soft-edged patches, with fine grain making their edges ragged;
//! - edge wear: shapes chip more near their outlines (a blurred alpha);
//! - scratches: thin tapered curves, mostly along one direction;
//! - speckles: small dots, partly clustered.
//!
//! Everything scales with the image (and `scale`), so a 256 px and a
//! 2048 px version of a logo wear alike. Same input, params and seed: same bytes.

use image::RgbaImage;
use stagecraft_sdk::images::{decode, encode, stem, unique_name, Format};
use stagecraft_sdk::prelude::*;
use stagecraft_sdk::round4;

pub const MAX_PIXELS: u64 = 50_000_000;

fn default_intensity() -> f32 {
    0.5
}
fn one() -> f32 {
    1.0
}
fn yes() -> bool {
    true
}

/// Parameters of `distressed`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// How worn: 0 leaves the image as it is, 0.3 is lightly aged, 0.6 well worn, 1 heavily eroded.
    #[serde(default = "default_intensity")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub intensity: f32,
    /// Seed of the texture; other seeds wear the image in other places.
    #[serde(default)]
    pub seed: u64,
    /// Size of the texture's features, relative to the image (0.25 = fine grain, 4 = coarse patches).
    #[serde(default = "one")]
    #[schemars(range(min = 0.25, max = 4.0))]
    pub scale: f32,
    /// Add scratches.
    #[serde(default = "yes")]
    pub scratches: bool,
    /// Add speckles (small dots of missing ink).
    #[serde(default = "yes")]
    pub speckles: bool,
    /// Wear shapes more near their edges.
    #[serde(default = "yes")]
    pub edge_wear: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub intensity: f32,
    pub seed: u64,
    pub scale: f32,
    pub scratches: bool,
    pub speckles: bool,
    pub edge_wear: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { intensity: 0.5, seed: 0, scale: 1.0, scratches: true, speckles: true, edge_wear: true }
    }
}

impl Options {
    pub fn from_params(p: &Params) -> Result<Options, StageError> {
        if !(0.0..=1.0).contains(&p.intensity) {
            return Err(StageError::invalid_input(format!("intensity {} is out of range 0..=1", p.intensity)));
        }
        if !(0.25..=4.0).contains(&p.scale) {
            return Err(StageError::invalid_input(format!("scale {} is out of range 0.25..=4", p.scale)));
        }
        Ok(Options {
            intensity: p.intensity,
            seed: p.seed,
            scale: p.scale,
            scratches: p.scratches,
            speckles: p.speckles,
            edge_wear: p.edge_wear,
        })
    }
}

// ---- noise ----------------------------------------------------------------------

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ 0xd157_7e55))
    }
    fn f32(&mut self) -> f32 {
        self.0 = mix(self.0);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
}

/// 2D Perlin (gradient) noise with hashed gradients; about -0.7..0.7.
pub struct Perlin {
    seed: u64,
    grads: [(f32, f32); 256],
}

impl Perlin {
    pub fn new(seed: u64) -> Perlin {
        let mut grads = [(0.0, 0.0); 256];
        for (i, g) in grads.iter_mut().enumerate() {
            let a = i as f32 / 256.0 * std::f32::consts::TAU;
            *g = (a.cos(), a.sin());
        }
        Perlin { seed: mix(seed), grads }
    }

    fn grad(&self, ix: i32, iy: i32, dx: f32, dy: f32) -> f32 {
        let h = mix(self.seed ^ ((ix as u32 as u64) << 32 | iy as u32 as u64));
        let (gx, gy) = self.grads[(h & 255) as usize];
        gx * dx + gy * dy
    }

    pub fn noise(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (ix, iy) = (fx as i32, fy as i32);
        let (dx, dy) = (x - fx, y - fy);
        let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
        let (u, v) = (fade(dx), fade(dy));
        let n00 = self.grad(ix, iy, dx, dy);
        let n10 = self.grad(ix + 1, iy, dx - 1.0, dy);
        let n01 = self.grad(ix, iy + 1, dx, dy - 1.0);
        let n11 = self.grad(ix + 1, iy + 1, dx - 1.0, dy - 1.0);
        let a = n00 + (n10 - n00) * u;
        let b = n01 + (n11 - n01) * u;
        a + (b - a) * v
    }

    /// Fractal sum of `octaves`, mapped to about 0..1.
    pub fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for o in 0..octaves {
            // Offset each octave so their lattices do not line up.
            let off = o as f32 * 17.31;
            sum += amp * self.noise(x * freq + off, y * freq - off);
            norm += amp;
            amp *= 0.5;
            freq *= 2.03;
        }
        (0.5 + 0.5 * sum / norm / 0.55).clamp(0.0, 1.0)
    }
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Three box blurs (about a Gaussian of sigma ~ r) of a float plane.
fn blur(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut a = src.to_vec();
    let mut b = vec![0.0; a.len()];
    for _ in 0..3 {
        box_pass(&a, &mut b, w, h, r, true);
        box_pass(&b, &mut a, w, h, r, false);
    }
    a
}

fn box_pass(src: &[f32], dst: &mut [f32], w: usize, h: usize, r: usize, horizontal: bool) {
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let idx = |line: usize, i: usize| if horizontal { line * w + i } else { i * w + line };
    let norm = 1.0 / (2 * r + 1) as f32;
    for line in 0..lines {
        // Edges clamp to the border value.
        let at = |i: isize| src[idx(line, i.clamp(0, len as isize - 1) as usize)];
        let mut acc: f32 = (-(r as isize)..=r as isize).map(at).sum();
        for i in 0..len {
            dst[idx(line, i)] = acc * norm;
            acc += at(i as isize + r as isize + 1) - at(i as isize - r as isize);
        }
    }
}

/// Adds a tapered quadratic Bezier stroke into `mask` (max-combined).
fn stroke(mask: &mut [f32], w: usize, h: usize, pts: [(f32, f32); 3], width: f32, strength: f32) {
    const STEPS: usize = 24;
    let at = |t: f32| {
        let u = 1.0 - t;
        (
            u * u * pts[0].0 + 2.0 * u * t * pts[1].0 + t * t * pts[2].0,
            u * u * pts[0].1 + 2.0 * u * t * pts[1].1 + t * t * pts[2].1,
        )
    };
    for s in 0..STEPS {
        let (t0, t1) = (s as f32 / STEPS as f32, (s + 1) as f32 / STEPS as f32);
        let (a, b) = (at(t0), at(t1));
        let tm = (t0 + t1) * 0.5;
        let half = 0.5 * width * (std::f32::consts::PI * tm).sin().sqrt().max(0.15);
        let pad = half + 1.0;
        let x0 = (a.0.min(b.0) - pad).floor().max(0.0) as usize;
        let x1 = ((a.0.max(b.0) + pad).ceil().max(0.0) as usize).min(w);
        let y0 = (a.1.min(b.1) - pad).floor().max(0.0) as usize;
        let y1 = ((a.1.max(b.1) + pad).ceil().max(0.0) as usize).min(h);
        let (ex, ey) = (b.0 - a.0, b.1 - a.1);
        let ee = (ex * ex + ey * ey).max(1e-6);
        for y in y0..y1 {
            for x in x0..x1 {
                let (px, py) = (x as f32 + 0.5 - a.0, y as f32 + 0.5 - a.1);
                let k = ((px * ex + py * ey) / ee).clamp(0.0, 1.0);
                let d = ((px - ex * k).powi(2) + (py - ey * k).powi(2)).sqrt();
                // Thin strokes fade rather than vanish.
                let c = (half + 0.5 - d).clamp(0.0, 1.0) * strength * (2.0 * half).clamp(0.35, 1.0);
                let m = &mut mask[y * w + x];
                *m = m.max(c);
            }
        }
    }
}

fn disc(mask: &mut [f32], w: usize, h: usize, cx: f32, cy: f32, r: f32, strength: f32) {
    let x0 = (cx - r - 1.0).floor().max(0.0) as usize;
    let x1 = ((cx + r + 1.0).ceil().max(0.0) as usize).min(w);
    let y0 = (cy - r - 1.0).floor().max(0.0) as usize;
    let y1 = ((cy + r + 1.0).ceil().max(0.0) as usize).min(h);
    for y in y0..y1 {
        for x in x0..x1 {
            let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
            let c = (r + 0.5 - d).clamp(0.0, 1.0) * strength;
            let m = &mut mask[y * w + x];
            *m = m.max(c);
        }
    }
}

/// What `distress` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Fraction of the image's total alpha that was removed.
    pub alpha_removed: f32,
    pub scratches: usize,
    pub speckles: usize,
}

/// Erodes the alpha of `img` in place.
pub fn distress(img: &mut RgbaImage, o: &Options) -> Report {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let before: u64 = img.pixels().map(|p| p[3] as u64).sum();
    if o.intensity <= 0.0 || n == 0 {
        return Report { alpha_removed: 0.0, scratches: 0, speckles: 0 };
    }
    let k = o.intensity;
    // Texture units: pixels per unit grow with the image and `scale`.
    let unit = (w.max(h) as f32 / 512.0).max(0.25) * o.scale;
    let area = ((n as f32) / (512.0 * 512.0)).clamp(0.05, 16.0);
    let mut rng = Rng::new(o.seed);
    let wear = Perlin::new(o.seed ^ 0x1);
    let grain = Perlin::new(o.seed ^ 0x2);
    let mut mask = vec![0.0f32; n];

    // Edge proximity: 0 deep inside a shape, up to ~0.5 on its outline.
    let edge: Option<Vec<f32>> = o.edge_wear.then(|| {
        let alpha: Vec<f32> = img.pixels().map(|p| p[3] as f32 / 255.0).collect();
        let r = (3.0 * unit).round().max(1.0) as usize;
        let b = blur(&alpha, w, h, r);
        alpha.iter().zip(b).map(|(a, b)| (a - b).max(0.0)).collect()
    });

    // Wear patches with ragged edges.
    let threshold = 1.0 - 0.65 * k;
    let soft = 0.05;
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / unit, y as f32 / unit);
            let patches = wear.fbm(u / 56.0, v / 56.0, 5);
            let fine = grain.fbm(u / 3.5, v / 3.5, 3);
            let mut t = 0.72 * patches + 0.28 * fine;
            if let Some(e) = &edge {
                t += e[y * w + x] * 0.9 * k;
            }
            let m = smoothstep(threshold - soft, threshold + soft, t);
            // Partly worn ink: fine grain thins the coverage near patches.
            let thin = smoothstep(threshold - 0.18, threshold, t) * 0.35 * k * fine;
            mask[y * w + x] = m.max(thin);
        }
    }

    // Scratches: mostly along one direction, a few strays.
    let mut scratches = 0;
    if o.scratches {
        let count = (k * 36.0 * area.sqrt()).round() as usize;
        let dominant = rng.range(0.0, std::f32::consts::PI);
        let diag = (w.min(h)) as f32;
        for i in 0..count {
            let angle =
                if i % 5 == 4 { rng.range(0.0, std::f32::consts::PI) } else { dominant + rng.range(-0.35, 0.35) };
            let len = rng.range(0.06, 0.4) * diag;
            let (cx, cy) = (rng.range(0.0, w as f32), rng.range(0.0, h as f32));
            let (dx, dy) = (angle.cos() * len * 0.5, angle.sin() * len * 0.5);
            let bend = rng.range(-0.12, 0.12) * len;
            let ctrl = (cx - dy / len.max(1.0) * bend * 2.0, cy + dx / len.max(1.0) * bend * 2.0);
            let width = rng.range(0.4, 1.8) * unit;
            let strength = rng.range(0.55, 1.0);
            stroke(&mut mask, w, h, [(cx - dx, cy - dy), ctrl, (cx + dx, cy + dy)], width, strength);
            scratches += 1;
        }
    }

    // Speckles: some alone, some in clusters.
    let mut speckles = 0;
    if o.speckles {
        let count = (k * 900.0 * area).round() as usize;
        let mut last = (0.0f32, 0.0f32);
        for _ in 0..count {
            let (cx, cy) = if speckles > 0 && rng.f32() < 0.35 {
                (last.0 + rng.range(-6.0, 6.0) * unit, last.1 + rng.range(-6.0, 6.0) * unit)
            } else {
                (rng.range(0.0, w as f32), rng.range(0.0, h as f32))
            };
            // Mostly small, occasionally larger.
            let r = (0.35 + 2.2 * rng.f32().powi(3)) * unit;
            disc(&mut mask, w, h, cx, cy, r, rng.range(0.6, 1.0));
            last = (cx, cy);
            speckles += 1;
        }
    }

    for (p, m) in img.pixels_mut().zip(&mask) {
        p[3] = (p[3] as f32 * (1.0 - m.clamp(0.0, 1.0))).round() as u8;
    }
    let after: u64 = img.pixels().map(|p| p[3] as u64).sum();
    let alpha_removed = if before == 0 { 0.0 } else { (before - after) as f32 / before as f32 };
    Report { alpha_removed, scratches, speckles }
}

struct Distressed;

impl Stage for Distressed {
    type Params = Params;
    const NAME: &'static str = "distressed";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Worn/grunge effect: erodes each image's alpha with seeded multi-octave Perlin \
        wear, edge chipping, scratches and speckles, keeping its colours; PNG with alpha out";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let o = Options::from_params(&input.params)?;
        input.first()?;
        let mut out = Output::new();
        let mut results = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        let total = input.artifacts.len();
        for (i, artifact) in input.artifacts.iter().enumerate() {
            progress(i as f32 / total as f32, &format!("distressing {}", artifact.name));
            let img = decode(artifact)?;
            if img.width() as u64 * img.height() as u64 > MAX_PIXELS {
                return Err(StageError::invalid_input(format!(
                    "{}: {}x{} is more than {MAX_PIXELS} pixels",
                    artifact.name,
                    img.width(),
                    img.height()
                )));
            }
            let mut rgba = img.to_rgba8();
            // Each input gets its own texture, still fixed by the seed.
            let per = Options { seed: o.seed.wrapping_add(i as u64), ..o.clone() };
            let r = distress(&mut rgba, &per);
            let (w, h) = rgba.dimensions();
            let data = encode(&image::DynamicImage::ImageRgba8(rgba), Format::Png, 90)?;
            let name = unique_name(&mut used, stem(&artifact.name), ".png");
            results.push(json!({
                "name": name,
                "source": artifact.name,
                "width": w,
                "height": h,
                "alpha_removed": round4(r.alpha_removed),
                "scratches": r.scratches,
                "speckles": r.speckles,
            }));
            out = out.artifact(name, "image/png", data);
        }
        progress(1.0, "done");
        let first = results[0].clone();
        Ok(out
            .meta("intensity", round4(o.intensity))
            .meta("seed", o.seed)
            .meta("scale", round4(o.scale))
            .meta("width", &first["width"])
            .meta("height", &first["height"])
            .meta("alpha_removed", &first["alpha_removed"])
            .meta("images", results))
    }
}

export_stage!(Distressed);

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn logo() -> RgbaImage {
        RgbaImage::from_fn(160, 120, |x, y| {
            let d = ((x as f32 - 80.0).powi(2) + (y as f32 - 60.0).powi(2)).sqrt();
            if d < 45.0 {
                Rgba([200, 30, 40, 255])
            } else {
                Rgba([255, 255, 255, 0])
            }
        })
    }

    #[test]
    fn zero_intensity_is_identity() {
        let mut img = logo();
        let r = distress(&mut img, &Options { intensity: 0.0, ..Options::default() });
        assert_eq!(img, logo());
        assert_eq!(r.alpha_removed, 0.0);
    }

    #[test]
    fn erodes_alpha_keeps_colour() {
        let src = logo();
        let mut img = src.clone();
        let r = distress(&mut img, &Options::default());
        assert!(r.alpha_removed > 0.03 && r.alpha_removed < 0.6, "removed {}", r.alpha_removed);
        for (a, b) in src.pixels().zip(img.pixels()) {
            assert_eq!(&a.0[..3], &b.0[..3], "colour kept");
            assert!(b[3] <= a[3], "alpha only goes down");
        }
        // Transparent stays transparent; something opaque remains.
        assert!(img.pixels().any(|p| p[3] == 255));
    }

    #[test]
    fn more_intensity_wears_more() {
        let mut last = 0.0;
        for k in [0.2, 0.5, 0.9] {
            let mut img = logo();
            let r = distress(&mut img, &Options { intensity: k, ..Options::default() });
            assert!(r.alpha_removed > last, "intensity {k}: {} <= {last}", r.alpha_removed);
            last = r.alpha_removed;
        }
    }

    #[test]
    fn seeded_and_deterministic() {
        let run = |seed| {
            let mut img = logo();
            distress(&mut img, &Options { seed, ..Options::default() });
            img
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn perlin_is_smooth_and_bounded() {
        let p = Perlin::new(9);
        let mut lo: f32 = 1.0;
        let mut hi: f32 = 0.0;
        for i in 0..2000 {
            let (x, y) = (i as f32 * 0.37, i as f32 * 0.11);
            let v = p.fbm(x, y, 5);
            lo = lo.min(v);
            hi = hi.max(v);
            assert!((p.noise(x, y) - p.noise(x + 0.001, y)).abs() < 0.01);
        }
        assert!(lo < 0.3 && hi > 0.7, "range {lo}..{hi}");
        assert_eq!(p.noise(3.0, 4.0), 0.0, "zero at lattice points");
    }

    #[test]
    fn params_are_checked() {
        let p = |v: serde_json::Value| {
            serde_json::from_value::<Params>(v)
                .map_err(|e| e.to_string())
                .and_then(|p| Options::from_params(&p).map_err(|e| e.to_string()))
        };
        assert!(p(json!({})).is_ok());
        assert!(p(json!({"intensity": 1.5})).is_err());
        assert!(p(json!({"scale": 0})).is_err());
        assert!(p(json!({"grit": 1})).is_err());
    }
}
