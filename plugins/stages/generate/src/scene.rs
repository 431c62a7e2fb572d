//! Backgrounds: flat white, a plain colour, or a painted "random scene"
//! (gradient sky, sun glow, layered hills with atmospheric haze, bokeh).

use crate::color::{add, lin, mix, mixc, scale, smoothstep, Lin, Palette, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Flat,
    Scene,
}

struct Bokeh {
    x: f32,
    y: f32,
    r: f32,
    color: Lin,
    alpha: f32,
}

struct Hill {
    base: f32,
    amp: f32,
    freq: f32,
    seed: u64,
    color: Lin,
}

/// A background, evaluated per pixel in linear light. Coordinates are in
/// output pixels; everything scales with the image's smaller side.
pub struct Backdrop {
    pub mode: Mode,
    flat: Lin,
    w: f32,
    h: f32,
    unit: f32,
    sky_top: Lin,
    sky_horizon: Lin,
    /// Horizon, as a fraction of the height from the top.
    horizon: f32,
    pub sun: (f32, f32),
    sun_color: Lin,
    hills: Vec<Hill>,
    ground: Lin,
    bokeh: Vec<Bokeh>,
    dither_seed: u64,
}

impl Backdrop {
    pub fn flat(color: [u8; 3]) -> Backdrop {
        Backdrop {
            mode: Mode::Flat,
            flat: lin(color),
            w: 1.0,
            h: 1.0,
            unit: 1.0,
            sky_top: lin(color),
            sky_horizon: lin(color),
            horizon: 0.6,
            sun: (0.3, 0.2),
            sun_color: [1.0, 1.0, 1.0],
            hills: vec![],
            ground: lin(color),
            bokeh: vec![],
            dither_seed: 0,
        }
    }

    pub fn scene(w: u32, h: u32, palette: &Palette, rng: &mut Rng) -> Backdrop {
        let (wf, hf) = (w as f32, h as f32);
        let unit = wf.min(hf);
        // Time of day: sky top, horizon glow, sun colour.
        let presets: [(Lin, Lin, Lin); 4] = [
            ([0.10, 0.28, 0.75], [0.62, 0.76, 0.92], [1.0, 0.95, 0.85]), // day
            ([0.16, 0.22, 0.55], [1.00, 0.62, 0.30], [1.0, 0.78, 0.45]), // golden hour
            ([0.05, 0.04, 0.18], [0.90, 0.30, 0.28], [1.0, 0.55, 0.40]), // dusk
            ([0.01, 0.015, 0.05], [0.08, 0.10, 0.25], [0.85, 0.90, 1.0]), // night
        ];
        let (top, horizon_c, sun_color) = presets[rng.below(presets.len())];
        let tint = lin(palette.primary);
        let sky_top = mixc(top, tint, 0.12);
        let sky_horizon = mixc(horizon_c, lin(palette.light), 0.15);
        let horizon = rng.range(0.52, 0.62);
        let sun = (rng.range(0.15, 0.85), rng.range(0.12, 0.32));

        let mut hills = Vec::new();
        let far = mixc(lin(palette.secondary), lin(palette.dark), 0.3);
        let near = mixc(lin(palette.dark), lin(palette.secondary), 0.25);
        for i in 0..3 {
            let t = i as f32 / 2.0;
            // Far layers fade into the haze of the horizon.
            let color = mixc(mixc(far, near, t), sky_horizon, 0.55 * (1.0 - t));
            hills.push(Hill {
                base: horizon + 0.02 + 0.07 * i as f32,
                amp: 0.09 - 0.02 * i as f32,
                freq: 2.0 + 1.5 * i as f32 + rng.range(0.0, 1.0),
                seed: rng.next_u64(),
                color,
            });
        }
        let ground = mixc(near, [0.0, 0.0, 0.0], 0.35);

        let bokeh_colors = [lin(palette.light), lin(palette.accent), sun_color, lin(palette.secondary)];
        let n = 14 + rng.below(14);
        let bokeh = (0..n)
            .map(|_| {
                let color = bokeh_colors[rng.below(bokeh_colors.len())];
                Bokeh {
                    x: rng.range(-0.05, 1.05) * wf,
                    y: rng.range(0.0, horizon + 0.1) * hf,
                    r: rng.range(0.02, 0.09) * unit,
                    color,
                    alpha: rng.range(0.10, 0.32),
                }
            })
            .collect();
        Backdrop {
            mode: Mode::Scene,
            flat: sky_horizon,
            w: wf,
            h: hf,
            unit,
            sky_top,
            sky_horizon,
            horizon,
            sun,
            sun_color,
            hills,
            ground,
            bokeh,
            dither_seed: rng.next_u64(),
        }
    }

    /// Average colour of the environment above the horizon, for reflections.
    pub fn sky(&self, up: f32) -> Lin {
        match self.mode {
            Mode::Flat => [1.0, 1.0, 1.0],
            Mode::Scene => mixc(self.sky_horizon, self.sky_top, up.clamp(0.0, 1.0)),
        }
    }

    pub fn sun_color(&self) -> Lin {
        self.sun_color
    }

    /// Linear colour of the background at pixel centre (x, y).
    pub fn at(&self, x: f32, y: f32) -> Lin {
        if self.mode == Mode::Flat {
            return self.flat;
        }
        let v = y / self.h;
        let u = x / self.w;
        // Sky: gradient from the top to the horizon glow.
        let t = smoothstep(0.0, self.horizon, v).powf(1.6);
        let mut c = mixc(self.sky_top, self.sky_horizon, t);
        // Sun disc and glow.
        let dx = (u - self.sun.0) * self.w / self.unit;
        let dy = (v - self.sun.1) * self.h / self.unit;
        let d = (dx * dx + dy * dy).sqrt();
        let disc = 1.0 - smoothstep(0.045, 0.05, d);
        let glow = (-d * 6.0).exp() * 0.55 + (-d * 18.0).exp() * 0.5;
        c = add(c, scale(self.sun_color, glow));
        c = mixc(c, add(self.sun_color, [0.3, 0.3, 0.3]), disc);
        // Bokeh: soft discs with a brighter rim, added over the sky.
        for b in &self.bokeh {
            let d = ((x - b.x).powi(2) + (y - b.y).powi(2)).sqrt() / b.r;
            if d < 1.05 {
                let body = 1.0 - smoothstep(0.92, 1.0, d);
                let rim = smoothstep(0.75, 0.97, d) * body;
                c = add(c, scale(b.color, b.alpha * (0.6 * body + 0.5 * rim)));
            }
        }
        // Hills, far to near; each hides what is behind it.
        for hill in &self.hills {
            let ridge = hill.base - hill.amp * fbm1(u * hill.freq, hill.seed);
            let edge = 1.0 / self.h;
            let cover = smoothstep(ridge - edge, ridge + edge, v);
            if cover > 0.0 {
                // Slightly darker towards the bottom of each layer.
                let shade = 1.0 - 0.25 * smoothstep(ridge, ridge + 0.25, v);
                c = mixc(c, scale(hill.color, shade), cover);
            }
        }
        let g = smoothstep(0.9, 1.0, v);
        c = mixc(c, self.ground, g * 0.5);
        c
    }

    /// Whether to dither the 8-bit output (smooth gradients band otherwise);
    /// flat backgrounds stay exactly flat.
    pub fn dither(&self, x: u32, y: u32) -> f32 {
        if self.mode == Mode::Flat {
            return 0.0;
        }
        let h = mix(self.dither_seed ^ ((y as u64) << 32 | x as u64));
        let a = (h & 0xffff) as f32 / 65535.0;
        let b = ((h >> 16) & 0xffff) as f32 / 65535.0;
        a + b - 1.0 // triangular in [-1, 1] (in 8-bit steps)
    }
}

/// 1D fractal value noise in about [0, 1].
pub fn fbm1(x: f32, seed: u64) -> f32 {
    let mut sum = 0.0;
    let mut amp = 0.5;
    let mut freq = 1.0;
    let mut norm = 0.0;
    for o in 0..5u64 {
        sum += amp * value1(x * freq, seed.wrapping_add(o.wrapping_mul(0x9e37)));
        norm += amp;
        amp *= 0.5;
        freq *= 2.1;
    }
    sum / norm
}

fn value1(x: f32, seed: u64) -> f32 {
    let i = x.floor();
    let f = x - i;
    let h = |k: i64| (mix(seed ^ (k as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)) >> 40) as f32 / (1u64 << 24) as f32;
    let a = h(i as i64);
    let b = h(i as i64 + 1);
    let t = f * f * (3.0 - 2.0 * f);
    a + (b - a) * t
}
