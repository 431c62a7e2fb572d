//! Bitmap -> SVG, free of host imports (unit tests and benchmarks call
//! [`vectorize`] natively).
//!
//! 1. Masks: `threshold` mode makes one (luma against a threshold, Otsu's
//!    when none is given); `colors` mode quantises to N colours by k-means
//!    in a perceptual space and makes one mask per colour.
//! 2. Each mask's boundaries are traced into closed pixel-corner contours
//!    (holes included), speckles under `min_area` are dropped.
//! 3. Contours are simplified with Ramer–Douglas–Peucker (`tolerance`);
//!    vertices turning sharper than `corner_threshold` stay corners, runs
//!    between them become least-squares cubic Béziers (or stay polygons with
//!    `smooth: false`).
//! 4. One `<path>` per mask with `fill-rule="evenodd"`, so holes stay holes.

use crate::contour::{self, Contour};
use crate::geom::{self, Cubic, P};
use image::RgbaImage;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stagecraft_imaging::color::{self, ColorSpace};
use stagecraft_imaging::{quantize, QuantizeOptions, TRANSPARENT};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Binary: one shape layer from a luma threshold.
    #[default]
    Threshold,
    /// Quantise to `colors` colours and trace one layer per colour.
    Colors,
}

/// Parameters of `vector_trace`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `threshold` (binary, one fill colour) or `colors` (one layer per
    /// quantised colour).
    pub mode: Mode,
    /// Threshold mode: luma (0-255) below which a pixel is foreground.
    /// Absent: chosen automatically by Otsu's method.
    pub threshold: Option<u8>,
    /// Threshold mode: trace the light pixels instead of the dark ones.
    pub invert: bool,
    /// Threshold mode: fill colour of the traced shapes, `#rgb` or
    /// `#rrggbb` (hex digits in either case, the `#` optional; default black).
    pub color: Option<String>,
    /// Colors mode: number of colours (2 to 16, default 4).
    #[schemars(range(min = 2, max = 16))]
    pub colors: Option<u8>,
    /// Colors mode: colour space of the k-means quantisation.
    pub color_space: ColorSpace,
    /// Colors mode: seed of the k-means++ initialisation.
    pub seed: u64,
    /// Colors mode: each layer also covers the area of the layers drawn
    /// above it (largest colour at the bottom), which leaves no hairline
    /// gaps between colours. `false` gives disjoint cut-out shapes.
    pub stacked: bool,
    /// Maximum distance in pixels between the traced outline and the
    /// simplified path (0 to 20; default 1). Larger: fewer nodes, looser fit.
    #[schemars(range(min = 0.0, max = 20.0))]
    pub tolerance: f64,
    /// Fit cubic Bézier curves between corners (default); `false` keeps
    /// straight polygon edges.
    pub smooth: bool,
    /// A vertex whose direction changes by more than this many degrees
    /// (0 to 180, default 60) stays a sharp corner.
    #[schemars(range(min = 0.0, max = 180.0))]
    pub corner_threshold: f64,
    /// Shapes and holes smaller than this many pixels are dropped (despeckle).
    pub min_area: u32,
    /// Pixels with alpha below this are background (0 keeps all pixels).
    pub alpha_threshold: u8,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            mode: Mode::Threshold,
            threshold: None,
            invert: false,
            color: None,
            colors: None,
            color_space: ColorSpace::Oklab,
            seed: 1,
            stacked: true,
            tolerance: 1.0,
            smooth: true,
            corner_threshold: 60.0,
            min_area: 4,
            alpha_threshold: 128,
        }
    }
}

impl Params {
    /// Checks ranges and combinations the JSON types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=20.0).contains(&self.tolerance) {
            return Err(format!("tolerance must be between 0 and 20 pixels, got {}", self.tolerance));
        }
        if !(0.0..=180.0).contains(&self.corner_threshold) {
            return Err(format!("corner_threshold must be between 0 and 180 degrees, got {}", self.corner_threshold));
        }
        match self.mode {
            Mode::Threshold => {
                if self.colors.is_some() {
                    return Err("colors applies to mode \"colors\"; this is mode \"threshold\"".into());
                }
                if let Some(c) = &self.color {
                    color::parse_hex(c).ok_or_else(|| color::hex_error("color", c))?;
                }
            }
            Mode::Colors => {
                if self.threshold.is_some() || self.invert || self.color.is_some() {
                    return Err(
                        "threshold, invert and color apply to mode \"threshold\"; this is mode \"colors\"".into()
                    );
                }
                if let Some(n) = self.colors {
                    if !(2..=16).contains(&n) {
                        return Err(format!("colors must be between 2 and 16, got {n}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Statistics of one traced layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    pub color: String,
    /// Pixels of this colour (its own area, not the stacked one).
    pub pixels: u64,
    /// Closed subpaths: outer boundaries plus holes.
    pub contours: usize,
    pub holes: usize,
    /// Path segments (lines and curves).
    pub segments: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Traced {
    pub width: u32,
    pub height: u32,
    pub svg: String,
    pub layers: Vec<Layer>,
    /// Threshold mode: the luma threshold used (foreground is below it,
    /// or at/above it when inverted).
    pub threshold: Option<u8>,
    pub otsu: bool,
    pub speckles_dropped: usize,
}

/// Rec. 601 luma, integer.
fn luma(px: &[u8]) -> u8 {
    ((299 * px[0] as u32 + 587 * px[1] as u32 + 114 * px[2] as u32 + 500) / 1000) as u8
}

/// Otsu's threshold: the `t` maximising between-class variance of
/// `[0, t]` versus `[t + 1, 255]`.
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 127;
    }
    let sum_all: f64 = hist.iter().enumerate().map(|(i, &c)| i as f64 * c as f64).sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let mut best = (-1.0f64, 127u8);
    for t in 0..255 {
        w0 += hist[t] as f64;
        sum0 += t as f64 * hist[t] as f64;
        let w1 = total as f64 - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best.0 {
            best = (between, t as u8);
        }
    }
    best.1
}

/// Traces `rgba` into an SVG document. `title` goes into `<title>`.
pub fn vectorize(rgba: &RgbaImage, params: &Params, title: &str) -> Traced {
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    let opaque = |px: &[u8]| px[3] >= params.alpha_threshold;
    let mut layers_masks: Vec<(String, u64, Vec<bool>)> = Vec::new();
    let mut threshold_used = None;
    let mut otsu_used = false;
    match params.mode {
        Mode::Threshold => {
            let t = match params.threshold {
                Some(t) => t,
                None => {
                    let mut hist = [0u64; 256];
                    for px in rgba.as_raw().chunks_exact(4).filter(|p| opaque(p)) {
                        hist[luma(px) as usize] += 1;
                    }
                    otsu_used = true;
                    otsu(&hist).saturating_add(1)
                }
            };
            threshold_used = Some(t);
            let mask: Vec<bool> =
                rgba.as_raw().chunks_exact(4).map(|px| opaque(px) && ((luma(px) < t) != params.invert)).collect();
            let fill = params.color.as_deref().and_then(color::parse_hex).unwrap_or([0, 0, 0]);
            let pixels = mask.iter().filter(|&&b| b).count() as u64;
            layers_masks.push((color::hex(fill), pixels, mask));
        }
        Mode::Colors => {
            let q = quantize(
                rgba,
                &QuantizeOptions {
                    colors: params.colors.unwrap_or(4).clamp(2, 16) as usize,
                    space: params.color_space,
                    seed: params.seed,
                    alpha_threshold: params.alpha_threshold,
                    ..QuantizeOptions::default()
                },
            );
            for (i, s) in q.palette.iter().enumerate() {
                let i = i as u8;
                let mask: Vec<bool> = q
                    .labels
                    .iter()
                    .map(|&l| l != TRANSPARENT && if params.stacked { l >= i } else { l == i })
                    .collect();
                layers_masks.push((color::hex(s.rgb), s.pixels, mask));
            }
        }
    }

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#);
    let _ = writeln!(svg, "<title>{}</title>", escape_xml(title));
    let mut layers = Vec::new();
    let mut speckles_dropped = 0;
    for (n, (hex, pixels, mask)) in layers_masks.iter().enumerate() {
        let contours = contour::trace(mask, w, h);
        let mut d = String::new();
        let mut layer = Layer { color: hex.clone(), pixels: *pixels, contours: 0, holes: 0, segments: 0 };
        for c in &contours {
            if c.area.unsigned_abs() < params.min_area as u64 {
                speckles_dropped += 1;
                continue;
            }
            layer.segments += contour_path(c, params, &mut d);
            layer.contours += 1;
            layer.holes += (c.area < 0) as usize;
        }
        if !d.is_empty() {
            let _ =
                writeln!(svg, r#"<path id="layer-{}" fill="{hex}" fill-rule="evenodd" d="{}"/>"#, n + 1, d.trim_end());
        }
        layers.push(layer);
    }
    svg.push_str("</svg>\n");
    Traced {
        width: rgba.width(),
        height: rgba.height(),
        svg,
        layers,
        threshold: threshold_used,
        otsu: otsu_used,
        speckles_dropped,
    }
}

pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Coordinates with at most two decimals and no trailing zeros.
fn num(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    let r = if r == 0.0 { 0.0 } else { r };
    let s = format!("{r:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn pt(d: &mut String, p: P) {
    d.push_str(&num(p.x));
    d.push(' ');
    d.push_str(&num(p.y));
}

/// Turn direction (sign) and cosine of the turn at `v` from `a` to `b`.
fn turn(a: P, v: P, b: P) -> (f64, f64) {
    let u = v.sub(a).normalized();
    let w = b.sub(v).normalized();
    (u.x * w.y - u.y * w.x, u.dot(w))
}

/// Intersection of the line through `a0`-`a1` with the line through `b0`-`b1`.
fn intersect(a0: P, a1: P, b0: P, b1: P) -> Option<P> {
    let r = a1.sub(a0);
    let s = b1.sub(b0);
    let den = r.x * s.y - r.y * s.x;
    if den.abs() < 1e-9 {
        return None;
    }
    let t = (b0.sub(a0).x * s.y - b0.sub(a0).y * s.x) / den;
    Some(a0.add(r.mul(t)))
}

/// Restores corners that anti-aliasing or the pixel grid cut off: two
/// close simplified vertices turning the same way by more than the corner
/// threshold together become one corner where their outer edges meet.
fn merge_cut_corners(verts: &mut Vec<(usize, P)>, pts: &[P], tolerance: f64, cos_limit: f64) -> Vec<bool> {
    let mut merged = vec![false; verts.len()];
    let n = pts.len();
    let max_edge = 2.0 + tolerance;
    let max_reach = 2.0 + 2.0 * tolerance;
    let mut j = 0;
    while verts.len() >= 5 && j < verts.len() {
        let k = verts.len();
        let at = |o: usize| verts[(j + o) % k].1;
        let (prev, v0, v1, next) = (at(k - 1), at(0), at(1), at(2));
        let (s0, c0) = turn(prev, v0, v1);
        let (s1, c1) = turn(v0, v1, next);
        let (_, c_total) = turn(prev, v0.add(v1).mul(0.5), next);
        let mergeable =
            v0.dist(v1) <= max_edge && s0 * s1 > 0.0 && c0 >= cos_limit && c1 >= cos_limit && c_total < cos_limit;
        if let Some(x) = mergeable.then(|| intersect(prev, v0, v1, next)).flatten() {
            if x.dist(v0) <= max_reach && x.dist(v1) <= max_reach {
                // Dense index: the outline point nearest the corner, between the two.
                let (i0, i1) = (verts[j].0, verts[(j + 1) % k].0);
                let span = (i1 + n - i0) % n;
                let idx = (0..=span)
                    .map(|o| (i0 + o) % n)
                    .min_by(|&a, &b| pts[a].dist(x).total_cmp(&pts[b].dist(x)))
                    .unwrap();
                verts[j] = (idx, x);
                merged[j] = true;
                verts.remove((j + 1) % k);
                merged.remove((j + 1) % k);
                if (j + 1) % k == 0 {
                    // Removed the first vertex: the list shifted by one.
                    j -= 1;
                }
            }
        }
        j += 1;
    }
    merged
}

/// Appends one closed subpath for `c` to `d`; returns its segment count.
fn contour_path(c: &Contour, params: &Params, d: &mut String) -> usize {
    let pts: Vec<P> = c.points.iter().map(|&[x, y]| P::new(x as f64, y as f64)).collect();
    let n = pts.len();
    let mut keep = geom::rdp_closed(&pts, params.tolerance);
    if keep.len() < 3 {
        // Tiny shapes: keep every corner of the pixel outline.
        keep = (0..n)
            .filter(|&i| {
                let a = pts[(i + n - 1) % n];
                let b = pts[(i + 1) % n];
                let v = pts[i];
                (v.x - a.x) * (b.y - v.y) - (v.y - a.y) * (b.x - v.x) != 0.0
            })
            .collect();
    }
    // Simplified vertices: (index into the dense outline, position).
    let mut verts: Vec<(usize, P)> = keep.iter().map(|&i| (i, pts[i])).collect();

    if !params.smooth {
        d.push('M');
        pt(d, verts[0].1);
        for v in &verts[1..] {
            d.push('L');
            pt(d, v.1);
        }
        d.push_str("Z ");
        return verts.len();
    }

    let cos_limit = params.corner_threshold.to_radians().cos();
    let merged = merge_cut_corners(&mut verts, &pts, params.tolerance, cos_limit);
    let k = verts.len();
    let sv = |j: usize| verts[j % k].1;
    let di = |j: usize| verts[j % k].0;
    // Corners: simplified vertices where the direction turns sharply.
    // Lightly smoothed dense points: halves the pixel staircase before
    // measuring angles and straightness, and fitting.
    let q: Vec<P> = (0..n)
        .map(|i| {
            let a = pts[(i + n - 1) % n];
            let b = pts[(i + 1) % n];
            a.add(pts[i].mul(2.0)).add(b).mul(0.25)
        })
        .collect();
    // Corners: the outline turns sharply at the vertex, measured between
    // points a few pixels away on either side (robust to jaggies that the
    // simplification kept), or a cut corner restored above.
    let reach = ((2.0 + 2.0 * params.tolerance).round() as usize).clamp(2, (n / 4).max(1));
    let corner: Vec<bool> = (0..k)
        .map(|j| {
            let i = di(j);
            merged[j] || turn(q[(i + n - reach) % n], sv(j), q[(i + reach) % n]).1 < cos_limit
        })
        .collect();
    // Straight edges: long simplified edges whose (smoothed) outline stays
    // within 0.4 px of the chord. They are drawn as lines, and the curves
    // next to them leave in their direction, so straight sides stay
    // straight instead of picking up sub-pixel wobble from the fit.
    let min_straight = 12.0 + 8.0 * params.tolerance;
    let straight: Vec<bool> = (0..k)
        .map(|j| {
            let (a, b) = (sv(j), sv(j + 1));
            if a.dist(b) < min_straight {
                return false;
            }
            let (i0, i1) = (di(j), di(j + 1));
            let len = (i1 + n - i0) % n;
            (1..len).all(|o| geom::seg_dist(q[(i0 + o) % n], a, b) <= 0.4)
        })
        .collect();
    // Anchors cut the outline into straight lines and fitted runs: every
    // corner, and both ends of every straight edge. Where a straight edge
    // meets a smooth turn, its end is pulled back a little along the edge
    // and the curve leaves in the edge's direction: a rounded corner stays
    // round instead of becoming a chamfer.
    struct Anchor {
        i: usize,
        p: P,
        tangent: Option<P>,
        line_to_next: bool,
    }
    let mut anchors: Vec<Anchor> = Vec::new();
    for j in 0..k {
        if corner[j] {
            anchors.push(Anchor { i: di(j), p: sv(j), tangent: None, line_to_next: straight[j] });
        }
        if straight[j] {
            let (a, b) = (sv(j), sv(j + 1));
            let dir = b.sub(a).normalized();
            let (i0, i1) = (di(j), di(j + 1));
            let span = (i1 + n - i0) % n;
            let pull = (2 * reach).min(span / 4);
            let on_chord = |i: usize| a.add(dir.mul(q[i].sub(a).dot(dir)));
            if !corner[j] {
                let i = (i0 + pull) % n;
                anchors.push(Anchor { i, p: on_chord(i), tangent: Some(dir), line_to_next: true });
            }
            if !corner[(j + 1) % k] {
                let i = (i1 + n - pull) % n;
                anchors.push(Anchor { i, p: on_chord(i), tangent: Some(dir), line_to_next: false });
            }
        }
    }
    let err = params.tolerance.max(0.5);
    let mut cubics: Vec<Cubic> = Vec::new();
    let mut segments: Vec<Seg> = Vec::new();

    let start_point;
    if anchors.is_empty() {
        // A smooth closed curve: start at the first kept vertex with a
        // central tangent, so the curve closes with C1 continuity.
        let s = di(0);
        let m = 3.min(n / 4).max(1);
        let t = q[(s + m) % n].sub(q[(s + n - m) % n]).normalized();
        let ring: Vec<P> = (0..=n).map(|i| q[(s + i) % n]).collect();
        geom::fit_cubics(&ring, t, t.mul(-1.0), err, &mut cubics);
        start_point = ring[0];
        segments.extend(cubics.drain(..).map(Seg::Curve));
    } else {
        start_point = anchors[0].p;
        let count = anchors.len();
        for (ai, a) in anchors.iter().enumerate() {
            let b = &anchors[(ai + 1) % count];
            if a.line_to_next {
                segments.push(Seg::Line(b.p));
                continue;
            }
            let len = (b.i + n - a.i) % n;
            let len = if len == 0 { n } else { len };
            if len < 2 {
                segments.push(Seg::Line(b.p));
                continue;
            }
            let mut run: Vec<P> = (0..=len).map(|o| q[(a.i + o) % n]).collect();
            run[0] = a.p;
            run[len] = b.p;
            // Off a corner: towards the outline a few pixels on (not towards
            // the next simplified vertex, which may sit on a jaggy).
            let m = (2 * reach).min(len / 3).max(1);
            let t1 = a.tangent.unwrap_or_else(|| run[m].sub(run[0]).normalized());
            let t2 = b.tangent.map(|t| t.mul(-1.0)).unwrap_or_else(|| run[len - m].sub(run[len]).normalized());
            geom::fit_cubics(&run, t1, t2, err, &mut cubics);
            segments.extend(cubics.drain(..).map(Seg::Curve));
        }
    }
    // `Z` draws the closing line itself.
    if matches!(segments.last(), Some(Seg::Line(p)) if *p == start_point) {
        segments.pop();
    }
    d.push('M');
    pt(d, start_point);
    let count = segments.len().max(1);
    for s in &segments {
        match s {
            Seg::Line(p) => {
                d.push('L');
                pt(d, *p);
            }
            Seg::Curve(c) => {
                d.push('C');
                pt(d, c.c1);
                d.push(' ');
                pt(d, c.c2);
                d.push(' ');
                pt(d, c.p3);
            }
        }
    }
    d.push_str("Z ");
    count
}

enum Seg {
    Line(P),
    Curve(Cubic),
}
