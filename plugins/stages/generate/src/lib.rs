//! `generate`: offline text-to-image. No model and no service: a prompt and
//! a seed drive a deterministic procedural renderer. The prompt picks the
//! palette (colour words first, then a hash-derived harmony) and, through
//! words such as "bottle", "gift" or "ring", the subject; the seed varies
//! the composition, camera, lighting and scene. Same prompt, seed and size:
//! the same bytes.
//!
//! Styles: `product` (a sphere-traced studio shot of a subject with soft
//! shadows and softbox reflections) and `logo` (a flat badge with the
//! prompt's initials or a geometric emblem, on a flat background unless a
//! random scene is asked for).

pub mod color;
pub mod logo;
pub mod product;
pub mod scene;

use color::{hex, lin, mixc, parse_hex, scale, to_u8, words, Palette, Rng};
use stagecraft_imaging::color::hex_error;
use stagecraft_sdk::images::{encode, Format};
use stagecraft_sdk::prelude::*;

/// Renders are computed at no more than this many pixels and resampled
/// (Lanczos3) up to the requested size, so a 4096 x 4096 request costs
/// about what a 1100 x 1100 one does.
pub const MAX_RENDER_PIXELS: u64 = 1_200_000;
pub const MIN_SIZE: u32 = 16;
pub const MAX_SIZE: u32 = 4096;
pub const MAX_COUNT: u32 = 16;
/// Upper bound on `width * height * count`.
pub const MAX_TOTAL_PIXELS: u64 = 64 * 1024 * 1024;

/// What fills the frame behind the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    /// Pure white (#ffffff), like a catalogue shot; the subject casts a soft grey shadow.
    #[default]
    White,
    /// One flat colour, given by `color` (default: a pale tint of the prompt's palette).
    Plain,
    /// A painted scene from the seed: gradient sky at some time of day, sun glow, layered hills, bokeh.
    Random,
}

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// A studio product shot of one subject (orb, bottle, gift box, ring, stack, gem or can;
    /// named by words in the prompt, else chosen from the prompt and seed).
    #[default]
    Product,
    /// A flat logo mark: a badge holding the prompt's initials or a geometric emblem.
    Logo,
}

fn default_size() -> u32 {
    512
}
fn default_count() -> u32 {
    1
}
fn default_format() -> Format {
    Format::Png
}
fn default_quality() -> u8 {
    90
}

/// Parameters of `generate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// What to draw, in words. Colour words ("red", "teal", "gold"...) set the palette; subject
    /// words ("bottle", "gift", "ring", "gem", "can", "cake", "ball") set the product; for logos
    /// the initials of the first two significant words become the monogram.
    #[schemars(length(min = 1, max = 1000))]
    pub prompt: String,
    /// Seed of the variation. The same prompt, seed and size always give the same bytes.
    #[serde(default)]
    pub seed: u64,
    /// Width in pixels.
    #[serde(default = "default_size")]
    #[schemars(range(min = 16, max = 4096))]
    pub width: u32,
    /// Height in pixels.
    #[serde(default = "default_size")]
    #[schemars(range(min = 16, max = 4096))]
    pub height: u32,
    /// Background: `white`, `plain` (flat `color`) or `random` (a painted scene).
    #[serde(default)]
    pub background: Background,
    /// Colour of a `plain` background: `#rgb` or `#rrggbb` (hex digits in either case, the `#`
    /// optional). Only valid with `background: plain`.
    #[serde(default)]
    pub color: Option<String>,
    /// `product` (a studio shot) or `logo` (a flat mark, good input for transparent_png and distressed).
    #[serde(default)]
    pub style: Style,
    /// Number of variations; variation `i` uses seed `seed + i`.
    #[serde(default = "default_count")]
    #[schemars(range(min = 1, max = 16))]
    pub count: u32,
    /// Output encoding: `png` or `jpeg`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// JPEG quality, 1-100 (ignored for PNG).
    #[serde(default = "default_quality")]
    #[schemars(range(min = 1, max = 100))]
    pub quality: u8,
}

/// One image to render.
#[derive(Debug, Clone)]
pub struct Spec {
    pub prompt: String,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub background: Background,
    pub color: Option<[u8; 3]>,
    pub style: Style,
}

/// A rendered image and what it shows.
pub struct Rendered {
    pub image: image::RgbImage,
    pub palette: Palette,
    /// What was drawn, e.g. `bottle` or `logo: hexagon badge, monogram "BH"`.
    pub subject: String,
    pub background: [u8; 3],
}

/// Checks params; returns the specs of every variation.
pub fn plan(p: &Params) -> Result<Vec<Spec>, StageError> {
    let prompt = p.prompt.trim();
    if prompt.is_empty() {
        return Err(StageError::invalid_input("prompt is empty: describe what to draw"));
    }
    if prompt.chars().count() > 1000 {
        return Err(StageError::invalid_input("prompt is longer than 1000 characters"));
    }
    for (name, v) in [("width", p.width), ("height", p.height)] {
        if !(MIN_SIZE..=MAX_SIZE).contains(&v) {
            return Err(StageError::invalid_input(format!("{name} {v} is out of range {MIN_SIZE}..={MAX_SIZE}")));
        }
    }
    if !(1..=MAX_COUNT).contains(&p.count) {
        return Err(StageError::invalid_input(format!("count {} is out of range 1..={MAX_COUNT}", p.count)));
    }
    let total = p.width as u64 * p.height as u64 * p.count as u64;
    if total > MAX_TOTAL_PIXELS {
        return Err(StageError::invalid_input(format!(
            "width x height x count = {total} pixels; at most {MAX_TOTAL_PIXELS} per call"
        )));
    }
    if !(1..=100).contains(&p.quality) {
        return Err(StageError::invalid_input(format!("quality {} is out of range 1..=100", p.quality)));
    }
    let color = match (&p.color, p.background) {
        (None, _) => None,
        (Some(c), Background::Plain) => {
            Some(parse_hex(c).ok_or_else(|| StageError::invalid_input(hex_error("color", c)))?)
        }
        (Some(_), other) => {
            return Err(StageError::invalid_input(format!(
                "color applies only to background \"plain\" (background is {:?})",
                format!("{other:?}").to_lowercase()
            )))
        }
    };
    Ok((0..p.count)
        .map(|i| Spec {
            prompt: prompt.to_owned(),
            seed: p.seed.wrapping_add(i as u64),
            width: p.width,
            height: p.height,
            background: p.background,
            color,
            style: p.style,
        })
        .collect())
}

/// The file name of a variation: a slug of the prompt and the seed.
pub fn file_name(prompt: &str, seed: u64, ext: &str) -> String {
    let mut slug = String::new();
    for w in words(prompt) {
        let w: String = w.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        if w.is_empty() {
            continue;
        }
        if slug.len() + w.len() + 1 > 48 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&w);
    }
    if slug.is_empty() {
        slug.push_str("image");
    }
    format!("{slug}-{seed}.{ext}")
}

fn luminance(c: [u8; 3]) -> f32 {
    let l = lin(c);
    0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]
}

/// Renders one image. Pure and deterministic.
pub fn render(spec: &Spec) -> Rendered {
    let palette = Palette::from_prompt(&spec.prompt);
    let prompt_hash = color::fnv1a(spec.prompt.to_lowercase().as_bytes());
    let mut rng = Rng::new(color::mix(prompt_hash) ^ spec.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));

    // Render size: the requested one, or smaller with the same aspect.
    let (w, h) = (spec.width, spec.height);
    let area = w as u64 * h as u64;
    let (rw, rh) = if area > MAX_RENDER_PIXELS {
        let k = (MAX_RENDER_PIXELS as f64 / area as f64).sqrt();
        (((w as f64 * k).round() as u32).max(16), ((h as f64 * k).round() as u32).max(16))
    } else {
        (w, h)
    };

    let flat = match spec.background {
        Background::White => [255, 255, 255],
        Background::Plain => spec.color.unwrap_or(palette.light),
        Background::Random => [0, 0, 0],
    };
    let backdrop = match spec.background {
        Background::Random => scene::Backdrop::scene(rw, rh, &palette, &mut rng),
        _ => scene::Backdrop::flat(flat),
    };
    let unit = rw.min(rh) as f32;
    let pix = 2.0 / unit;
    let mut img = image::RgbImage::new(rw, rh);

    let subject = match spec.style {
        Style::Product => {
            let kind = product::Kind::from_words(&words(&spec.prompt))
                .unwrap_or_else(|| product::Kind::ALL[rng.below(product::Kind::ALL.len())]);
            let subject = product::Subject::new(kind, &palette, &mut rng);
            let shot = product::Shot::new(subject, &backdrop, &mut rng);
            for y in 0..rh {
                for x in 0..rw {
                    let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                    let sx = (2.0 * fx - rw as f32) / unit;
                    let sy = (rh as f32 - 2.0 * fy) / unit;
                    let c = shot.pixel(sx, sy, pix, backdrop.at(fx, fy));
                    img.put_pixel(x, y, image::Rgb(quantize(c, backdrop.dither(x, y))));
                }
            }
            kind.name().to_owned()
        }
        Style::Logo => {
            let mark = logo::Mark::new(&spec.prompt, &mut rng);
            let bg_l = if backdrop.mode == scene::Mode::Flat { luminance(flat) } else { 0.3 };
            let badge = if (luminance(palette.primary) - bg_l).abs() < 0.12 { palette.dark } else { palette.primary };
            let ink = if luminance(badge) > 0.45 { palette.dark } else { [255, 255, 255] };
            let (badge, ink, accent) = (lin(badge), lin(ink), lin(palette.accent));
            for y in 0..rh {
                for x in 0..rw {
                    let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                    let sx = (2.0 * fx - rw as f32) / unit;
                    let sy = (rh as f32 - 2.0 * fy) / unit;
                    let cov = mark.cover(sx, sy, pix);
                    let mut c = backdrop.at(fx, fy);
                    if backdrop.mode == scene::Mode::Scene {
                        c = scale(c, 1.0 - 0.45 * cov.shadow);
                    }
                    c = mixc(c, badge, cov.badge);
                    c = mixc(c, ink, cov.outline);
                    c = mixc(c, ink, cov.emblem);
                    c = mixc(c, accent, cov.dot);
                    img.put_pixel(x, y, image::Rgb(quantize(c, backdrop.dither(x, y))));
                }
            }
            match mark.emblem {
                logo::Emblem::Monogram => format!("logo: {} badge, monogram \"{}\"", mark.badge.name(), mark.text),
                e => format!("logo: {} badge, {} emblem", mark.badge.name(), e.name()),
            }
        }
    };

    let image = if (rw, rh) == (w, h) { img } else { upscale(&img, w, h) };
    Rendered { image, palette, subject, background: flat }
}

fn quantize(c: color::Lin, dither: f32) -> [u8; 3] {
    if dither == 0.0 {
        return to_u8(c);
    }
    let f = |v: f32| (color::linear_to_srgb(v) * 255.0 + 0.5 + dither * 0.5).clamp(0.0, 255.0) as u8;
    [f(c[0]), f(c[1]), f(c[2])]
}

/// Lanczos3 resampling to the requested size.
fn upscale(img: &image::RgbImage, w: u32, h: u32) -> image::RgbImage {
    stagecraft_imaging::resize::resize_rgb(img, w, h)
}

struct Generate;

impl Stage for Generate {
    type Params = Params;
    const NAME: &'static str = "generate";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Offline text-to-image: deterministic procedural product shots or logo marks \
        from a prompt and a seed (palette from colour words, subject from object words), on white, a plain colour \
        or a painted random scene";
    const ACCEPTS: &'static [&'static str] = &[];
    const PRODUCES: &'static [&'static str] = &["image/png", "image/jpeg"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let params = input.params;
        let specs = plan(&params)?;
        let n = specs.len();
        let mut out = Output::new();
        let mut images = Vec::new();
        let mut palette = None;
        for (i, spec) in specs.iter().enumerate() {
            progress(i as f32 / n as f32, &format!("rendering {} of {n}", i + 1));
            let r = render(spec);
            let data = encode(&image::DynamicImage::ImageRgb8(r.image), params.format, params.quality)?;
            let name = file_name(&spec.prompt, spec.seed, params.format.extension());
            images.push(json!({ "name": name, "seed": spec.seed, "subject": r.subject, "bytes": data.len() }));
            out = out.artifact(name, params.format.media_type(), data);
            palette.get_or_insert((r.palette, r.background));
        }
        progress(1.0, "done");
        let (palette, background) = palette.expect("count >= 1");
        Ok(out
            .meta("prompt", params.prompt.trim())
            .meta("seed", params.seed)
            .meta("width", params.width)
            .meta("height", params.height)
            .meta("count", n)
            .meta("style", params.style)
            .meta("background", params.background)
            .meta(
                "background_color",
                if params.background == Background::Random { None } else { Some(hex(background)) },
            )
            .meta("palette", palette.hexes())
            .meta("palette_words", &palette.named)
            .meta("images", images))
    }
}

export_stage!(Generate);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: &str, seed: u64, style: Style, background: Background) -> Spec {
        Spec { prompt: prompt.into(), seed, width: 64, height: 48, background, color: None, style }
    }

    fn params(v: serde_json::Value) -> Result<Vec<Spec>, StageError> {
        let p: Params = serde_json::from_value(v).map_err(|e| StageError::invalid_input(e.to_string()))?;
        plan(&p)
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        for style in [Style::Product, Style::Logo] {
            for bg in [Background::White, Background::Random] {
                let a = render(&spec("a red perfume bottle", 7, style, bg)).image;
                let b = render(&spec("a red perfume bottle", 7, style, bg)).image;
                let c = render(&spec("a red perfume bottle", 8, style, bg)).image;
                assert_eq!(a.dimensions(), (64, 48));
                assert_eq!(a.as_raw(), b.as_raw(), "{style:?} {bg:?} same seed");
                assert_ne!(a.as_raw(), c.as_raw(), "{style:?} {bg:?} other seed");
            }
        }
    }

    #[test]
    fn product_on_white_has_white_corners_and_a_coloured_subject() {
        let r = render(&Spec { width: 96, height: 96, ..spec("a red gift box", 3, Style::Product, Background::White) });
        assert_eq!(r.subject, "gift box");
        for (x, y) in [(0, 0), (95, 0)] {
            assert_eq!(r.image.get_pixel(x, y).0, [255, 255, 255]);
        }
        // Somewhere there is a clearly red pixel (the box) and a grey one (its shadow).
        let red = r.image.pixels().filter(|p| p[0] > 120 && p[1] < 80 && p[2] < 90).count();
        assert!(red > 200, "red pixels: {red}");
        let shadow = r.image.pixels().filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] < 235 && p[0] > 80).count();
        assert!(shadow > 20, "shadow pixels: {shadow}");
    }

    #[test]
    fn plain_background_uses_the_colour() {
        let mut s = spec("blue ocean logo", 1, Style::Logo, Background::Plain);
        s.color = Some([10, 200, 30]);
        let r = render(&s);
        assert_eq!(r.image.get_pixel(0, 0).0, [10, 200, 30]);
        assert!(r.subject.starts_with("logo:"));
    }

    #[test]
    fn large_requests_are_resampled_to_the_exact_size() {
        let r = render(&Spec { width: 1400, height: 900, ..spec("green tea can", 0, Style::Logo, Background::White) });
        assert_eq!(r.image.dimensions(), (1400, 900));
    }

    #[test]
    fn bad_params_are_invalid_input() {
        assert!(matches!(params(json!({"prompt": "  "})), Err(StageError::InvalidInput(_))));
        assert!(matches!(params(json!({"prompt": "x", "width": 8})), Err(StageError::InvalidInput(_))));
        assert!(matches!(params(json!({"prompt": "x", "count": 0})), Err(StageError::InvalidInput(_))));
        assert!(matches!(params(json!({"prompt": "x", "color": "#ffffff"})), Err(StageError::InvalidInput(_))));
        assert!(matches!(
            params(json!({"prompt": "x", "background": "plain", "color": "red"})),
            Err(StageError::InvalidInput(_))
        ));
        assert!(matches!(params(json!({"prompt": "x", "colour": "#fff"})), Err(StageError::InvalidInput(_))));
        assert!(matches!(
            params(json!({"prompt": "x", "width": 4096, "height": 4096, "count": 16})),
            Err(StageError::InvalidInput(_))
        ));
        let Err(StageError::InvalidInput(m)) = params(json!({"prompt": "x", "background": "plain", "color": "#12345"}))
        else {
            panic!("a five-digit colour is refused")
        };
        assert!(m.starts_with("color \"#12345\" is not a hex colour"), "{m}");
        let specs = params(json!({"prompt": "x", "seed": 5, "count": 3})).unwrap();
        assert_eq!(specs.iter().map(|s| s.seed).collect::<Vec<_>>(), vec![5, 6, 7]);
    }

    #[test]
    fn color_takes_the_shared_grammar() {
        // Wider than before (`#rrggbb` or `rrggbb`): short forms are colours too.
        let color = |c: &str| params(json!({"prompt": "x", "background": "plain", "color": c})).unwrap()[0].color;
        assert_eq!(color("fff"), Some([255, 255, 255]));
        assert_eq!(color("#0aF"), Some([0x00, 0xaa, 0xff]));
        assert_eq!(color("f0e6d2"), Some([0xf0, 0xe6, 0xd2]));
        assert_eq!(color("#F0E6D2"), Some([0xf0, 0xe6, 0xd2]));
    }

    #[test]
    fn names_are_slugs() {
        assert_eq!(file_name("A Red Car!", 7, "png"), "a-red-car-7.png");
        assert_eq!(file_name("???", 1, "jpg"), "image-1.jpg");
    }

    #[test]
    fn schema_has_descriptions() {
        let schema = serde_json::to_value(schemars::schema_for!(Params)).unwrap();
        let props = &schema["properties"];
        for key in ["prompt", "seed", "width", "height", "background", "color", "style", "count", "format"] {
            assert!(props[key].is_object(), "{key} in schema");
        }
        assert!(props["prompt"]["description"].as_str().unwrap().contains("Colour words"));
        assert_eq!(props["width"]["maximum"], 4096);
    }

    /// Renders a contact sheet for eyeballing:
    /// `STAGECRAFT_SAMPLE_DIR=/tmp/x cargo test --release -p generate gallery -- --ignored`.
    #[test]
    #[ignore]
    fn gallery() {
        let dir = std::env::var("STAGECRAFT_SAMPLE_DIR").unwrap_or_else(|_| ".".into());
        let prompts = [
            "a red perfume bottle",
            "teal gift box",
            "gold ring",
            "purple gem",
            "a birthday cake",
            "orange soda can",
            "a blue planet",
            "quiet harbour",
        ];
        let (w, h) = (240u32, 180u32);
        let mut sheet = image::RgbImage::new(w * 4, h * prompts.len() as u32);
        for (i, p) in prompts.iter().enumerate() {
            let mut col = 0;
            for style in [Style::Product, Style::Logo] {
                for bg in [Background::White, Background::Random] {
                    let s = Spec {
                        prompt: p.to_string(),
                        seed: i as u64,
                        width: w,
                        height: h,
                        background: bg,
                        color: None,
                        style,
                    };
                    let r = render(&s);
                    image::imageops::replace(&mut sheet, &r.image, (col * w) as i64, (i as u32 * h) as i64);
                    col += 1;
                }
            }
        }
        let data = encode(&image::DynamicImage::ImageRgb8(sheet), Format::Png, 90).unwrap();
        std::fs::write(std::path::Path::new(&dir).join("sheet.png"), data).unwrap();
    }
}
