//! Hashing, a seeded RNG, colour-space helpers and the prompt palette.

/// 64-bit FNV-1a: a stable hash (unlike `std`'s, which may change between releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One SplitMix64 step: a good finaliser for combining hashes.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Small deterministic RNG (SplitMix64).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed ^ 0x5eed_5eed_5eed_5eed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }
}

/// Linear-light RGB.
pub type Lin = [f32; 3];

pub fn srgb_to_linear(c: u8) -> f32 {
    let c = c as f32 / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

pub fn linear_to_srgb(c: f32) -> f32 {
    let c = c.clamp(0.0, 1.0);
    if c <= 0.003_130_8 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

pub fn lin(rgb: [u8; 3]) -> Lin {
    [srgb_to_linear(rgb[0]), srgb_to_linear(rgb[1]), srgb_to_linear(rgb[2])]
}

pub fn to_u8(c: Lin) -> [u8; 3] {
    let f = |v: f32| (linear_to_srgb(v) * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
    [f(c[0]), f(c[1]), f(c[2])]
}

pub fn mixc(a: Lin, b: Lin, t: f32) -> Lin {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

pub fn scale(a: Lin, s: f32) -> Lin {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub fn add(a: Lin, b: Lin) -> Lin {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub fn mul(a: Lin, b: Lin) -> Lin {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}

// Hex colours in and out: the grammar all stages share.
pub use stagecraft_imaging::color::{hex, parse_hex};

/// HSL (h in degrees, s and l in 0..1) to sRGB bytes.
pub fn hsl(h: f32, s: f32, l: f32) -> [u8; 3] {
    let h = h.rem_euclid(360.0) / 360.0;
    let s = s.clamp(0.0, 1.0);
    let l = l.clamp(0.0, 1.0);
    let q = if l < 0.5 { l * (1.0 + s) } else { l + s - l * s };
    let p = 2.0 * l - q;
    let f = |t: f32| {
        let t = t.rem_euclid(1.0);
        let v = if t < 1.0 / 6.0 {
            p + (q - p) * 6.0 * t
        } else if t < 0.5 {
            q
        } else if t < 2.0 / 3.0 {
            p + (q - p) * (2.0 / 3.0 - t) * 6.0
        } else {
            p
        };
        (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8
    };
    [f(h + 1.0 / 3.0), f(h), f(h - 1.0 / 3.0)]
}

/// sRGB bytes to HSL (degrees, 0..1, 0..1).
pub fn to_hsl(rgb: [u8; 3]) -> (f32, f32, f32) {
    let r = rgb[0] as f32 / 255.0;
    let g = rgb[1] as f32 / 255.0;
    let b = rgb[2] as f32 / 255.0;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let l = (max + min) / 2.0;
    if max - min < 1e-6 {
        return (0.0, 0.0, l);
    }
    let d = max - min;
    let s = if l > 0.5 { d / (2.0 - max - min) } else { d / (max + min) };
    let h = if max == r {
        ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    };
    (h * 60.0, s, l)
}

/// Colour words (and a few moods) a prompt may name.
const WORDS: &[(&str, [u8; 3])] = &[
    ("red", [0xd7, 0x26, 0x38]),
    ("crimson", [0xb0, 0x15, 0x2c]),
    ("scarlet", [0xe8, 0x28, 0x1e]),
    ("maroon", [0x80, 0x1a, 0x2a]),
    ("burgundy", [0x80, 0x1f, 0x3a]),
    ("orange", [0xf2, 0x7a, 0x1a]),
    ("amber", [0xff, 0xb0, 0x20]),
    ("gold", [0xd9, 0xa4, 0x2b]),
    ("golden", [0xd9, 0xa4, 0x2b]),
    ("yellow", [0xf5, 0xd0, 0x2a]),
    ("lemon", [0xf2, 0xe2, 0x4b]),
    ("lime", [0x8c, 0xd1, 0x2e]),
    ("green", [0x2e, 0x9e, 0x4f]),
    ("emerald", [0x14, 0x9a, 0x6a]),
    ("mint", [0x8e, 0xe0, 0xb8]),
    ("olive", [0x7a, 0x80, 0x2e]),
    ("forest", [0x2a, 0x6b, 0x3a]),
    ("teal", [0x16, 0x8a, 0x8a]),
    ("turquoise", [0x2b, 0xc4, 0xbf]),
    ("cyan", [0x22, 0xc0, 0xd8]),
    ("aqua", [0x3c, 0xd0, 0xe0]),
    ("sky", [0x6c, 0xb4, 0xee]),
    ("ocean", [0x1a, 0x6f, 0xa8]),
    ("blue", [0x24, 0x5d, 0xd6]),
    ("cobalt", [0x1f, 0x4a, 0xb8]),
    ("navy", [0x1b, 0x2a, 0x5c]),
    ("indigo", [0x3f, 0x2d, 0x9c]),
    ("violet", [0x7b, 0x3f, 0xd0]),
    ("purple", [0x80, 0x30, 0xa8]),
    ("lavender", [0xb3, 0x9d, 0xe6]),
    ("plum", [0x7d, 0x32, 0x6e]),
    ("magenta", [0xd0, 0x2a, 0x9a]),
    ("pink", [0xf0, 0x7c, 0xb0]),
    ("rose", [0xe0, 0x5a, 0x7a]),
    ("coral", [0xf5, 0x72, 0x5c]),
    ("peach", [0xf7, 0xb0, 0x8a]),
    ("brown", [0x7a, 0x4a, 0x2a]),
    ("chocolate", [0x5c, 0x34, 0x1e]),
    ("coffee", [0x6f, 0x4a, 0x32]),
    ("tan", [0xc8, 0x9f, 0x70]),
    ("beige", [0xe0, 0xcf, 0xb0]),
    ("cream", [0xf3, 0xe8, 0xcf]),
    ("ivory", [0xf4, 0xef, 0xdf]),
    ("white", [0xf4, 0xf4, 0xf2]),
    ("silver", [0xb8, 0xbc, 0xc4]),
    ("grey", [0x80, 0x84, 0x8c]),
    ("gray", [0x80, 0x84, 0x8c]),
    ("charcoal", [0x36, 0x3a, 0x40]),
    ("black", [0x1c, 0x1c, 0x20]),
    ("copper", [0xb8, 0x6b, 0x3c]),
    ("bronze", [0x9c, 0x6e, 0x34]),
    ("fire", [0xe8, 0x4a, 0x1a]),
    ("ice", [0xa8, 0xe0, 0xf4]),
    ("sunset", [0xf0, 0x6a, 0x4a]),
    ("night", [0x1e, 0x26, 0x5a]),
    ("autumn", [0xc4, 0x5c, 0x1e]),
    ("candy", [0xf2, 0x6d, 0xb8]),
    ("wine", [0x72, 0x1c, 0x30]),
    ("cherry", [0xc8, 0x1a, 0x3a]),
    ("berry", [0x8e, 0x24, 0x6a]),
    ("lemonade", [0xf5, 0xe0, 0x6a]),
];

/// Lower-case alphanumeric words of a prompt.
pub fn words(prompt: &str) -> Vec<String> {
    prompt.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// The five colours an image is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    pub primary: [u8; 3],
    pub secondary: [u8; 3],
    pub accent: [u8; 3],
    pub light: [u8; 3],
    pub dark: [u8; 3],
    /// Colour words found in the prompt, in order.
    pub named: Vec<String>,
}

impl Palette {
    /// The palette of a prompt: colour words it names come first; the rest
    /// is derived from a hash of the prompt (a base hue and a harmony).
    /// Depends on the prompt only, so every seed of a prompt shares it.
    pub fn from_prompt(prompt: &str) -> Palette {
        let ws = words(prompt);
        let mut named: Vec<(String, [u8; 3])> = Vec::new();
        for w in &ws {
            let w2 = w.strip_suffix('s').filter(|s| s.len() > 2).unwrap_or(w);
            if let Some((name, c)) = WORDS.iter().find(|(n, _)| *n == w.as_str() || *n == w2) {
                if !named.iter().any(|(n, _)| n == name) {
                    named.push((name.to_string(), *c));
                }
            }
        }
        let h = fnv1a(prompt.trim().to_lowercase().as_bytes());
        let mut rng = Rng::new(h);
        let (base_h, base_s, base_l) = match named.first() {
            Some((_, c)) => to_hsl(*c),
            None => (rng.range(0.0, 360.0), rng.range(0.55, 0.8), rng.range(0.42, 0.55)),
        };
        // A harmony for the colours the prompt did not name.
        let offsets: [f32; 2] = match rng.below(4) {
            0 => [30.0, -30.0],  // analogous
            1 => [180.0, 150.0], // complementary
            2 => [120.0, 240.0], // triadic
            _ => [150.0, 210.0], // split complementary
        };
        let s = base_s.max(0.35);
        let secondary = match named.get(1) {
            Some((_, c)) => *c,
            None => hsl(base_h + offsets[0], (s * 0.9).min(0.85), 0.5 + rng.range(-0.08, 0.08)),
        };
        let accent = match named.get(2) {
            Some((_, c)) => *c,
            None => hsl(base_h + offsets[1], (s + 0.1).min(0.9), 0.55),
        };
        let primary = match named.first() {
            Some((_, c)) => *c,
            None => hsl(base_h, base_s, base_l),
        };
        let light = hsl(base_h, (base_s * 0.5).min(0.6), 0.9);
        let dark = hsl(base_h, (base_s * 0.5).min(0.5), (base_l * 0.35).clamp(0.08, 0.2));
        Palette { primary, secondary, accent, light, dark, named: named.into_iter().map(|(n, _)| n).collect() }
    }

    pub fn hexes(&self) -> Vec<String> {
        [self.primary, self.secondary, self.accent, self.light, self.dark].iter().map(|c| hex(*c)).collect()
    }
}

pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_words_lead_the_palette() {
        let p = Palette::from_prompt("A RED sports car with gold rims");
        assert_eq!(p.primary, [0xd7, 0x26, 0x38]);
        assert_eq!(p.secondary, [0xd9, 0xa4, 0x2b]);
        assert_eq!(p.named, vec!["red", "gold"]);
    }

    #[test]
    fn palette_is_stable_per_prompt() {
        assert_eq!(Palette::from_prompt("a quiet harbour"), Palette::from_prompt("a quiet harbour"));
        assert_ne!(Palette::from_prompt("a quiet harbour").primary, Palette::from_prompt("a loud market").primary);
    }
}
