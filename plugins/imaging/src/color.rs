//! Colour conversions: sRGB (8-bit, gamma encoded) to and from linear light,
//! CIE L*a*b* (D65) and OKLab.
//!
//! Conversions run in `f64` and use only IEEE arithmetic plus `powf`/`cbrt`
//! on values that are then rounded to `f32`, so the results agree between a
//! native build and the WebAssembly build of the same code in practice.

use std::sync::OnceLock;

/// Which perceptual space distances are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColorSpace {
    /// OKLab (Ottosson 2020): perceptually uniform, hue-linear; the default.
    #[default]
    Oklab,
    /// CIE L*a*b* with the D65 white point (ΔE*76 distances).
    Lab,
}

/// sRGB transfer function, decoding: 8-bit code value -> linear light in 0..=1.
pub fn srgb_to_linear_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut lut = [0f32; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = srgb_decode(i as f64 / 255.0) as f32;
        }
        lut
    })
}

fn srgb_decode(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn srgb_encode(l: f64) -> f64 {
    let l = l.clamp(0.0, 1.0);
    if l <= 0.003_130_8 {
        l * 12.92
    } else {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    }
}

/// Linear light (any range; clamped) -> 8-bit sRGB.
pub fn linear_to_srgb8(rgb: [f64; 3]) -> [u8; 3] {
    rgb.map(|c| (srgb_encode(c) * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// 8-bit sRGB -> linear light.
pub fn srgb8_to_linear(rgb: [u8; 3]) -> [f64; 3] {
    let lut = srgb_to_linear_lut();
    rgb.map(|c| lut[c as usize] as f64)
}

const D65: [f64; 3] = [0.950_47, 1.0, 1.088_83];
const EPS: f64 = 216.0 / 24389.0; // (6/29)^3
const KAPPA_INV: f64 = 108.0 / 841.0; // 3 * (6/29)^2

fn lab_f(t: f64) -> f64 {
    if t > EPS {
        t.cbrt()
    } else {
        t / KAPPA_INV + 4.0 / 29.0
    }
}

fn lab_f_inv(t: f64) -> f64 {
    if t > 6.0 / 29.0 {
        t * t * t
    } else {
        KAPPA_INV * (t - 4.0 / 29.0)
    }
}

/// Linear sRGB -> CIE L*a*b* (D65). L in 0..=100.
pub fn linear_to_lab([r, g, b]: [f64; 3]) -> [f64; 3] {
    let x = 0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b;
    let z = 0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b;
    let (fx, fy, fz) = (lab_f(x / D65[0]), lab_f(y / D65[1]), lab_f(z / D65[2]));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// CIE L*a*b* (D65) -> linear sRGB (may fall outside 0..=1 for out-of-gamut colours).
pub fn lab_to_linear([l, a, b]: [f64; 3]) -> [f64; 3] {
    let fy = (l + 16.0) / 116.0;
    let fx = fy + a / 500.0;
    let fz = fy - b / 200.0;
    let (x, y, z) = (lab_f_inv(fx) * D65[0], lab_f_inv(fy) * D65[1], lab_f_inv(fz) * D65[2]);
    [
        3.240_454_2 * x - 1.537_138_5 * y - 0.498_531_4 * z,
        -0.969_266_0 * x + 1.876_010_8 * y + 0.041_556_0 * z,
        0.055_643_4 * x - 0.204_025_9 * y + 1.057_225_2 * z,
    ]
}

/// Linear sRGB -> OKLab. L in 0..=1.
pub fn linear_to_oklab([r, g, b]: [f64; 3]) -> [f64; 3] {
    let l = 0.412_221_470_8 * r + 0.536_332_536_3 * g + 0.051_445_992_9 * b;
    let m = 0.211_903_498_2 * r + 0.680_699_545_1 * g + 0.107_396_956_6 * b;
    let s = 0.088_302_461_9 * r + 0.281_718_837_6 * g + 0.629_978_700_5 * b;
    let (l, m, s) = (l.cbrt(), m.cbrt(), s.cbrt());
    [
        0.210_454_255_3 * l + 0.793_617_785_0 * m - 0.004_072_046_8 * s,
        1.977_998_495_1 * l - 2.428_592_205_0 * m + 0.450_593_709_9 * s,
        0.025_904_037_1 * l + 0.782_771_766_2 * m - 0.808_675_766_0 * s,
    ]
}

/// OKLab -> linear sRGB.
pub fn oklab_to_linear([l, a, b]: [f64; 3]) -> [f64; 3] {
    let l_ = l + 0.396_337_777_4 * a + 0.215_803_757_3 * b;
    let m_ = l - 0.105_561_345_8 * a - 0.063_854_172_8 * b;
    let s_ = l - 0.089_484_177_5 * a - 1.291_485_548_0 * b;
    let (l, m, s) = (l_ * l_ * l_, m_ * m_ * m_, s_ * s_ * s_);
    [
        4.076_741_662_1 * l - 3.307_711_591_3 * m + 0.230_969_929_2 * s,
        -1.268_438_004_6 * l + 2.609_757_401_1 * m - 0.341_319_396_5 * s,
        -0.004_196_086_3 * l - 0.703_418_614_7 * m + 1.707_614_701_0 * s,
    ]
}

/// 8-bit sRGB -> CIE L*a*b*.
pub fn srgb8_to_lab(rgb: [u8; 3]) -> [f32; 3] {
    linear_to_lab(srgb8_to_linear(rgb)).map(|v| v as f32)
}

/// 8-bit sRGB -> OKLab.
pub fn srgb8_to_oklab(rgb: [u8; 3]) -> [f32; 3] {
    linear_to_oklab(srgb8_to_linear(rgb)).map(|v| v as f32)
}

impl ColorSpace {
    /// Coordinates of a linear-light colour in this space, scaled so that
    /// one unit is roughly one just-noticeable difference in both spaces
    /// (OKLab is multiplied by 100).
    pub fn from_linear(self, linear: [f64; 3]) -> [f32; 3] {
        match self {
            ColorSpace::Lab => linear_to_lab(linear).map(|v| v as f32),
            ColorSpace::Oklab => linear_to_oklab(linear).map(|v| (v * 100.0) as f32),
        }
    }

    /// Inverse of [`ColorSpace::from_linear`], rounded to 8-bit sRGB.
    pub fn to_srgb8(self, p: [f32; 3]) -> [u8; 3] {
        let p = p.map(|v| v as f64);
        let linear = match self {
            ColorSpace::Lab => lab_to_linear(p),
            ColorSpace::Oklab => oklab_to_linear(p.map(|v| v / 100.0)),
        };
        linear_to_srgb8(linear)
    }

    pub fn name(self) -> &'static str {
        match self {
            ColorSpace::Oklab => "oklab",
            ColorSpace::Lab => "lab",
        }
    }
}

/// `#rrggbb`, lower case: how stages write colours back.
pub fn hex(rgb: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}

/// The colour grammar every stage accepts, as its params' docs and error
/// messages spell it.
pub const HEX_GRAMMAR: &str = "#rgb or #rrggbb (hex digits in either case, the # optional)";

/// Parses a colour in the one grammar all stages share: `#rgb` or `#rrggbb`,
/// hex digits in either case, the `#` optional, surrounding whitespace
/// ignored. `#rgb` doubles each digit, as CSS does: `fff` is `#ffffff`.
pub fn parse_hex(s: &str) -> Option<[u8; 3]> {
    match channels(s)?[..] {
        [r, g, b] => Some([r, g, b]),
        _ => None,
    }
}

/// [`parse_hex`] with an optional alpha channel: also `#rgba` and
/// `#rrggbbaa` (alpha 255 when absent), for the params that take
/// translucent colours.
pub fn parse_hex_alpha(s: &str) -> Option<[u8; 4]> {
    match channels(s)?[..] {
        [r, g, b] => Some([r, g, b, 255]),
        [r, g, b, a] => Some([r, g, b, a]),
        _ => None,
    }
}

/// The error message for a colour param that does not parse, naming the
/// param so the caller can find it: `background "white" is not a hex
/// colour: use #rgb or #rrggbb (...)`.
pub fn hex_error(param: &str, value: &str) -> String {
    format!("{param} {value:?} is not a hex colour: use {HEX_GRAMMAR}")
}

/// The channels of a 3, 4, 6 or 8 digit hex colour (one optional `#`).
fn channels(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let h = s.strip_prefix('#').unwrap_or(s);
    let digits: Vec<u8> = h.chars().map(|c| c.to_digit(16).map(|d| d as u8)).collect::<Option<_>>()?;
    match digits.len() {
        3 | 4 => Some(digits.iter().map(|d| d * 17).collect()),
        6 | 8 => Some(digits.chunks(2).map(|p| p[0] * 16 + p[1]).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_known_colours() {
        let white = srgb8_to_lab([255, 255, 255]);
        assert!((white[0] - 100.0).abs() < 0.01 && white[1].abs() < 0.01 && white[2].abs() < 0.01, "{white:?}");
        let red = srgb8_to_lab([255, 0, 0]);
        // Reference: L 53.24, a 80.09, b 67.20.
        assert!(
            (red[0] - 53.24).abs() < 0.05 && (red[1] - 80.09).abs() < 0.1 && (red[2] - 67.20).abs() < 0.1,
            "{red:?}"
        );
        let ok = srgb8_to_oklab([255, 0, 0]);
        // Reference: 0.6279, 0.2249, 0.1258.
        assert!(
            (ok[0] - 0.6279).abs() < 0.001 && (ok[1] - 0.2249).abs() < 0.001 && (ok[2] - 0.1258).abs() < 0.001,
            "{ok:?}"
        );
    }

    #[test]
    fn round_trips() {
        for rgb in [[0u8, 0, 0], [255, 255, 255], [12, 200, 99], [200, 30, 180], [128, 128, 128]] {
            for space in [ColorSpace::Lab, ColorSpace::Oklab] {
                let p = space.from_linear(srgb8_to_linear(rgb));
                assert_eq!(space.to_srgb8(p), rgb, "{space:?} {rgb:?}");
            }
        }
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("#1f4E9a"), Some([0x1f, 0x4e, 0x9a]));
        assert_eq!(parse_hex("1F4E9A"), Some([0x1f, 0x4e, 0x9a]));
        assert_eq!(parse_hex("fff"), Some([255, 255, 255]));
        assert_eq!(parse_hex("#Fa0"), Some([0xff, 0xaa, 0x00]));
        assert_eq!(parse_hex(" #000000 "), Some([0, 0, 0]));
        for bad in ["", "#", "#12345", "#zzzzzz", "##fff", "# fff", "white", "#ffff", "#ffffff00", "+fffff"] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
        assert_eq!(hex([0x1f, 0x4e, 0x9a]), "#1f4e9a");
    }

    #[test]
    fn hex_parsing_with_alpha() {
        assert_eq!(parse_hex_alpha("#00000080"), Some([0, 0, 0, 0x80]));
        assert_eq!(parse_hex_alpha("fff8"), Some([255, 255, 255, 0x88]));
        assert_eq!(parse_hex_alpha("#1f4e9a"), Some([0x1f, 0x4e, 0x9a, 255]));
        assert_eq!(parse_hex_alpha("abc"), Some([0xaa, 0xbb, 0xcc, 255]));
        for bad in ["", "auto", "#12345", "#1234567", "#123456789"] {
            assert_eq!(parse_hex_alpha(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_errors_name_the_param_and_the_grammar() {
        let m = hex_error("background", "white");
        assert!(m.starts_with("background \"white\" is not a hex colour"), "{m}");
        assert!(m.contains("#rgb or #rrggbb"), "{m}");
    }
}
