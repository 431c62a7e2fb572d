//! `video`: an image sequence in, an animated GIF out.
//!
//! Each input image (in the given order) is held for `hold` seconds, then
//! dissolves into the next over `crossfade` seconds of blended frames at
//! `fps`; with `loop`, the last image dissolves back into the first so the
//! loop is seamless. The output takes the first image's size (or `width`);
//! other images are fitted inside it (stagecraft-imaging's Lanczos3),
//! centred on `background`.
//!
//! Colour: one global palette of up to `max_colors` built by median cut
//! over all the images (and their midway blends), refined by a few k-means
//! passes; pixels are mapped with ordered (Bayer) dithering, which, unlike
//! error diffusion, does not crawl between frames. Frames only store the
//! rectangle that changed since the previous one.

use image::RgbaImage;
use stagecraft_imaging::color::{hex_error, parse_hex};
use stagecraft_imaging::resize::resize_rgba;
use stagecraft_sdk::images::decode;
use stagecraft_sdk::prelude::*;
use stagecraft_sdk::round4;

pub const MAX_FRAMES: usize = 3000;
/// Upper bound on output frames x width x height.
pub const MAX_TOTAL_PIXELS: u64 = 400_000_000;
pub const MAX_INPUTS: usize = 500;

fn default_fps() -> f32 {
    12.0
}
fn default_hold() -> f32 {
    1.0
}
fn default_crossfade() -> f32 {
    0.5
}
fn yes() -> bool {
    true
}
fn default_colors() -> u16 {
    256
}
fn default_background() -> String {
    "#000000".into()
}

/// Parameters of `video`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Frame rate of the transitions, frames per second (GIF timing has 1/100 s steps).
    #[serde(default = "default_fps")]
    #[schemars(range(min = 1.0, max = 50.0))]
    pub fps: f32,
    /// Seconds each image is shown before its transition (at least one frame: 1/fps).
    #[serde(default = "default_hold")]
    #[schemars(range(min = 0.0, max = 60.0))]
    pub hold: f32,
    /// Seconds of blended frames dissolving one image into the next (0 = hard cut).
    #[serde(default = "default_crossfade")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub crossfade: f32,
    /// Loop forever (and dissolve the last image back into the first); false plays once.
    #[serde(default = "yes", rename = "loop")]
    pub looping: bool,
    /// Palette size, 2-256.
    #[serde(default = "default_colors")]
    #[schemars(range(min = 2, max = 256))]
    pub max_colors: u16,
    /// Output width in pixels (height follows the first image's aspect ratio). Default: the first image's size.
    #[serde(default)]
    #[schemars(range(min = 16, max = 4096))]
    pub width: Option<u32>,
    /// Colour behind transparent pixels and around images of another shape: `#rgb` or `#rrggbb`
    /// (hex digits in either case, the `#` optional).
    #[serde(default = "default_background")]
    pub background: String,
    /// Ordered dithering: smooth gradients instead of bands, at the cost of a fine pattern.
    #[serde(default = "yes")]
    pub dither: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub fps: f32,
    pub hold: f32,
    pub crossfade: f32,
    pub looping: bool,
    pub max_colors: usize,
    pub width: Option<u32>,
    pub background: [u8; 3],
    pub dither: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fps: 12.0,
            hold: 1.0,
            crossfade: 0.5,
            looping: true,
            max_colors: 256,
            width: None,
            background: [0, 0, 0],
            dither: true,
        }
    }
}

impl Options {
    pub fn from_params(p: &Params) -> Result<Options, StageError> {
        let bad = |m: String| Err(StageError::invalid_input(m));
        if !(1.0..=50.0).contains(&p.fps) {
            return bad(format!("fps {} is out of range 1..=50", p.fps));
        }
        if !(0.0..=60.0).contains(&p.hold) {
            return bad(format!("hold {} is out of range 0..=60 seconds", p.hold));
        }
        if !(0.0..=10.0).contains(&p.crossfade) {
            return bad(format!("crossfade {} is out of range 0..=10 seconds", p.crossfade));
        }
        if !(2..=256).contains(&p.max_colors) {
            return bad(format!("max_colors {} is out of range 2..=256", p.max_colors));
        }
        if let Some(w) = p.width {
            if !(16..=4096).contains(&w) {
                return bad(format!("width {w} is out of range 16..=4096"));
            }
        }
        let Some(background) = parse_hex(&p.background) else {
            return bad(hex_error("background", &p.background));
        };
        Ok(Options {
            fps: p.fps,
            hold: p.hold,
            crossfade: p.crossfade,
            looping: p.looping,
            max_colors: p.max_colors as usize,
            width: p.width,
            background,
            dither: p.dither,
        })
    }
}

/// An opaque RGB frame, row-major.
#[derive(Clone)]
pub struct Frame {
    pub rgb: Vec<u8>,
}

/// One step of the animation: blend `from` -> `to` by `t`, shown `delay` cs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub from: usize,
    pub to: usize,
    pub t: f32,
    pub delay: u16,
}

/// The timeline: holds and crossfades, with delays in 1/100 s rounded on
/// the cumulative clock so the total duration stays exact.
pub fn timeline(n: usize, o: &Options) -> Vec<Step> {
    let frame = 1.0 / o.fps as f64;
    let hold = (o.hold as f64).max(frame);
    let fades = ((o.crossfade * o.fps).round() as usize).min(500);
    let mut raw: Vec<(usize, usize, f32, f64)> = Vec::new();
    for i in 0..n {
        raw.push((i, i, 0.0, hold));
        let last = i + 1 == n;
        if n > 1 && fades > 0 && (!last || o.looping) {
            let next = (i + 1) % n;
            for k in 1..=fades {
                raw.push((i, next, k as f32 / (fades + 1) as f32, frame));
            }
        }
    }
    let mut clock = 0.0f64;
    let mut shown = 0i64;
    raw.into_iter()
        .map(|(from, to, t, secs)| {
            clock += secs;
            let end = (clock * 100.0).round() as i64;
            let delay = (end - shown).clamp(2, u16::MAX as i64) as u16;
            shown += delay as i64;
            Step { from, to, t, delay }
        })
        .collect()
}

/// Fits an image inside `w` x `h` (Lanczos3), centred over `bg`, alpha flattened.
pub fn fit(img: &RgbaImage, w: u32, h: u32, bg: [u8; 3]) -> Frame {
    let (sw, sh) = img.dimensions();
    let scaled = if (sw, sh) == (w, h) {
        img.clone()
    } else {
        let k = (w as f64 / sw as f64).min(h as f64 / sh as f64);
        let iw = ((sw as f64 * k).round() as u32).clamp(1, w);
        let ih = ((sh as f64 * k).round() as u32).clamp(1, h);
        resize_rgba(img, None, iw, ih)
    };
    let (iw, ih) = scaled.dimensions();
    let (ox, oy) = ((w - iw) / 2, (h - ih) / 2);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for _ in 0..w * h {
        rgb.extend_from_slice(&bg);
    }
    for (x, y, p) in scaled.enumerate_pixels() {
        let i = (((oy + y) * w + ox + x) * 3) as usize;
        let a = p[3] as u32;
        for k in 0..3 {
            rgb[i + k] = ((p[k] as u32 * a + bg[k] as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
    Frame { rgb }
}

fn blend(a: &Frame, b: &Frame, t: f32, out: &mut Vec<u8>) {
    out.clear();
    let tt = (t * 256.0).round() as u32;
    out.extend(a.rgb.iter().zip(&b.rgb).map(|(&x, &y)| ((x as u32 * (256 - tt) + y as u32 * tt + 128) >> 8) as u8));
}

// ---- palette ----------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Bin {
    c: [f32; 3],
    w: f32,
}

/// Median cut over a 5-bit-per-channel histogram, then k-means refinement.
pub fn build_palette(samples: &[&[u8]], colors: usize) -> Vec<[u8; 3]> {
    let mut sums = vec![[0u64; 4]; 1 << 15];
    for rgb in samples {
        for p in rgb.chunks_exact(3) {
            let k = ((p[0] as usize >> 3) << 10) | ((p[1] as usize >> 3) << 5) | (p[2] as usize >> 3);
            let s = &mut sums[k];
            s[0] += p[0] as u64;
            s[1] += p[1] as u64;
            s[2] += p[2] as u64;
            s[3] += 1;
        }
    }
    let bins: Vec<Bin> = sums
        .iter()
        .filter(|s| s[3] > 0)
        .map(|s| {
            let n = s[3] as f32;
            Bin { c: [s[0] as f32 / n, s[1] as f32 / n, s[2] as f32 / n], w: n }
        })
        .collect();
    if bins.is_empty() {
        return vec![[0, 0, 0]];
    }
    // Boxes are ranges of `order`; split the one with the largest weighted
    // variance at its weighted median along its widest axis.
    let mut order: Vec<usize> = (0..bins.len()).collect();
    let mut boxes: Vec<(usize, usize)> = vec![(0, bins.len())];
    let stats = |order: &[usize], (a, b): (usize, usize)| {
        let mut w = 0.0f64;
        let mut m = [0.0f64; 3];
        for &i in &order[a..b] {
            let bin = bins[i];
            w += bin.w as f64;
            for (mk, ck) in m.iter_mut().zip(bin.c) {
                *mk += ck as f64 * bin.w as f64;
            }
        }
        let m = m.map(|v| v / w.max(1e-9));
        let mut var = [0.0f64; 3];
        for &i in &order[a..b] {
            let bin = bins[i];
            for k in 0..3 {
                var[k] += (bin.c[k] as f64 - m[k]).powi(2) * bin.w as f64;
            }
        }
        (w, m, var)
    };
    while boxes.len() < colors {
        let mut best = None;
        let mut best_score = 0.0;
        for (bi, &bx) in boxes.iter().enumerate() {
            if bx.1 - bx.0 < 2 {
                continue;
            }
            let (_, _, var) = stats(&order, bx);
            let score = var[0] + var[1] + var[2];
            if score > best_score {
                best_score = score;
                best = Some(bi);
            }
        }
        let Some(bi) = best else { break };
        let (a, b) = boxes[bi];
        let (w, _, var) = stats(&order, (a, b));
        let axis = (0..3).max_by(|&i, &j| var[i].total_cmp(&var[j])).unwrap_or(0);
        order[a..b].sort_by(|&i, &j| bins[i].c[axis].total_cmp(&bins[j].c[axis]).then(i.cmp(&j)));
        let mut acc = 0.0f64;
        let mut cut = a + 1;
        for (k, &i) in order[a..b].iter().enumerate() {
            acc += bins[i].w as f64;
            if acc >= w / 2.0 {
                cut = (a + k + 1).clamp(a + 1, b - 1);
                break;
            }
        }
        boxes[bi] = (a, cut);
        boxes.push((cut, b));
    }
    let mut palette: Vec<[f32; 3]> = boxes.iter().map(|&bx| stats(&order, bx).1.map(|v| v as f32)).collect();
    // k-means refinement over the histogram.
    for _ in 0..4 {
        let mut acc = vec![[0.0f64; 4]; palette.len()];
        for bin in &bins {
            let j = nearest(&palette, bin.c);
            for (ak, ck) in acc[j].iter_mut().zip(bin.c) {
                *ak += ck as f64 * bin.w as f64;
            }
            acc[j][3] += bin.w as f64;
        }
        for (p, a) in palette.iter_mut().zip(&acc) {
            if a[3] > 0.0 {
                *p = [(a[0] / a[3]) as f32, (a[1] / a[3]) as f32, (a[2] / a[3]) as f32];
            }
        }
    }
    let mut out: Vec<[u8; 3]> = palette.iter().map(|c| c.map(|v| v.round().clamp(0.0, 255.0) as u8)).collect();
    out.sort();
    out.dedup();
    out
}

fn nearest(palette: &[[f32; 3]], c: [f32; 3]) -> usize {
    let mut best = 0;
    let mut bd = f32::MAX;
    for (i, p) in palette.iter().enumerate() {
        // Weighted RGB distance: green matters most, blue least.
        let d = 2.0 * (p[0] - c[0]).powi(2) + 4.0 * (p[1] - c[1]).powi(2) + 3.0 * (p[2] - c[2]).powi(2);
        if d < bd {
            bd = d;
            best = i;
        }
    }
    best
}

const BAYER8: [[u8; 8]; 8] = [
    [0, 32, 8, 40, 2, 34, 10, 42],
    [48, 16, 56, 24, 50, 18, 58, 26],
    [12, 44, 4, 36, 14, 46, 6, 38],
    [60, 28, 52, 20, 62, 30, 54, 22],
    [3, 35, 11, 43, 1, 33, 9, 41],
    [51, 19, 59, 27, 49, 17, 57, 25],
    [15, 47, 7, 39, 13, 45, 5, 37],
    [63, 31, 55, 23, 61, 29, 53, 21],
];

/// Maps RGB to palette indices through a lazily filled 6-bit-per-channel cache.
pub struct Mapper {
    palette: Vec<[f32; 3]>,
    cache: Vec<u16>,
    spread: f32,
}

impl Mapper {
    pub fn new(palette: &[[u8; 3]], dither: bool) -> Mapper {
        let n = palette.len().max(1) as f32;
        Mapper {
            palette: palette.iter().map(|c| c.map(|v| v as f32)).collect(),
            cache: vec![u16::MAX; 1 << 18],
            spread: if dither { (0.3 * 255.0 / n.cbrt()).clamp(4.0, 96.0) } else { 0.0 },
        }
    }

    pub fn map(&mut self, rgb: &[u8], w: usize, out: &mut Vec<u8>) {
        out.clear();
        for (i, p) in rgb.chunks_exact(3).enumerate() {
            let (x, y) = (i % w, i / w);
            let off =
                if self.spread > 0.0 { ((BAYER8[y & 7][x & 7] as f32 + 0.5) / 64.0 - 0.5) * self.spread } else { 0.0 };
            let c = [0, 1, 2].map(|k| (p[k] as f32 + off).round().clamp(0.0, 255.0) as usize);
            let key = ((c[0] >> 2) << 12) | ((c[1] >> 2) << 6) | (c[2] >> 2);
            let mut idx = self.cache[key];
            if idx == u16::MAX {
                let centre = [0, 1, 2].map(|k| ((c[k] >> 2) << 2) as f32 + 1.5);
                idx = nearest(&self.palette, centre) as u16;
                self.cache[key] = idx;
            }
            out.push(idx as u8);
        }
    }
}

/// The animated GIF and what it contains.
pub struct Animation {
    pub gif: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub duration_cs: u64,
    pub colors: usize,
}

/// Builds the GIF. `Err` is the caller's fault (a message for invalid-input).
pub fn animate(images: &[RgbaImage], o: &Options, progress: &mut dyn FnMut(f32)) -> Result<Animation, String> {
    let first = images.first().ok_or("no frames")?;
    let (w0, h0) = first.dimensions();
    let (w, h) = match o.width {
        Some(w) => (w, ((w as f64 * h0 as f64 / w0 as f64).round() as u32).max(1)),
        None => (w0, h0),
    };
    if w > u16::MAX as u32 || h > u16::MAX as u32 || w > 4096 || h > 4096 {
        return Err(format!("output size {w}x{h} is too large for a GIF here (at most 4096 per side); set width"));
    }
    let steps = timeline(images.len(), o);
    if steps.len() > MAX_FRAMES {
        return Err(format!("{} frames is more than {MAX_FRAMES}; lower fps or crossfade", steps.len()));
    }
    let total = steps.len() as u64 * w as u64 * h as u64;
    if total > MAX_TOTAL_PIXELS {
        return Err(format!(
            "{} frames of {w}x{h} is more than {MAX_TOTAL_PIXELS} pixels in all; set a smaller width or fewer frames",
            steps.len()
        ));
    }
    let keys: Vec<Frame> = images.iter().map(|img| fit(img, w, h, o.background)).collect();
    progress(0.1);

    // Palette from the key frames and their midway blends.
    let mut mids = Vec::new();
    let mut buf = Vec::new();
    if o.crossfade > 0.0 && keys.len() > 1 {
        for i in 0..keys.len() {
            let j = (i + 1) % keys.len();
            if j == 0 && !o.looping {
                continue;
            }
            blend(&keys[i], &keys[j], 0.5, &mut buf);
            mids.push(Frame { rgb: std::mem::take(&mut buf) });
        }
    }
    let samples: Vec<&[u8]> = keys.iter().chain(&mids).map(|f| f.rgb.as_slice()).collect();
    let palette = build_palette(&samples, o.max_colors);
    drop(mids);
    progress(0.2);

    let mut mapper = Mapper::new(&palette, o.dither);
    let flat: Vec<u8> = palette.iter().flatten().copied().collect();
    let mut gif = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut gif, w as u16, h as u16, &flat).map_err(|e| e.to_string())?;
        if o.looping {
            enc.set_repeat(gif::Repeat::Infinite).map_err(|e| e.to_string())?;
        }
        let mut prev: Option<Vec<u8>> = None;
        let mut idx = Vec::new();
        let mut rgb = Vec::new();
        for (s, step) in steps.iter().enumerate() {
            if step.t == 0.0 {
                mapper.map(&keys[step.from].rgb, w as usize, &mut idx);
            } else {
                blend(&keys[step.from], &keys[step.to], step.t, &mut rgb);
                mapper.map(&rgb, w as usize, &mut idx);
            }
            // Only the rectangle that changed (the whole first frame).
            let (x0, y0, x1, y1) = match &prev {
                None => (0, 0, w as usize, h as usize),
                Some(p) => changed_box(p, &idx, w as usize, h as usize).unwrap_or((0, 0, 1, 1)),
            };
            let mut sub = Vec::with_capacity((x1 - x0) * (y1 - y0));
            for y in y0..y1 {
                sub.extend_from_slice(&idx[y * w as usize + x0..y * w as usize + x1]);
            }
            let frame = gif::Frame {
                delay: step.delay,
                dispose: gif::DisposalMethod::Keep,
                left: x0 as u16,
                top: y0 as u16,
                width: (x1 - x0) as u16,
                height: (y1 - y0) as u16,
                buffer: std::borrow::Cow::Owned(sub),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).map_err(|e| e.to_string())?;
            prev = Some(std::mem::take(&mut idx));
            if let Some(p) = &prev {
                idx = Vec::with_capacity(p.len());
            }
            progress(0.2 + 0.8 * (s + 1) as f32 / steps.len() as f32);
        }
    }
    Ok(Animation {
        gif,
        width: w,
        height: h,
        frames: steps.len(),
        duration_cs: steps.iter().map(|s| s.delay as u64).sum(),
        colors: palette.len(),
    })
}

/// Bounding box (x0, y0, x1, y1; exclusive) of the pixels that differ.
fn changed_box(a: &[u8], b: &[u8], w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        let (ra, rb) = (&a[y * w..(y + 1) * w], &b[y * w..(y + 1) * w]);
        if ra == rb {
            continue;
        }
        let first = ra.iter().zip(rb).position(|(p, q)| p != q).unwrap_or(0);
        let last = w - ra.iter().rev().zip(rb.iter().rev()).position(|(p, q)| p != q).unwrap_or(0);
        x0 = x0.min(first);
        x1 = x1.max(last);
        y0 = y0.min(y);
        y1 = y + 1;
    }
    (x0 != usize::MAX).then_some((x0, y0, x1, y1))
}

struct Video;

impl Stage for Video {
    type Params = Params;
    const NAME: &'static str = "video";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Turns an image sequence (in the given order) into an animated GIF: each image \
        held, crossfades between them, optional seamless loop, a shared median-cut palette with ordered dithering";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/gif"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let o = Options::from_params(&input.params)?;
        input.first()?;
        if input.artifacts.len() > MAX_INPUTS {
            return Err(StageError::invalid_input(format!(
                "{} images is more than {MAX_INPUTS}",
                input.artifacts.len()
            )));
        }
        let mut images = Vec::with_capacity(input.artifacts.len());
        for a in &input.artifacts {
            images.push(decode(a)?.to_rgba8());
        }
        let anim = animate(&images, &o, &mut |f| progress(f, "encoding frames")).map_err(StageError::invalid_input)?;
        let sources: Vec<&str> = input.artifacts.iter().map(|a| a.name.as_str()).collect();
        let bytes = anim.gif.len();
        Ok(Output::new()
            .artifact("animation.gif", "image/gif", anim.gif)
            .meta("frames", anim.frames)
            .meta("source_frames", images.len())
            .meta("sources", sources)
            .meta("duration_s", anim.duration_cs as f64 / 100.0)
            .meta("width", anim.width)
            .meta("height", anim.height)
            .meta("fps", round4(o.fps))
            .meta("hold_s", round4(o.hold))
            .meta("crossfade_s", round4(o.crossfade))
            .meta("loop", o.looping)
            .meta("colors", anim.colors)
            .meta("bytes", bytes))
    }
}

export_stage!(Video);

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbaImage {
        RgbaImage::from_pixel(w, h, Rgba([c[0], c[1], c[2], 255]))
    }

    fn gradient(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| Rgba([(x * 255 / w) as u8, (y * 255 / h) as u8, 128, 255]))
    }

    struct Decoded {
        frames: Vec<(u16, u16, u16, u16, u16)>, // left, top, width, height, delay
        repeat: gif::Repeat,
        size: (u16, u16),
        palette_len: usize,
    }

    fn decode_gif(data: &[u8]) -> Decoded {
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::Indexed);
        let mut d = opts.read_info(data).unwrap();
        let mut frames = Vec::new();
        while let Some(f) = d.read_next_frame().unwrap() {
            frames.push((f.left, f.top, f.width, f.height, f.delay));
        }
        Decoded {
            frames,
            repeat: d.repeat(),
            size: (d.width(), d.height()),
            palette_len: d.global_palette().map_or(0, |p| p.len() / 3),
        }
    }

    #[test]
    fn timeline_holds_and_fades() {
        let o = Options { fps: 10.0, hold: 1.0, crossfade: 0.5, looping: false, ..Options::default() };
        let t = timeline(3, &o);
        // hold, 5 fades, hold, 5 fades, hold
        assert_eq!(t.len(), 13);
        assert_eq!(t[0], Step { from: 0, to: 0, t: 0.0, delay: 100 });
        assert_eq!(t[1].delay, 10);
        assert!((t[3].t - 0.5).abs() < 1e-6);
        assert_eq!(t.iter().map(|s| s.delay as u32).sum::<u32>(), 400);
        // Looping adds the fade back to the first image.
        let t = timeline(3, &Options { looping: true, ..o });
        assert_eq!(t.len(), 18);
        assert_eq!((t[17].from, t[17].to), (2, 0));
        // No hold, no fade: a flipbook at fps, rounding on the running clock.
        let t = timeline(4, &Options { fps: 15.0, hold: 0.0, crossfade: 0.0, ..o });
        assert_eq!(t.iter().map(|s| s.delay).collect::<Vec<_>>(), vec![7, 6, 7, 7]);
    }

    #[test]
    fn gif_decodes_with_the_expected_frames() {
        let images = vec![solid(40, 30, [255, 0, 0]), solid(40, 30, [0, 0, 255]), gradient(80, 30)];
        let o = Options { fps: 10.0, hold: 0.5, crossfade: 0.3, looping: true, ..Options::default() };
        let anim = animate(&images, &o, &mut |_| {}).unwrap();
        let d = decode_gif(&anim.gif);
        assert_eq!(d.size, (40, 30));
        assert_eq!(d.frames.len(), 3 * (1 + 3));
        assert_eq!(anim.frames, 12);
        assert_eq!(d.repeat, gif::Repeat::Infinite);
        assert_eq!(d.frames.iter().map(|f| f.4 as u64).sum::<u64>(), anim.duration_cs);
        assert_eq!(anim.duration_cs, 3 * 50 + 9 * 10);
        assert!(d.palette_len >= 2);
        // Frame 0 is full size.
        assert_eq!((d.frames[0].2, d.frames[0].3), (40, 30));
    }

    #[test]
    fn play_once_has_no_loop_extension() {
        let images = vec![solid(16, 16, [10, 10, 10]), solid(16, 16, [200, 200, 200])];
        let o = Options { looping: false, crossfade: 0.0, ..Options::default() };
        let anim = animate(&images, &o, &mut |_| {}).unwrap();
        let d = decode_gif(&anim.gif);
        assert_eq!(d.frames.len(), 2);
        assert_eq!(d.repeat, gif::Repeat::Finite(0));
    }

    #[test]
    fn colours_survive_quantisation() {
        let images = vec![solid(32, 32, [255, 0, 0]), solid(32, 32, [0, 255, 0])];
        let o = Options { crossfade: 0.0, dither: false, max_colors: 4, ..Options::default() };
        let anim = animate(&images, &o, &mut |_| {}).unwrap();
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut d = opts.read_info(anim.gif.as_slice()).unwrap();
        let f = d.read_next_frame().unwrap().unwrap();
        assert_eq!(&f.buffer[..4], &[255, 0, 0, 255]);
        let f = d.read_next_frame().unwrap().unwrap();
        // The second frame only stores what changed: everything, in green.
        assert_eq!((f.width, f.height), (32, 32));
        assert_eq!(&f.buffer[..4], &[0, 255, 0, 255]);
    }

    #[test]
    fn other_sizes_are_fitted_on_the_background() {
        let wide = solid(100, 20, [255, 255, 255]);
        let f = fit(&wide, 50, 50, [0, 0, 255]);
        // Letterboxed: 50 x 10 band in the middle, blue above and below.
        assert_eq!(&f.rgb[0..3], &[0, 0, 255]);
        let mid = (25 * 50 + 25) * 3;
        assert_eq!(&f.rgb[mid..mid + 3], &[255, 255, 255]);
        // Transparent pixels take the background.
        let clear = RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 0]));
        assert_eq!(&fit(&clear, 8, 8, [1, 2, 3]).rgb[0..3], &[1, 2, 3]);
    }

    #[test]
    fn palette_respects_max_colors() {
        let g = gradient(64, 64);
        let rgb: Vec<u8> = g.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
        for k in [2, 16, 256] {
            let p = build_palette(&[&rgb], k);
            assert!(p.len() <= k && p.len() >= k.min(2), "{k}: {}", p.len());
        }
    }

    #[test]
    fn width_scales_the_output() {
        let images = vec![gradient(200, 100)];
        let o = Options { width: Some(50), ..Options::default() };
        let anim = animate(&images, &o, &mut |_| {}).unwrap();
        assert_eq!((anim.width, anim.height), (50, 25));
        assert_eq!(anim.frames, 1);
    }

    #[test]
    fn background_takes_the_shared_colour_grammar() {
        // Wider than before (`#rrggbb` only): short forms, any case, no `#`.
        let bg = |c: &str| Options::from_params(&serde_json::from_value(json!({"background": c})).unwrap()).unwrap();
        assert_eq!(bg("fff").background, [255, 255, 255]);
        assert_eq!(bg("#F80").background, [0xff, 0x88, 0x00]);
        assert_eq!(bg("1e50C8").background, [0x1e, 0x50, 0xc8]);
        assert_eq!(bg("#000000").background, [0, 0, 0]);
    }

    #[test]
    fn params_are_checked() {
        let p = |v: serde_json::Value| {
            serde_json::from_value::<Params>(v)
                .map_err(|e| e.to_string())
                .and_then(|p| Options::from_params(&p).map_err(|e| e.to_string()))
        };
        assert!(p(json!({})).is_ok());
        assert!(p(json!({"loop": false})).is_ok());
        assert!(p(json!({"fps": 0})).is_err());
        assert!(p(json!({"fps": 60})).is_err());
        assert!(p(json!({"max_colors": 1})).is_err());
        assert!(p(json!({"background": "black"})).unwrap_err().contains("background \"black\" is not a hex colour"));
        assert!(p(json!({"background": "000000"})).is_ok());
        assert!(p(json!({"crossfade": -1})).is_err());
        assert!(p(json!({"looping": true})).is_err());
    }
}
