//! Seeded synthetic fluorescence-like cell images with ground-truth labels:
//! elliptical cells (some placed against a neighbour so they touch or
//! overlap), brighter centres and soft edges, uneven illumination, Poisson
//! shot noise plus gaussian read noise, quantised to 8 or 16 bits.
//!
//! The same seed gives the same images on every machine (its own PRNG, no
//! platform maths beyond IEEE `f64` basics).

use crate::gray::GrayImage;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    pub width: u32,
    pub height: u32,
    /// Cells attempted per image (placement may fit fewer).
    pub cells: usize,
    /// Range of the long semi-axis, in pixels.
    pub radius: (f32, f32),
    /// Share of cells placed against an existing one (touching or overlapping).
    pub clustered: f32,
    /// Illumination falls off by up to this fraction across the field.
    pub illumination: f32,
    /// Expected photons at the brightest cell under full illumination.
    pub photons: f32,
    /// Gaussian read noise, in photons.
    pub read_noise: f32,
    /// 8 or 16.
    pub bits: u8,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            width: 512,
            height: 512,
            cells: 70,
            radius: (9.0, 16.0),
            clustered: 0.4,
            illumination: 0.3,
            photons: 100.0,
            read_noise: 2.0,
            bits: 8,
        }
    }
}

/// One generated image and its truth.
#[derive(Debug, Clone)]
pub struct SynthImage {
    pub image: GrayImage,
    /// Ground-truth instance labels, 1..=count, 0 background.
    pub truth: Vec<u32>,
    pub count: u32,
}

/// SplitMix64: small, fast, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Poisson: Knuth's product method for small means, normal beyond.
    pub fn poisson(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let (mut k, mut p) = (0.0, self.uniform());
            while p > limit {
                k += 1.0;
                p *= self.uniform();
            }
            k
        } else {
            (mean + mean.sqrt() * self.normal()).round().max(0.0)
        }
    }
}

struct Ellipse {
    cx: f64,
    cy: f64,
    a: f64,
    b: f64,
    cos: f64,
    sin: f64,
    brightness: f64,
}

impl Ellipse {
    /// Normalised elliptical radius: < 1 inside.
    fn rho(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = dx * self.cos + dy * self.sin;
        let v = -dx * self.sin + dy * self.cos;
        ((u / self.a).powi(2) + (v / self.b).powi(2)).sqrt()
    }
}

/// Generates one image from `seed`.
pub fn generate(options: &SynthOptions, seed: u64) -> SynthImage {
    assert!(options.bits == 8 || options.bits == 16, "bits must be 8 or 16");
    let mut rng = Rng::new(seed);
    let (w, h) = (options.width as usize, options.height as usize);
    let (rmin, rmax) = (options.radius.0 as f64, options.radius.1 as f64);

    // Place cells: uniformly, or against an existing cell (touching/overlapping).
    let mut cells: Vec<Ellipse> = Vec::new();
    let mut attempts = 0;
    while cells.len() < options.cells && attempts < options.cells * 60 {
        attempts += 1;
        let a = rng.range(rmin, rmax);
        let b = a * rng.range(0.6, 0.95);
        let mean_r = (a + b) / 2.0;
        let (cx, cy) = if !cells.is_empty() && rng.uniform() < options.clustered as f64 {
            let other = &cells[(rng.next_u64() % cells.len() as u64) as usize];
            let angle = rng.range(0.0, 2.0 * std::f64::consts::PI);
            let dist = rng.range(0.8, 0.95) * (mean_r + (other.a + other.b) / 2.0);
            (other.cx + dist * angle.cos(), other.cy + dist * angle.sin())
        } else {
            (rng.range(0.0, w as f64), rng.range(0.0, h as f64))
        };
        if cx < 0.0 || cy < 0.0 || cx >= w as f64 || cy >= h as f64 {
            continue;
        }
        // Keep every pair at least 0.78 of their summed mean radii apart, so
        // overlaps stay partial and each cell keeps its own centre.
        let crowded = cells.iter().any(|o| {
            let d = ((o.cx - cx).powi(2) + (o.cy - cy).powi(2)).sqrt();
            d < 0.78 * (mean_r + (o.a + o.b) / 2.0)
        });
        if crowded {
            continue;
        }
        let theta = rng.range(0.0, std::f64::consts::PI);
        let brightness = rng.range(0.55, 1.0);
        cells.push(Ellipse { cx, cy, a, b, cos: theta.cos(), sin: theta.sin(), brightness });
    }

    // Truth: each pixel belongs to the cell it is most inside of. Signal:
    // each cell adds a brighter-centred profile with a soft edge.
    let mut truth = vec![0u32; w * h];
    let mut best_rho = vec![f64::INFINITY; w * h];
    let mut signal = vec![0f64; w * h];
    for (k, c) in cells.iter().enumerate() {
        let r = c.a + 2.0;
        let (x0, x1) = ((c.cx - r).floor().max(0.0) as usize, ((c.cx + r).ceil() as usize).min(w - 1));
        let (y0, y1) = ((c.cy - r).floor().max(0.0) as usize, ((c.cy + r).ceil() as usize).min(h - 1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                let i = y * w + x;
                let rho = c.rho(x as f64, y as f64);
                // Soft edge: full inside rho 0.9, zero beyond 1.1.
                let edge = ((1.1 - rho) / 0.2).clamp(0.0, 1.0);
                let edge = edge * edge * (3.0 - 2.0 * edge);
                signal[i] += c.brightness * edge * (0.85 + 0.15 * (1.0 - rho * rho).max(0.0));
                if rho < 1.0 && rho < best_rho[i] {
                    best_rho[i] = rho;
                    truth[i] = k as u32 + 1;
                }
            }
        }
    }

    // Illumination falls off radially from a random point; then photons.
    let (ix, iy) = (rng.range(0.0, w as f64), rng.range(0.0, h as f64));
    let reach = ((w * w + h * h) as f64).sqrt();
    let background = 0.08;
    let full = if options.bits == 8 { 200.0 } else { 200.0 * 256.0 };
    let gain = full / options.photons as f64;
    let max_value = if options.bits == 8 { 255.0 } else { 65535.0 };
    let mut samples = vec![0u16; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let r2 = ((x as f64 - ix).powi(2) + (y as f64 - iy).powi(2)) / (reach * reach);
            let light = 1.0 - options.illumination as f64 * r2.min(1.0);
            let expected = options.photons as f64 * (background + light * signal[i]);
            let counts = rng.poisson(expected) + options.read_noise as f64 * rng.normal();
            samples[i] = (counts * gain).round().clamp(0.0, max_value) as u16;
        }
    }

    // Cells entirely hidden by others (none, given the spacing) would leave
    // gaps in the numbering: renumber the truth 1..=count.
    let count = crate::segment::label::drop_small_and_relabel(&mut truth, 1);
    SynthImage {
        image: GrayImage { width: options.width, height: options.height, bits: options.bits, samples },
        truth,
        count,
    }
}

/// `n` images from seeds `seed, seed + 1, ...`.
pub fn dataset(options: &SynthOptions, n: usize, seed: u64) -> Vec<SynthImage> {
    use rayon::prelude::*;
    (0..n as u64).into_par_iter().map(|k| generate(options, seed.wrapping_add(k))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_has_cells() {
        let o = SynthOptions { width: 128, height: 96, cells: 8, ..Default::default() };
        let a = generate(&o, 7);
        let b = generate(&o, 7);
        let c = generate(&o, 8);
        assert_eq!(a.image, b.image);
        assert_eq!(a.truth, b.truth);
        assert_ne!(a.image, c.image);
        assert!(a.count >= 4, "{} cells", a.count);
        assert_eq!(a.truth.iter().copied().max().unwrap(), a.count);
        // Cells are brighter than the background on average.
        let mean = |fg: bool| {
            let v: Vec<f64> =
                a.truth.iter().zip(&a.image.samples).filter(|(&t, _)| (t != 0) == fg).map(|(_, &s)| s as f64).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(true) > 3.0 * mean(false));
    }

    #[test]
    fn sixteen_bit_uses_the_range() {
        let o = SynthOptions { width: 64, height: 64, cells: 4, bits: 16, ..Default::default() };
        let s = generate(&o, 1);
        assert_eq!(s.image.bits, 16);
        assert!(s.image.samples.iter().copied().max().unwrap() > 10_000);
    }
}
