//! `social_formats`: one image in, every common social media size out.
//!
//! Modes: `fill` scales to cover the target and crops around a focus point
//! (the default: no bars), `fit` scales to fit inside and leaves the rest
//! transparent, `pad` scales to fit inside and fills the rest with
//! `pad_color` (or the image's own border colour with `auto`). Resampling is
//! stagecraft-imaging's Lanczos3, with alpha premultiplied so transparent
//! edges do not bleed dark fringes.

use image::{Rgba, RgbaImage};
use stagecraft_imaging::color::{parse_hex_alpha, HEX_GRAMMAR};
use stagecraft_imaging::resize::resize_rgba;
use stagecraft_sdk::images::{decode, encode, stem, unique_name, Format};
use stagecraft_sdk::prelude::*;

/// A target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SocialFormat {
    /// 1080 x 1080: Instagram feed post (square).
    InstagramSquare,
    /// 1080 x 1350: Instagram feed post (portrait, 4:5).
    InstagramPortrait,
    /// 1080 x 1920: stories and reels (Instagram, Facebook, TikTok, Snapchat), 9:16.
    Story,
    /// 1200 x 630: Facebook link/feed image and the Open Graph preview size (alias `og`).
    #[serde(alias = "og", alias = "open_graph")]
    Facebook,
    /// 1600 x 900: X/Twitter in-stream image, 16:9.
    Twitter,
    /// 1200 x 627: LinkedIn shared link/post image.
    Linkedin,
    /// 1280 x 720: YouTube thumbnail.
    Youtube,
    /// 1000 x 1500: Pinterest pin, 2:3.
    Pinterest,
}

impl SocialFormat {
    pub const ALL: [SocialFormat; 8] = [
        SocialFormat::InstagramSquare,
        SocialFormat::InstagramPortrait,
        SocialFormat::Story,
        SocialFormat::Facebook,
        SocialFormat::Twitter,
        SocialFormat::Linkedin,
        SocialFormat::Youtube,
        SocialFormat::Pinterest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SocialFormat::InstagramSquare => "instagram_square",
            SocialFormat::InstagramPortrait => "instagram_portrait",
            SocialFormat::Story => "story",
            SocialFormat::Facebook => "facebook",
            SocialFormat::Twitter => "twitter",
            SocialFormat::Linkedin => "linkedin",
            SocialFormat::Youtube => "youtube",
            SocialFormat::Pinterest => "pinterest",
        }
    }

    pub fn size(self) -> (u32, u32) {
        match self {
            SocialFormat::InstagramSquare => (1080, 1080),
            SocialFormat::InstagramPortrait => (1080, 1350),
            SocialFormat::Story => (1080, 1920),
            SocialFormat::Facebook => (1200, 630),
            SocialFormat::Twitter => (1600, 900),
            SocialFormat::Linkedin => (1200, 627),
            SocialFormat::Youtube => (1280, 720),
            SocialFormat::Pinterest => (1000, 1500),
        }
    }
}

/// How the image is brought to each target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cover the target and crop the overflow around (`focus_x`, `focus_y`): no bars, some of the image cut.
    #[default]
    Fill,
    /// Fit entirely inside the target, centred; the rest stays transparent (for JPEG: `pad_color`).
    Fit,
    /// Fit entirely inside the target, centred; the rest is filled with `pad_color`.
    Pad,
}

/// An extra target size.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Custom {
    /// Name used in the output file name: lower-case letters, digits, `_` and `-`.
    #[schemars(length(min = 1, max = 40))]
    pub name: String,
    /// Width in pixels.
    #[schemars(range(min = 16, max = 4096))]
    pub width: u32,
    /// Height in pixels.
    #[schemars(range(min = 16, max = 4096))]
    pub height: u32,
}

fn default_formats() -> Vec<SocialFormat> {
    SocialFormat::ALL.to_vec()
}
fn half() -> f32 {
    0.5
}
fn default_format() -> Format {
    Format::Png
}
fn default_quality() -> u8 {
    90
}

/// Parameters of `social_formats`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Which sizes to produce (default: all of them). `og` is accepted for `facebook`.
    #[serde(default = "default_formats")]
    pub formats: Vec<SocialFormat>,
    /// Extra sizes, each `{name, width, height}`.
    #[serde(default)]
    pub custom: Vec<Custom>,
    /// `fill` (cover and crop, default), `fit` (inside, transparent bars) or `pad` (inside, `pad_color` bars).
    #[serde(default)]
    pub mode: Mode,
    /// Colour of the bars for `pad` (and for `fit` when the output is JPEG): `#rgb` or `#rrggbb`
    /// (hex digits in either case, the `#` optional), each with an optional alpha (`#rgba`,
    /// `#rrggbbaa`), or `auto` for the average colour of the image's border. Default white.
    #[serde(default)]
    pub pad_color: Option<String>,
    /// Horizontal focus of `fill` crops, 0 (keep the left edge) to 1 (keep the right edge).
    #[serde(default = "half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub focus_x: f32,
    /// Vertical focus of `fill` crops, 0 (keep the top) to 1 (keep the bottom).
    #[serde(default = "half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub focus_y: f32,
    /// Output encoding: `png` (default) or `jpeg`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// JPEG quality, 1-100 (ignored for PNG).
    #[serde(default = "default_quality")]
    #[schemars(range(min = 1, max = 100))]
    pub quality: u8,
}

/// A checked target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pad {
    Transparent,
    Color([u8; 4]),
    Auto,
}

/// Where the image landed on a canvas, and by how much it was scaled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// Content box on the output: x, y, width, height.
    pub content: [u32; 4],
    /// Source region used: x, y, width, height (fractional for crops).
    pub source: [f64; 4],
    pub scale: f64,
}

/// Checks params: the list of targets and the padding.
pub fn plan(p: &Params) -> Result<(Vec<Target>, Pad), StageError> {
    let mut targets: Vec<Target> = Vec::new();
    for f in &p.formats {
        if !targets.iter().any(|t| t.name == f.name()) {
            let (width, height) = f.size();
            targets.push(Target { name: f.name().to_owned(), width, height });
        }
    }
    for c in &p.custom {
        let ok = !c.name.is_empty()
            && c.name.len() <= 40
            && c.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(StageError::invalid_input(format!(
                "custom size name {:?}: use 1-40 lower-case letters, digits, '_' or '-'",
                c.name
            )));
        }
        for (what, v) in [("width", c.width), ("height", c.height)] {
            if !(16..=4096).contains(&v) {
                return Err(StageError::invalid_input(format!(
                    "custom size {:?}: {what} {v} is out of range 16..=4096",
                    c.name
                )));
            }
        }
        if targets.iter().any(|t| t.name == c.name) {
            return Err(StageError::invalid_input(format!("size name {:?} is used twice", c.name)));
        }
        targets.push(Target { name: c.name.clone(), width: c.width, height: c.height });
    }
    if targets.is_empty() {
        return Err(StageError::invalid_input("no sizes asked for: give at least one of formats or custom"));
    }
    for (what, v) in [("focus_x", p.focus_x), ("focus_y", p.focus_y)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(StageError::invalid_input(format!("{what} {v} is out of range 0..=1")));
        }
    }
    if !(1..=100).contains(&p.quality) {
        return Err(StageError::invalid_input(format!("quality {} is out of range 1..=100", p.quality)));
    }
    let pad = match (p.mode, p.pad_color.as_deref()) {
        (Mode::Fill, Some(_)) => {
            return Err(StageError::invalid_input(
                "pad_color applies to modes \"pad\" and \"fit\", not \"fill\" (nothing is padded)",
            ))
        }
        (_, Some(s)) if s.trim().eq_ignore_ascii_case("auto") => Pad::Auto,
        (_, Some(s)) => Pad::Color(parse_hex_alpha(s).ok_or_else(|| {
            StageError::invalid_input(format!(
                "pad_color {s:?} is not a hex colour: use {HEX_GRAMMAR}, with an optional alpha \
                 (#rgba, #rrggbbaa), or auto"
            ))
        })?),
        (Mode::Fit, None) if p.format == Format::Png => Pad::Transparent,
        (_, None) => Pad::Color([255, 255, 255, 255]),
    };
    let pad = match (p.mode, pad) {
        (Mode::Fit, Pad::Color(_) | Pad::Auto) if p.format == Format::Png => Pad::Transparent,
        (_, pad) => pad,
    };
    Ok((targets, pad))
}

/// Average colour of the outermost ring of pixels.
pub fn border_color(img: &RgbaImage) -> [u8; 4] {
    let (w, h) = img.dimensions();
    let mut sum = [0u64; 4];
    let mut n = 0u64;
    let mut add = |p: &Rgba<u8>| {
        for i in 0..4 {
            sum[i] += p[i] as u64;
        }
        n += 1;
    };
    for x in 0..w {
        add(img.get_pixel(x, 0));
        add(img.get_pixel(x, h - 1));
    }
    for y in 1..h.saturating_sub(1) {
        add(img.get_pixel(0, y));
        add(img.get_pixel(w - 1, y));
    }
    let n = n.max(1);
    [(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8, (sum[3] / n) as u8]
}

/// One output image.
pub fn render(src: &RgbaImage, t: &Target, mode: Mode, pad: Pad, focus: (f32, f32)) -> (RgbaImage, Placement) {
    let (sw, sh) = (src.width() as f64, src.height() as f64);
    let (tw, th) = (t.width as f64, t.height as f64);
    match mode {
        Mode::Fill => {
            let scale = (tw / sw).max(th / sh);
            let (cw, ch) = ((tw / scale).min(sw), (th / scale).min(sh));
            let x = (sw - cw) * focus.0 as f64;
            let y = (sh - ch) * focus.1 as f64;
            let out = resize_rgba(src, Some([x, y, cw, ch]), t.width, t.height);
            (out, Placement { content: [0, 0, t.width, t.height], source: [x, y, cw, ch], scale })
        }
        Mode::Fit | Mode::Pad => {
            let scale = (tw / sw).min(th / sh);
            let iw = ((sw * scale).round() as u32).clamp(1, t.width);
            let ih = ((sh * scale).round() as u32).clamp(1, t.height);
            let inner = resize_rgba(src, None, iw, ih);
            let bg = match pad {
                Pad::Transparent => [0, 0, 0, 0],
                Pad::Color(c) => c,
                Pad::Auto => border_color(src),
            };
            let mut canvas = RgbaImage::from_pixel(t.width, t.height, Rgba(bg));
            let (ox, oy) = ((t.width - iw) / 2, (t.height - ih) / 2);
            for (x, y, p) in inner.enumerate_pixels() {
                let d = canvas.get_pixel_mut(ox + x, oy + y);
                *d = over(*p, *d);
            }
            (canvas, Placement { content: [ox, oy, iw, ih], source: [0.0, 0.0, sw, sh], scale })
        }
    }
}

/// `a` over `b` (straight alpha).
fn over(a: Rgba<u8>, b: Rgba<u8>) -> Rgba<u8> {
    let aa = a[3] as f32 / 255.0;
    if aa >= 1.0 || b[3] == 0 {
        return a;
    }
    let ba = b[3] as f32 / 255.0;
    let oa = aa + ba * (1.0 - aa);
    if oa <= 0.0 {
        return Rgba([0, 0, 0, 0]);
    }
    let mut o = [0u8; 4];
    for i in 0..3 {
        let c = (a[i] as f32 * aa + b[i] as f32 * ba * (1.0 - aa)) / oa;
        o[i] = c.round().clamp(0.0, 255.0) as u8;
    }
    o[3] = (oa * 255.0).round() as u8;
    Rgba(o)
}

struct SocialFormats;

impl Stage for SocialFormats {
    type Params = Params;
    const NAME: &'static str = "social_formats";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Resizes each input image to the common social media sizes (Instagram square \
        and portrait, stories, Facebook/Open Graph, X/Twitter, LinkedIn, YouTube, Pinterest, or custom ones) by \
        cover-and-crop, fit or pad, with Lanczos3 resampling; one artifact per size per input";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png", "image/jpeg"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let p = &input.params;
        let (targets, pad) = plan(p)?;
        input.first()?;
        let mut out = Output::new();
        let mut listing = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        let jobs = input.artifacts.len() * targets.len();
        let mut done = 0;
        for artifact in &input.artifacts {
            let src = decode(artifact)?.to_rgba8();
            if src.width() == 0 || src.height() == 0 {
                return Err(StageError::invalid_input(format!("{}: image is empty", artifact.name)));
            }
            let mut base = stem(&artifact.name).to_owned();
            if base.is_empty() {
                base = "image".into();
            }
            for t in &targets {
                progress(done as f32 / jobs as f32, &format!("{} -> {}", artifact.name, t.name));
                let (img, placement) = render(&src, t, p.mode, pad, (p.focus_x, p.focus_y));
                if placement.scale > 1.0 + 1e-9 {
                    warnings.push(format!(
                        "{} was upscaled {:.2}x for {} ({}x{} source)",
                        artifact.name,
                        placement.scale,
                        t.name,
                        src.width(),
                        src.height()
                    ));
                }
                let opaque = img.pixels().all(|p| p[3] == 255);
                let dynimg = if opaque {
                    image::DynamicImage::ImageRgb8(image::DynamicImage::ImageRgba8(img).to_rgb8())
                } else {
                    image::DynamicImage::ImageRgba8(img)
                };
                let data = encode(&dynimg, p.format, p.quality)?;
                let name = unique_name(&mut used, &base, &format!("_{}.{}", t.name, p.format.extension()));
                listing.push(json!({
                    "name": name,
                    "source": artifact.name,
                    "format": t.name,
                    "width": t.width,
                    "height": t.height,
                    "scale": (placement.scale * 1000.0).round() / 1000.0,
                    "content": placement.content,
                    "crop": placement.source,
                    "bytes": data.len(),
                }));
                out = out.artifact(name, p.format.media_type(), data);
                done += 1;
            }
        }
        progress(1.0, "done");
        Ok(out.meta("mode", p.mode).meta("count", listing.len()).meta("outputs", listing).meta("warnings", warnings))
    }
}

export_stage!(SocialFormats);

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    /// A 300 x 200 test card: red left half, blue right half, green 20 px border.
    fn card() -> RgbaImage {
        RgbaImage::from_fn(300, 200, |x, y| {
            if x < 20 || y < 20 || x >= 280 || y >= 180 {
                Rgba([0, 200, 0, 255])
            } else if x < 150 {
                Rgba([220, 0, 0, 255])
            } else {
                Rgba([0, 0, 220, 255])
            }
        })
    }

    #[test]
    fn sizes_are_exact_in_every_mode() {
        let (targets, _) = plan(&params(json!({}))).unwrap();
        assert_eq!(targets.len(), 8);
        let src = card();
        for mode in [Mode::Fill, Mode::Fit, Mode::Pad] {
            // Every size in fill; fit and pad share their layout code: two sizes each.
            let n = if mode == Mode::Fill { targets.len() } else { 2 };
            for t in &targets[..n] {
                let (img, _) = render(&src, t, mode, Pad::Color([255, 255, 255, 255]), (0.5, 0.5));
                assert_eq!(img.dimensions(), (t.width, t.height), "{mode:?} {}", t.name);
            }
        }
        let names: Vec<_> = targets.iter().map(|t| (t.name.as_str(), t.width, t.height)).collect();
        for want in [
            ("instagram_square", 1080, 1080),
            ("story", 1080, 1920),
            ("facebook", 1200, 630),
            ("twitter", 1600, 900),
            ("linkedin", 1200, 627),
        ] {
            assert!(names.contains(&want), "{want:?}");
        }
    }

    #[test]
    fn fill_crops_and_fit_letterboxes() {
        let src = card();
        let square = Target { name: "sq".into(), width: 100, height: 100 };
        // Fill: cover, so no border colour on the left/right edges (cropped away),
        // but the top and bottom border survive.
        let (img, pl) = render(&src, &square, Mode::Fill, Pad::Transparent, (0.5, 0.5));
        assert_eq!(pl.content, [0, 0, 100, 100]);
        assert!((pl.scale - 0.5).abs() < 1e-9);
        let mid_left = img.get_pixel(2, 50);
        assert!(mid_left[0] > 180 && mid_left[1] < 40, "left edge is red: {mid_left:?}");
        let top = img.get_pixel(50, 2);
        assert!(top[1] > 150, "top edge keeps the green border: {top:?}");
        // Fit: whole card in a 100 x 67 box, transparent bars above and below.
        let (img, pl) = render(&src, &square, Mode::Fit, Pad::Transparent, (0.5, 0.5));
        assert_eq!(pl.content, [0, 16, 100, 67]);
        assert_eq!(img.get_pixel(50, 5)[3], 0);
        assert_eq!(img.get_pixel(50, 95)[3], 0);
        assert_eq!(img.get_pixel(50, 50)[3], 255);
        // Pad: same layout, bars in the pad colour.
        let (img, _) = render(&src, &square, Mode::Pad, Pad::Color([10, 20, 30, 255]), (0.5, 0.5));
        assert_eq!(img.get_pixel(50, 5).0, [10, 20, 30, 255]);
        // Auto pad: the green border's colour.
        let (img, _) = render(&src, &square, Mode::Pad, Pad::Auto, (0.5, 0.5));
        assert_eq!(img.get_pixel(50, 5).0, [0, 200, 0, 255]);
    }

    #[test]
    fn focus_moves_the_crop() {
        let src = card();
        let tall = Target { name: "tall".into(), width: 50, height: 100 };
        let (left, pl) = render(&src, &tall, Mode::Fill, Pad::Transparent, (0.0, 0.5));
        assert_eq!(pl.source[0], 0.0);
        let c = left.get_pixel(25, 50);
        assert!(c[0] > 180, "focus_x 0 keeps the red half: {c:?}");
        let (right, _) = render(&src, &tall, Mode::Fill, Pad::Transparent, (1.0, 0.5));
        let c = right.get_pixel(25, 50);
        assert!(c[2] > 180, "focus_x 1 keeps the blue half: {c:?}");
    }

    #[test]
    fn params_are_checked() {
        assert_eq!(plan(&params(json!({"formats": ["og", "story", "og"]}))).unwrap().0.len(), 2);
        assert!(plan(&params(json!({"formats": []}))).is_err());
        assert!(plan(&params(json!({"mode": "fill", "pad_color": "#fff000"}))).is_err());
        assert!(plan(&params(json!({"mode": "pad", "pad_color": "white"}))).is_err());
        assert!(plan(&params(json!({"custom": [{"name": "Bad Name", "width": 100, "height": 100}]}))).is_err());
        assert!(plan(&params(json!({"custom": [{"name": "banner", "width": 10000, "height": 100}]}))).is_err());
        assert!(plan(&params(json!({"focus_x": 1.5}))).is_err());
        let (t, pad) = plan(&params(json!({"formats": [], "custom": [{"name": "banner", "width": 1500, "height": 500}], "mode": "pad", "pad_color": "#00000080"}))).unwrap();
        assert_eq!(t, vec![Target { name: "banner".into(), width: 1500, height: 500 }]);
        assert_eq!(pad, Pad::Color([0, 0, 0, 128]));
        let err = plan(&params(json!({"mode": "pad", "pad_color": "white"}))).unwrap_err();
        assert!(err.to_string().contains("pad_color \"white\" is not a hex colour"), "{err}");
        assert!(serde_json::from_value::<Params>(json!({"format": ["tiktok"]})).is_err());
        assert!(serde_json::from_value::<Params>(json!({"formats": ["tiktok"]})).is_err());
    }

    #[test]
    fn pad_color_takes_the_shared_grammar() {
        // Wider than before: short forms and a missing `#` are colours too.
        let pad = |c: &str| plan(&params(json!({"mode": "pad", "pad_color": c}))).map(|(_, pad)| pad).ok();
        assert_eq!(pad("fff"), Some(Pad::Color([255, 255, 255, 255])));
        assert_eq!(pad("#0F08"), Some(Pad::Color([0, 0xff, 0, 0x88])));
        assert_eq!(pad("1e50C8"), Some(Pad::Color([0x1e, 0x50, 0xc8, 255])));
        assert_eq!(pad(" AUTO "), Some(Pad::Auto));
        assert_eq!(pad("#12345"), None);
    }
}
