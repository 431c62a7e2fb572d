//! `transparent_png`: cut a subject out of a flat or near-flat background.
//!
//! 1. Estimate the background colour from the image border: the densest
//!    cluster of border colours in CIE Lab (robust to a subject touching
//!    the edge, and to JPEG noise).
//! 2. Flood fill from the border through pixels within `tolerance` (CIE76
//!    colour difference, in Lab) of that colour, 4-connected, so the
//!    background-coloured parts inside the subject stay (unless `enclosed`).
//! 3. Feather: alpha ramps over `feather` pixels inward from the cut (an
//!    exact Euclidean distance transform), softened by how close fringe
//!    pixels are to the background colour; fringe colours are
//!    decontaminated (the background is un-mixed from them) so the cut-out
//!    has no halo on a dark page.
//! 4. Optionally trim to the content's bounding box (plus `padding`).

use image::{Rgba, RgbaImage};
use stagecraft_imaging::color::{hex, hex_error, parse_hex};
use stagecraft_sdk::images::{decode, encode, stem, unique_name, Format};
use stagecraft_sdk::prelude::*;
use stagecraft_sdk::round4;

pub const MAX_PIXELS: u64 = 50_000_000;

fn default_tolerance() -> f32 {
    10.0
}
fn default_feather() -> f32 {
    1.0
}

/// Parameters of `transparent_png`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// How far a colour may be from the background colour and still be removed, as a CIE76 colour
    /// difference in Lab (about 2.3 is just noticeable; 10 absorbs JPEG noise on a flat backdrop;
    /// 25+ eats into pale subjects).
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub tolerance: f32,
    /// Width in pixels of the soft alpha edge, inward from the cut (0 = hard edge).
    #[serde(default = "default_feather")]
    #[schemars(range(min = 0.0, max = 50.0))]
    pub feather: f32,
    /// The background colour, instead of estimating it from the border: `#rgb` or `#rrggbb`
    /// (hex digits in either case, the `#` optional).
    #[serde(default)]
    pub background: Option<String>,
    /// Also remove background-coloured regions enclosed by the subject (the inside of an "O"),
    /// not only those connected to the border.
    #[serde(default)]
    pub enclosed: bool,
    /// Crop the result to the bounding box of what remains.
    #[serde(default)]
    pub trim: bool,
    /// Transparent margin in pixels kept around the content when trimming.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1024))]
    pub padding: u32,
    /// What to do with a shadow cast on the background (grey, the background's own hue):
    /// `keep` it as opaque pixels, or make it `soft`: semi-transparent black that falls on
    /// whatever the cut-out is placed over. `soft` may also take grey parts of the subject
    /// that touch the shadow.
    #[serde(default)]
    pub shadow: Shadow,
}

/// Treatment of a shadow cast on the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Shadow {
    /// Leave it as it is (opaque).
    #[default]
    Keep,
    /// Turn it into semi-transparent black.
    Soft,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub tolerance: f32,
    pub feather: f32,
    pub background: Option<[u8; 3]>,
    pub enclosed: bool,
    pub trim: bool,
    pub padding: u32,
    pub shadow: Shadow,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tolerance: 10.0,
            feather: 1.0,
            background: None,
            enclosed: false,
            trim: false,
            padding: 0,
            shadow: Shadow::Keep,
        }
    }
}

impl Options {
    pub fn from_params(p: &Params) -> Result<Options, StageError> {
        if !(0.0..=100.0).contains(&p.tolerance) {
            return Err(StageError::invalid_input(format!("tolerance {} is out of range 0..=100", p.tolerance)));
        }
        if !(0.0..=50.0).contains(&p.feather) {
            return Err(StageError::invalid_input(format!("feather {} is out of range 0..=50", p.feather)));
        }
        if p.padding > 1024 {
            return Err(StageError::invalid_input(format!("padding {} is out of range 0..=1024", p.padding)));
        }
        if p.padding > 0 && !p.trim {
            return Err(StageError::invalid_input("padding applies only with trim: true"));
        }
        let background = match &p.background {
            None => None,
            Some(s) => Some(parse_hex(s).ok_or_else(|| StageError::invalid_input(hex_error("background", s)))?),
        };
        Ok(Options {
            tolerance: p.tolerance,
            feather: p.feather,
            background,
            enclosed: p.enclosed,
            trim: p.trim,
            padding: p.padding,
            shadow: p.shadow,
        })
    }
}

// ---- colour -------------------------------------------------------------------

fn srgb_lut() -> [f32; 256] {
    let mut t = [0.0; 256];
    for (i, v) in t.iter_mut().enumerate() {
        let c = i as f32 / 255.0;
        *v = if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) };
    }
    t
}

/// sRGB bytes to CIE L*a*b* (D65).
pub fn lab(lut: &[f32; 256], c: [u8; 3]) -> [f32; 3] {
    let (r, g, b) = (lut[c[0] as usize], lut[c[1] as usize], lut[c[2] as usize]);
    let x = (0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / 0.950_47;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b;
    let z = (0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b) / 1.088_83;
    let f = |t: f32| if t > 0.008_856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn delta_e(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn rgb(p: &Rgba<u8>) -> [u8; 3] {
    [p[0], p[1], p[2]]
}

/// Alpha below this counts as already transparent.
const CLEAR: u8 = 8;

/// The background colour estimated from the border, and the fraction of
/// (opaque) border pixels within `tolerance` of it. `None` when the border
/// is entirely transparent already.
pub fn estimate_background(img: &RgbaImage, tolerance: f32) -> Option<([u8; 3], f32)> {
    let lut = srgb_lut();
    let (w, h) = img.dimensions();
    let strip = (w.min(h) / 64).max(1);
    let mut samples: Vec<([u8; 3], [f32; 3])> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let on_border = x < strip || y < strip || x >= w - strip || y >= h - strip;
            if !on_border {
                continue;
            }
            let p = img.get_pixel(x, y);
            if p[3] >= 128 {
                samples.push((rgb(p), lab(&lut, rgb(p))));
            }
        }
    }
    if samples.is_empty() {
        return None;
    }
    // Densest cluster: bins of 6 Lab units, scored with their 26 neighbours.
    let bin = |l: [f32; 3]| [(l[0] / 6.0).floor() as i32, (l[1] / 6.0).floor() as i32, (l[2] / 6.0).floor() as i32];
    let mut counts: std::collections::BTreeMap<[i32; 3], u32> = std::collections::BTreeMap::new();
    for (_, l) in &samples {
        *counts.entry(bin(*l)).or_default() += 1;
    }
    let mut best = ([0i32; 3], 0u32);
    for k in counts.keys() {
        let mut score = 0;
        for dx in -1..=1 {
            for dy in -1..=1 {
                for dz in -1..=1 {
                    score += counts.get(&[k[0] + dx, k[1] + dy, k[2] + dz]).copied().unwrap_or(0);
                }
            }
        }
        if score > best.1 {
            best = (*k, score);
        }
    }
    let centre = [(best.0[0] as f32 + 0.5) * 6.0, (best.0[1] as f32 + 0.5) * 6.0, (best.0[2] as f32 + 0.5) * 6.0];
    let radius = tolerance.max(9.0);
    let mut sum = [0u64; 3];
    let mut n = 0u64;
    for (c, l) in &samples {
        if delta_e(*l, centre) <= radius {
            for i in 0..3 {
                sum[i] += c[i] as u64;
            }
            n += 1;
        }
    }
    let n = n.max(1);
    let bg = [(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8];
    let bg_lab = lab(&lut, bg);
    let close = samples.iter().filter(|(_, l)| delta_e(*l, bg_lab) <= tolerance.max(2.0)).count();
    Some((bg, close as f32 / samples.len() as f32))
}

/// Squared Euclidean distance transform (Felzenszwalb & Huttenlocher):
/// for every pixel, the squared distance to the nearest pixel with `seed`.
pub fn edt(w: usize, h: usize, seed: &[bool]) -> Vec<f32> {
    const INF: f32 = 1e20;
    let mut grid: Vec<f32> = seed.iter().map(|&s| if s { 0.0 } else { INF }).collect();
    let n = w.max(h);
    let mut f = vec![0.0f32; n];
    let mut d = vec![0.0f32; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f32; n + 1];
    let mut pass = |len: usize, get: &dyn Fn(usize) -> usize, grid: &mut Vec<f32>| {
        for i in 0..len {
            f[i] = grid[get(i)];
        }
        dt1(&f[..len], &mut d[..len], &mut v, &mut z);
        for i in 0..len {
            grid[get(i)] = d[i];
        }
    };
    for x in 0..w {
        pass(h, &|i| i * w + x, &mut grid);
    }
    for y in 0..h {
        pass(w, &|i| y * w + i, &mut grid);
    }
    grid
}

fn dt1(f: &[f32], d: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    for q in 1..n {
        loop {
            let p = v[k];
            let s = ((f[q] + (q * q) as f32) - (f[p] + (p * p) as f32)) / (2.0 * q as f32 - 2.0 * p as f32);
            // z[0] is -inf, so this stops at k = 0.
            if s <= z[k] {
                k -= 1;
                continue;
            }
            k += 1;
            v[k] = q;
            z[k] = s;
            z[k + 1] = f32::INFINITY;
            break;
        }
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate().take(n) {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f32 - p as f32;
        *out = dq * dq + f[p];
    }
}

#[derive(Debug, Clone)]
pub struct Cutout {
    pub image: RgbaImage,
    /// Background colour used (estimated or given).
    pub background: Option<[u8; 3]>,
    /// Fraction of opaque border pixels that matched the background.
    pub confidence: f32,
    /// Fraction of the source's pixels made fully transparent.
    pub removed: f32,
    /// Fraction given a partial alpha (the feathered edge).
    pub partial: f32,
    /// Content box in source coordinates (x, y, w, h), when anything is left.
    pub bbox: Option<[u32; 4]>,
    /// Fraction turned into semi-transparent shadow.
    pub shadow: f32,
}

/// Removes the background. `Err` carries a message for `invalid-input`.
pub fn cut_out(img: &RgbaImage, o: &Options) -> Result<Cutout, String> {
    let (w, h) = img.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    let n = wu * hu;
    let lut = srgb_lut();
    let estimate = match o.background {
        Some(c) => {
            let l = lab(&lut, c);
            let border: Vec<_> = img
                .enumerate_pixels()
                .filter(|(x, y, p)| (*x == 0 || *y == 0 || *x == w - 1 || *y == h - 1) && p[3] >= 128)
                .map(|(_, _, p)| delta_e(lab(&lut, rgb(p)), l) <= o.tolerance.max(2.0))
                .collect();
            let conf = if border.is_empty() {
                0.0
            } else {
                border.iter().filter(|b| **b).count() as f32 / border.len() as f32
            };
            Some((c, conf))
        }
        None => estimate_background(img, o.tolerance),
    };
    let bg_lab = estimate.map(|(c, _)| lab(&lut, c));

    // Colour distance of every pixel to the background (0 for clear pixels).
    let mut dist = vec![f32::MAX; n];
    for (i, p) in img.pixels().enumerate() {
        if p[3] < CLEAR {
            dist[i] = 0.0;
        } else if let Some(b) = bg_lab {
            dist[i] = delta_e(lab(&lut, rgb(p)), b);
        }
    }
    let matches = |i: usize| dist[i] <= o.tolerance;

    // Flood fill from the border, 4-connected.
    let mut removed = vec![false; n];
    let mut queue: Vec<usize> = Vec::new();
    let push = |i: usize, removed: &mut Vec<bool>, queue: &mut Vec<usize>| {
        if !removed[i] && matches(i) {
            removed[i] = true;
            queue.push(i);
        }
    };
    for x in 0..wu {
        push(x, &mut removed, &mut queue);
        push((hu - 1) * wu + x, &mut removed, &mut queue);
    }
    for y in 0..hu {
        push(y * wu, &mut removed, &mut queue);
        push(y * wu + wu - 1, &mut removed, &mut queue);
    }
    flood(&mut removed, &mut queue, wu, hu, &matches);

    if o.enclosed {
        // Enclosed background regions big enough not to be texture.
        let min_area = (n / 20_000).max(4);
        let mut seen = removed.clone();
        for start in 0..n {
            if seen[start] || !matches(start) {
                continue;
            }
            seen[start] = true;
            let mut region = vec![start];
            let mut k = 0;
            while k < region.len() {
                let i = region[k];
                k += 1;
                neighbours4(i, wu, hu, |j| {
                    if !seen[j] && matches(j) {
                        seen[j] = true;
                        region.push(j);
                    }
                });
            }
            if region.len() >= min_area {
                for i in region {
                    removed[i] = true;
                }
            }
        }
    }

    let removed_count = removed.iter().filter(|r| **r).count();
    let shadow = match (o.shadow, estimate) {
        (Shadow::Soft, Some((b, _))) if removed_count > 0 => soft_shadow(img, &removed, b, o.tolerance),
        _ => Vec::new(),
    };
    let shadow_at = |i: usize| shadow.get(i).copied().unwrap_or(0);
    let gone: Vec<bool> = (0..n).map(|i| removed[i] || shadow_at(i) > 0).collect();
    if removed_count == n {
        return Err(match estimate {
            Some((c, _)) => format!(
                "every pixel is within tolerance {} of the background colour {}: nothing would be left (lower the tolerance)",
                o.tolerance,
                hex(c)
            ),
            None => "the image is fully transparent already".to_owned(),
        });
    }

    // Alpha: ramp inward from the cut (feather), and on the fringe the
    // coverage estimated by un-mixing: a fringe pixel c is taken as
    // a*f + (1-a)*b, with f the most subject-like colour within 2 px.
    let d2 = if removed_count > 0 { edt(wu, hu, &gone) } else { vec![f32::MAX; n] };
    let mut out = img.clone();
    let bg = estimate.map(|(c, _)| c);
    let rgb_dist = |p: &Rgba<u8>, b: [u8; 3]| {
        ((p[0] as f32 - b[0] as f32).powi(2)
            + (p[1] as f32 - b[1] as f32).powi(2)
            + (p[2] as f32 - b[2] as f32).powi(2))
        .sqrt()
    };
    let mut partial = 0usize;
    let mut clear = 0usize;
    let mut shadows = 0usize;
    for i in 0..n {
        let (x, y) = ((i % wu) as u32, (i / wu) as u32);
        let src = *img.get_pixel(x, y);
        if removed[i] {
            out.put_pixel(x, y, Rgba([src[0], src[1], src[2], 0]));
            clear += 1;
            continue;
        }
        if shadow_at(i) > 0 {
            let a = (shadow_at(i) as u32 * src[3] as u32 / 255) as u8;
            out.put_pixel(x, y, Rgba([0, 0, 0, a]));
            shadows += 1;
            continue;
        }
        let d = d2[i].sqrt();
        let a_f = if o.feather > 0.0 { ((d - 0.5) / o.feather).clamp(0.0, 1.0) } else { 1.0 };
        let mut a_c = 1.0f32;
        if let (true, Some(b)) = (d < 2.5, bg) {
            let mut reference = 0.0f32;
            for yy in y.saturating_sub(2)..(y + 3).min(h) {
                for xx in x.saturating_sub(2)..(x + 3).min(w) {
                    let j = yy as usize * wu + xx as usize;
                    if !gone[j] {
                        reference = reference.max(rgb_dist(img.get_pixel(xx, yy), b));
                    }
                }
            }
            if reference > 1.0 {
                a_c = (rgb_dist(&src, b) / reference).clamp(0.0, 1.0);
            }
        }
        let a = a_f.min(a_c);
        if a >= 1.0 {
            continue;
        }
        let alpha = (src[3] as f32 * a).round() as u8;
        let p = out.get_pixel_mut(x, y);
        if alpha == 0 {
            p[3] = 0;
            clear += 1;
            continue;
        }
        partial += 1;
        if let (true, Some(b)) = (a_c < 0.98, bg) {
            // Un-mix the background: c = a*f + (1-a)*b  =>  f = b + (c - b)/a.
            for k in 0..3 {
                let f = b[k] as f32 + (src[k] as f32 - b[k] as f32) / a_c.max(0.05);
                p[k] = f.round().clamp(0.0, 255.0) as u8;
            }
        }
        p[3] = alpha;
    }

    // Content box.
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0u32, 0u32);
    for (x, y, p) in out.enumerate_pixels() {
        if p[3] > 0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    let bbox = (x0 != u32::MAX).then(|| [x0, y0, x1 - x0 + 1, y1 - y0 + 1]);
    if o.trim {
        let Some([bx, by, bw, bh]) = bbox else {
            return Err("nothing is left after removing the background".to_owned());
        };
        let pad = o.padding;
        let mut canvas = RgbaImage::new(bw + 2 * pad, bh + 2 * pad);
        image::imageops::replace(
            &mut canvas,
            &image::imageops::crop_imm(&out, bx, by, bw, bh).to_image(),
            pad as i64,
            pad as i64,
        );
        out = canvas;
    }
    Ok(Cutout {
        image: out,
        background: bg,
        confidence: estimate.map_or(0.0, |(_, c)| c),
        removed: clear as f32 / n as f32,
        partial: partial as f32 / n as f32,
        bbox,
        shadow: shadows as f32 / n as f32,
    })
}

/// Shadow alpha (0: not shadow) for the pixels reachable from the removed
/// background through colours that are the background darkened: c = s*b
/// with s in 0.2..1, give or take a little colour noise.
fn soft_shadow(img: &RgbaImage, removed: &[bool], b: [u8; 3], tolerance: f32) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bf = [b[0] as f32, b[1] as f32, b[2] as f32];
    let bb = bf[0] * bf[0] + bf[1] * bf[1] + bf[2] * bf[2];
    let mut alpha = vec![0u8; w * h];
    if bb < 30.0 * 30.0 {
        // A near-black background cannot show a shadow.
        return alpha;
    }
    let slack = (tolerance * 0.8).max(8.0);
    let strength = |i: usize| -> Option<u8> {
        let p = img.as_raw();
        if p[i * 4 + 3] < CLEAR {
            return None;
        }
        let c = [p[i * 4] as f32, p[i * 4 + 1] as f32, p[i * 4 + 2] as f32];
        let s = (c[0] * bf[0] + c[1] * bf[1] + c[2] * bf[2]) / bb;
        if !(0.2..1.0).contains(&s) {
            return None;
        }
        let r = ((c[0] - s * bf[0]).powi(2) + (c[1] - s * bf[1]).powi(2) + (c[2] - s * bf[2]).powi(2)).sqrt();
        (r <= slack).then(|| (((1.0 - s) * 255.0).round() as u8).max(1))
    };
    let neighbours = |i: usize| {
        let (x, y) = (i % w, i / w);
        [(x > 0).then(|| i - 1), (x + 1 < w).then(|| i + 1), (y > 0).then(|| i - w), (y + 1 < h).then(|| i + w)]
    };
    let mut queue = Vec::new();
    for i in 0..w * h {
        if removed[i] || !neighbours(i).iter().flatten().any(|&j| removed[j]) {
            continue;
        }
        if let Some(a) = strength(i) {
            alpha[i] = a;
            queue.push(i);
        }
    }
    while let Some(i) = queue.pop() {
        for j in neighbours(i).into_iter().flatten() {
            if removed[j] || alpha[j] > 0 {
                continue;
            }
            if let Some(a) = strength(j) {
                alpha[j] = a;
                queue.push(j);
            }
        }
    }
    alpha
}

fn flood(removed: &mut [bool], queue: &mut Vec<usize>, w: usize, h: usize, matches: &dyn Fn(usize) -> bool) {
    while let Some(i) = queue.pop() {
        neighbours4(i, w, h, |j| {
            if !removed[j] && matches(j) {
                removed[j] = true;
                queue.push(j);
            }
        });
    }
}

/// Calls `visit` with each 4-connected neighbour of pixel `i` in a `w`x`h` image.
fn neighbours4(i: usize, w: usize, h: usize, mut visit: impl FnMut(usize)) {
    let (x, y) = (i % w, i / w);
    if x > 0 {
        visit(i - 1);
    }
    if x + 1 < w {
        visit(i + 1);
    }
    if y > 0 {
        visit(i - w);
    }
    if y + 1 < h {
        visit(i + w);
    }
}

struct TransparentPng;

impl Stage for TransparentPng {
    type Params = Params;
    const NAME: &'static str = "transparent_png";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Removes a flat or near-flat background: estimates its colour from the border, \
        flood-fills it within a Lab colour tolerance, feathers and decontaminates the edge, optionally trims; PNG with alpha out";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let o = Options::from_params(&input.params)?;
        input.first()?;
        let mut out = Output::new();
        let mut results = Vec::new();
        let mut warnings = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        for artifact in &input.artifacts {
            let img = decode(artifact)?;
            if img.width() as u64 * img.height() as u64 > MAX_PIXELS {
                return Err(StageError::invalid_input(format!(
                    "{}: {}x{} is more than {MAX_PIXELS} pixels",
                    artifact.name,
                    img.width(),
                    img.height()
                )));
            }
            let rgba = img.to_rgba8();
            let cut = cut_out(&rgba, &o).map_err(|m| StageError::invalid_input(format!("{}: {m}", artifact.name)))?;
            if cut.confidence < 0.5 && cut.background.is_some() {
                warnings.push(format!(
                    "{}: only {:.0}% of the border matches the background colour; the background may not be flat",
                    artifact.name,
                    cut.confidence * 100.0
                ));
            }
            if cut.removed == 0.0 {
                warnings
                    .push(format!("{}: nothing matched the background colour; the image is unchanged", artifact.name));
            }
            let (w, h) = cut.image.dimensions();
            let data = encode(&image::DynamicImage::ImageRgba8(cut.image), Format::Png, 90)?;
            let name = unique_name(&mut used, stem(&artifact.name), ".png");
            results.push(json!({
                "name": name,
                "source": artifact.name,
                "width": w,
                "height": h,
                "background": cut.background.map(hex),
                "background_confidence": round4(cut.confidence),
                "removed_fraction": round4(cut.removed),
                "edge_fraction": round4(cut.partial),
                "shadow_fraction": round4(cut.shadow),
                "content_box": cut.bbox,
                "trimmed": o.trim,
            }));
            out = out.artifact(name, "image/png", data);
        }
        // The first image's figures at the top level, for the common single-input case.
        let first = results[0].clone();
        Ok(out
            .meta("background", &first["background"])
            .meta("removed_fraction", &first["removed_fraction"])
            .meta("width", &first["width"])
            .meta("height", &first["height"])
            .meta("tolerance", round4(o.tolerance))
            .meta("feather", round4(o.feather))
            .meta("shadow", o.shadow)
            .meta("images", results)
            .meta("warnings", warnings))
    }
}

export_stage!(TransparentPng);

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark blue ring (with a white hole) on a slightly noisy white background.
    fn ring(w: u32, h: u32) -> RgbaImage {
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        RgbaImage::from_fn(w, h, |x, y| {
            let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
            let r = w.min(h) as f32 * 0.3;
            // Anti-aliased ring between r/2 and r.
            let cover = ((r - d + 0.5).clamp(0.0, 1.0)) * ((d - r * 0.5 + 0.5).clamp(0.0, 1.0));
            let noise = ((x * 7 + y * 13) % 5) as f32 - 2.0;
            let bg = [250.0 + noise, 250.0 + noise, 248.0 + noise];
            let fg = [20.0, 40.0, 160.0];
            let c = |k: usize| (fg[k] * cover + bg[k] * (1.0 - cover)).round() as u8;
            Rgba([c(0), c(1), c(2), 255])
        })
    }

    #[test]
    fn removes_a_flat_background_and_keeps_the_subject() {
        let img = ring(100, 80);
        let cut = cut_out(&img, &Options::default()).unwrap();
        let bg = cut.background.unwrap();
        assert!(bg.iter().zip([250u8, 250, 248]).all(|(a, b)| (*a as i32 - b as i32).abs() <= 2), "{bg:?}");
        assert!(cut.confidence > 0.95);
        // Corners are gone, the ring itself is opaque and unchanged.
        assert_eq!(cut.image.get_pixel(0, 0)[3], 0);
        assert_eq!(cut.image.get_pixel(99, 79)[3], 0);
        let on_ring = cut.image.get_pixel(50 + 18, 40);
        assert_eq!(on_ring.0, [20, 40, 160, 255]);
        // The hole is background colour but enclosed: kept by default...
        assert_eq!(cut.image.get_pixel(50, 40)[3], 255);
        // ...and removed with `enclosed`.
        let cut2 = cut_out(&img, &Options { enclosed: true, ..Options::default() }).unwrap();
        assert_eq!(cut2.image.get_pixel(50, 40)[3], 0);
        assert!(cut2.removed > cut.removed);
        // About the outside of the ring is removed: 1 - pi*24^2/8000.
        let expected = 1.0 - std::f32::consts::PI * 24.0 * 24.0 / 8000.0;
        assert!((cut.removed - expected).abs() < 0.05, "removed {} expected {expected}", cut.removed);
    }

    #[test]
    fn feathered_edge_is_decontaminated() {
        let img = ring(100, 80);
        let cut = cut_out(&img, &Options { feather: 2.0, ..Options::default() }).unwrap();
        assert!(cut.partial > 0.0);
        // Partially transparent pixels carry the ring's colour, not a white halo.
        for p in cut.image.pixels().filter(|p| p[3] > 40 && p[3] < 255) {
            assert!(p[2] > p[0] + 60, "edge pixel should be blue, got {p:?}");
        }
    }

    #[test]
    fn trim_crops_to_the_subject() {
        let img = ring(100, 80);
        let cut = cut_out(&img, &Options { trim: true, padding: 3, ..Options::default() }).unwrap();
        let [_, _, bw, bh] = cut.bbox.unwrap();
        assert!((47..=51).contains(&bw) && (47..=51).contains(&bh), "{:?}", cut.bbox);
        assert_eq!(cut.image.dimensions(), (bw + 6, bh + 6));
        assert_eq!(cut.image.get_pixel(0, 0)[3], 0);
    }

    #[test]
    fn soft_shadow_becomes_translucent_black() {
        // A green square on white casting a grey shadow to its right.
        let img = RgbaImage::from_fn(80, 60, |x, y| {
            if (20..40).contains(&x) && (20..40).contains(&y) {
                Rgba([20, 160, 40, 255])
            } else if (40..55).contains(&x) && (24..44).contains(&y) {
                let g = 150 + (x - 40) as u8 * 6; // fades out to the right
                Rgba([g, g, g, 255])
            } else {
                Rgba([255, 255, 255, 255])
            }
        });
        let keep = cut_out(&img, &Options::default()).unwrap();
        assert_eq!(keep.image.get_pixel(45, 30).0, [180, 180, 180, 255]);
        assert_eq!(keep.shadow, 0.0);
        let soft = cut_out(&img, &Options { shadow: Shadow::Soft, ..Options::default() }).unwrap();
        let p = soft.image.get_pixel(45, 30);
        assert_eq!(&p.0[..3], &[0, 0, 0]);
        assert!((p[3] as i32 - (255 - 180)).abs() <= 1, "{p:?}");
        assert!(soft.shadow > 0.05);
        // The subject is untouched.
        assert_eq!(soft.image.get_pixel(30, 30).0, [20, 160, 40, 255]);
    }

    #[test]
    fn a_flat_image_is_refused() {
        let img = RgbaImage::from_pixel(20, 20, Rgba([10, 10, 10, 255]));
        assert!(cut_out(&img, &Options::default()).is_err());
    }

    #[test]
    fn background_colour_can_be_given() {
        // Green background with a red square; the border is half red so the
        // estimate would be unsure, but the given colour is used.
        let img =
            RgbaImage::from_fn(40, 40, |x, _| if x < 20 { Rgba([0, 255, 0, 255]) } else { Rgba([255, 0, 0, 255]) });
        let cut = cut_out(&img, &Options { background: Some([0, 255, 0]), ..Options::default() }).unwrap();
        assert_eq!(cut.image.get_pixel(5, 5)[3], 0);
        assert_eq!(cut.image.get_pixel(30, 5)[3], 255);
        assert!((cut.confidence - 0.5).abs() < 0.05);
    }

    #[test]
    fn background_takes_the_shared_colour_grammar() {
        // Wider than before (`#rrggbb` only): short forms, any case, no `#`.
        let bg = |c: &str| Options::from_params(&serde_json::from_value(json!({"background": c})).unwrap()).unwrap();
        assert_eq!(bg("fff").background, Some([255, 255, 255]));
        assert_eq!(bg("#0F0").background, Some([0, 255, 0]));
        assert_eq!(bg("1E50c8").background, Some([0x1e, 0x50, 0xc8]));
        assert_eq!(bg("#1e50c8").background, Some([0x1e, 0x50, 0xc8]));
    }

    #[test]
    fn distance_transform_is_euclidean() {
        let (w, h) = (7, 5);
        let mut seed = vec![false; w * h];
        seed[2 * w + 3] = true;
        let d = edt(w, h, &seed);
        assert_eq!(d[2 * w + 3], 0.0);
        assert_eq!(d[2 * w + 6], 9.0);
        assert_eq!(d[0], 9.0 + 4.0);
        assert_eq!(d[4 * w + 6], 9.0 + 4.0);
    }

    #[test]
    fn lab_of_white_and_black() {
        let lut = srgb_lut();
        let w = lab(&lut, [255, 255, 255]);
        assert!((w[0] - 100.0).abs() < 0.1 && w[1].abs() < 0.1 && w[2].abs() < 0.1, "{w:?}");
        assert!(lab(&lut, [0, 0, 0])[0].abs() < 0.1);
    }

    #[test]
    fn params_are_checked() {
        let p = |v: serde_json::Value| {
            serde_json::from_value::<Params>(v)
                .map_err(|e| e.to_string())
                .and_then(|p| Options::from_params(&p).map_err(|e| e.to_string()))
        };
        assert!(p(json!({})).is_ok());
        assert!(p(json!({"tolerance": 101})).is_err());
        assert!(p(json!({"feather": -1})).is_err());
        assert!(p(json!({"background": "white"})).unwrap_err().contains("background \"white\" is not a hex colour"));
        assert!(p(json!({"background": "#12345"})).is_err());
        assert!(p(json!({"padding": 4})).is_err());
        assert!(p(json!({"trim": true, "padding": 4})).is_ok());
        assert!(p(json!({"tolerence": 4})).is_err());
    }
}
