//! Product shots: a small sphere-traced scene of signed distance functions.
//! One subject (orb, bottle, gift box, ring, stack, gem or can) stands on
//! an invisible ground plane that only receives its soft shadow and contact
//! occlusion, lit like a studio shot (key, fill, rim, softbox reflections).

use crate::color::{add, lin, mixc, mul, scale, smoothstep, Lin, Palette, Rng};
use crate::scene::{Backdrop, Mode};
use std::ops::{Add, Mul, Neg, Sub};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct V3 {
    pub x: f32,
    pub y: f32,
    pub z: f32,
}

pub const fn v3(x: f32, y: f32, z: f32) -> V3 {
    V3 { x, y, z }
}

impl Add for V3 {
    type Output = V3;
    fn add(self, o: V3) -> V3 {
        v3(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}
impl Sub for V3 {
    type Output = V3;
    fn sub(self, o: V3) -> V3 {
        v3(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}
impl Mul<f32> for V3 {
    type Output = V3;
    fn mul(self, s: f32) -> V3 {
        v3(self.x * s, self.y * s, self.z * s)
    }
}
impl Neg for V3 {
    type Output = V3;
    fn neg(self) -> V3 {
        v3(-self.x, -self.y, -self.z)
    }
}

impl V3 {
    pub fn dot(self, o: V3) -> f32 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    pub fn cross(self, o: V3) -> V3 {
        v3(self.y * o.z - self.z * o.y, self.z * o.x - self.x * o.z, self.x * o.y - self.y * o.x)
    }
    pub fn len(self) -> f32 {
        self.dot(self).sqrt()
    }
    pub fn norm(self) -> V3 {
        let l = self.len();
        if l > 0.0 {
            self * (1.0 / l)
        } else {
            self
        }
    }
    fn abs(self) -> V3 {
        v3(self.x.abs(), self.y.abs(), self.z.abs())
    }
    fn max0(self) -> V3 {
        v3(self.x.max(0.0), self.y.max(0.0), self.z.max(0.0))
    }
    fn rot_y(self, a: f32) -> V3 {
        let (s, c) = a.sin_cos();
        v3(c * self.x + s * self.z, self.y, -s * self.x + c * self.z)
    }
    fn rot_z(self, a: f32) -> V3 {
        let (s, c) = a.sin_cos();
        v3(c * self.x - s * self.y, s * self.x + c * self.y, self.z)
    }
}

// ---- signed distance primitives -------------------------------------------

fn sd_sphere(p: V3, r: f32) -> f32 {
    p.len() - r
}

fn sd_round_box(p: V3, b: V3, r: f32) -> f32 {
    let q = p.abs() - b + v3(r, r, r);
    q.max0().len() + q.x.max(q.y.max(q.z)).min(0.0) - r
}

/// Vertical cylinder of radius `r`, half-height `h`, edges rounded by `rr`.
fn sd_round_cyl(p: V3, r: f32, h: f32, rr: f32) -> f32 {
    let dx = (p.x * p.x + p.z * p.z).sqrt() - (r - rr);
    let dy = p.y.abs() - (h - rr);
    dx.max(dy).min(0.0) + (dx.max(0.0).powi(2) + dy.max(0.0).powi(2)).sqrt() - rr
}

/// Torus around the z axis (a ring standing up, facing the camera).
fn sd_torus_z(p: V3, big: f32, small: f32) -> f32 {
    let q = (p.x * p.x + p.y * p.y).sqrt() - big;
    (q * q + p.z * p.z).sqrt() - small
}

/// Torus around the y axis (lying flat).
fn sd_torus_y(p: V3, big: f32, small: f32) -> f32 {
    let q = (p.x * p.x + p.z * p.z).sqrt() - big;
    (q * q + p.y * p.y).sqrt() - small
}

/// Ellipsoid (approximate distance, good enough for sphere tracing).
fn sd_ellipsoid(p: V3, r: V3) -> f32 {
    let k0 = v3(p.x / r.x, p.y / r.y, p.z / r.z).len();
    let k1 = v3(p.x / (r.x * r.x), p.y / (r.y * r.y), p.z / (r.z * r.z)).len();
    if k1 == 0.0 {
        return -r.x.min(r.y).min(r.z);
    }
    k0 * (k0 - 1.0) / k1
}

/// Octahedron stretched vertically by `sy` (a bound, not exact).
fn sd_gem(p: V3, s: f32, sy: f32) -> f32 {
    let q = p.abs();
    (q.x + q.y / sy + q.z - s) * 0.577_35 * sy.min(1.0)
}

fn smin(a: f32, b: f32, k: f32) -> f32 {
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    b + (a - b) * h - k * h * (1.0 - h)
}

// ---- the subject ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Orb,
    Bottle,
    Gift,
    Ring,
    Stack,
    Gem,
    Can,
}

impl Kind {
    pub const ALL: [Kind; 7] = [Kind::Orb, Kind::Bottle, Kind::Gift, Kind::Ring, Kind::Stack, Kind::Gem, Kind::Can];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Orb => "orb",
            Kind::Bottle => "bottle",
            Kind::Gift => "gift box",
            Kind::Ring => "ring",
            Kind::Stack => "stack",
            Kind::Gem => "gem",
            Kind::Can => "can",
        }
    }

    /// A subject named by the prompt's words, if any.
    pub fn from_words(words: &[String]) -> Option<Kind> {
        const KEYS: &[(&[&str], Kind)] = &[
            (
                &["bottle", "perfume", "wine", "beer", "potion", "vase", "serum", "shampoo", "flask", "lotion", "oil"],
                Kind::Bottle,
            ),
            (&["ball", "sphere", "orb", "planet", "globe", "pearl", "bubble", "moon", "egg", "marble"], Kind::Orb),
            (&["box", "gift", "present", "package", "parcel", "crate", "cube", "block", "packaging"], Kind::Gift),
            (
                &[
                    "ring",
                    "donut",
                    "doughnut",
                    "wheel",
                    "tire",
                    "tyre",
                    "bagel",
                    "torus",
                    "halo",
                    "jewelry",
                    "jewellery",
                ],
                Kind::Ring,
            ),
            (
                &["cake", "stack", "tower", "macaron", "burger", "pancake", "pancakes", "coins", "tiers", "cosmetics"],
                Kind::Stack,
            ),
            (&["gem", "diamond", "crystal", "jewel", "ruby", "sapphire", "prism", "pyramid", "gemstone"], Kind::Gem),
            (
                &[
                    "can", "soda", "cup", "mug", "tin", "candle", "jar", "tube", "battery", "cylinder", "drink",
                    "coffee", "tea",
                ],
                Kind::Can,
            ),
        ];
        for w in words {
            let singular = w.strip_suffix('s').unwrap_or(w);
            for (keys, kind) in KEYS {
                if keys.iter().any(|k| *k == w.as_str() || *k == singular) {
                    return Some(*kind);
                }
            }
        }
        None
    }
}

#[derive(Clone, Copy)]
struct Material {
    albedo: Lin,
    metallic: bool,
    /// Blinn-Phong exponent.
    shine: f32,
    /// Strength of reflections at grazing angles (Fresnel F0 for dielectrics).
    f0: f32,
}

pub struct Subject {
    pub kind: Kind,
    pub height: f32,
    width: f32,
    rot: f32,
    a: f32,
    b: f32,
    planet_ring: bool,
    side: Option<(V3, f32)>,
    center: V3,
    bound: f32,
    mats: [Material; 5],
}

const BODY: u8 = 0;
const SECOND: u8 = 1;
const ACCENT: u8 = 2;
const METAL: u8 = 3;
const BASE: u8 = 4;

impl Subject {
    pub fn new(kind: Kind, palette: &Palette, rng: &mut Rng) -> Subject {
        let a = rng.range(0.0, 1.0);
        let b = rng.range(0.0, 1.0);
        let rot = rng.range(-0.6, 0.6);
        let (height, width) = match kind {
            Kind::Orb => (0.14 + 0.84 - 0.03, 0.84),
            Kind::Bottle => (1.1 + 0.2 * b, 0.5 + 0.16 * a),
            Kind::Gift => (0.66, 0.9),
            Kind::Ring => (0.12 + 0.72 + 0.17 + 0.12, 0.9),
            Kind::Stack => (0.66 + 0.1, 0.84),
            Kind::Gem => (0.1 + 0.9, 0.7),
            Kind::Can => (0.8 + 0.2 * b, 0.56),
        };
        let side = if rng.chance(0.55) {
            let r = rng.range(0.09, 0.15);
            let sx = if rng.chance(0.5) { 1.0 } else { -1.0 };
            Some((v3(sx * (width * 0.5 + r + rng.range(0.05, 0.15)), r, rng.range(0.15, 0.4)), r))
        } else {
            None
        };
        let center = v3(0.0, height * 0.5, 0.0);
        let mut bound = (v3(width * 0.5, height * 0.5, width * 0.5)).len() + 0.05;
        if kind == Kind::Orb {
            bound = bound.max(0.7);
        }
        if let Some((c, r)) = side {
            bound = bound.max((c - center).len() + r + 0.02);
        }
        // Metal takes the primary's hue, brightened: gold from a yellow prompt,
        // silver from a grey one.
        let metal = mixc(lin(palette.primary), [0.9, 0.88, 0.85], 0.2);
        let gloss = rng.range(0.0, 1.0);
        let mats = [
            Material {
                albedo: lin(palette.primary),
                metallic: false,
                shine: 40.0 + 200.0 * gloss,
                f0: 0.04 + 0.05 * gloss,
            },
            Material { albedo: lin(palette.secondary), metallic: false, shine: 30.0, f0: 0.03 },
            Material { albedo: lin(palette.accent), metallic: false, shine: 80.0, f0: 0.05 },
            Material { albedo: metal, metallic: true, shine: 120.0, f0: 0.8 },
            Material { albedo: scale(lin(palette.dark), 0.8), metallic: false, shine: 20.0, f0: 0.03 },
        ];
        let planet_ring = kind == Kind::Orb && rng.chance(0.45);
        Subject { kind, height, width, rot, a, b, planet_ring, side, center, bound, mats }
    }

    /// Distance to the subject and the id of the material there.
    fn map(&self, p: V3) -> (f32, u8) {
        let mut best = (f32::MAX, BODY);
        let mut put = |d: f32, m: u8| {
            if d < best.0 {
                best = (d, m);
            }
        };
        match self.kind {
            Kind::Orb => {
                put(sd_round_cyl(p - v3(0.0, 0.07, 0.0), 0.34, 0.07, 0.025), BASE);
                let c = v3(0.0, 0.14 + 0.42 - 0.03, 0.0);
                put(sd_sphere(p - c, 0.42), BODY);
                if self.planet_ring {
                    let q = (p - c).rot_z(0.35 + 0.2 * self.a).rot_y(self.rot);
                    put(sd_torus_y(q, 0.6, 0.022), ACCENT);
                }
            }
            Kind::Bottle => {
                let r = 0.25 + 0.08 * self.a;
                let body_h = 0.33 + 0.08 * self.b;
                let body = sd_round_cyl(p - v3(0.0, body_h, 0.0), r, body_h, 0.1);
                let neck_top = self.height - 0.2;
                let neck_c = (2.0 * body_h + neck_top) * 0.5;
                let neck = sd_round_cyl(p - v3(0.0, neck_c, 0.0), 0.085, (neck_top - 2.0 * body_h) * 0.5 + 0.06, 0.02);
                put(smin(body, neck, 0.12), BODY);
                let cap = sd_round_cyl(p - v3(0.0, neck_top + 0.09, 0.0), 0.1, 0.1, 0.02);
                put(cap, if self.a > 0.5 { METAL } else { ACCENT });
            }
            Kind::Gift => {
                let q = (p - v3(0.0, 0.28, 0.0)).rot_y(self.rot);
                put(sd_round_box(q, v3(0.36, 0.28, 0.36), 0.03), BODY);
                let bq = (p - v3(0.0, 0.58, 0.0)).rot_y(self.rot);
                let left = sd_ellipsoid(bq.rot_z(0.5) - v3(-0.1, 0.02, 0.0), v3(0.11, 0.05, 0.06));
                let right = sd_ellipsoid(bq.rot_z(-0.5) - v3(0.1, 0.02, 0.0), v3(0.11, 0.05, 0.06));
                let knot = sd_sphere(bq, 0.045);
                put(smin(smin(left, right, 0.03), knot, 0.03), ACCENT);
            }
            Kind::Ring => {
                put(sd_round_box(p - v3(0.0, 0.06, 0.0), v3(0.34, 0.06, 0.22), 0.02), BASE);
                let c = v3(0.0, 0.12 + 0.36 + 0.085 - 0.02, 0.0);
                let q = (p - c).rot_y(self.rot * 0.8);
                put(sd_torus_z(q, 0.36, 0.085), METAL);
                let top = c + v3(0.0, 0.36 + 0.085 + 0.05, 0.0);
                put(sd_gem(p - top, 0.09, 1.1), BODY);
            }
            Kind::Stack => {
                let radii = [0.42, 0.34, 0.25];
                let mut y = 0.0;
                for (i, r) in radii.iter().enumerate() {
                    let h = 0.11;
                    let m = if i % 2 == 0 { BODY } else { SECOND };
                    put(sd_round_cyl(p - v3(0.0, y + h, 0.0), *r, h, 0.045), m);
                    y += 2.0 * h + 0.005;
                }
                put(sd_sphere(p - v3(0.0, y + 0.07, 0.0), 0.08), ACCENT);
            }
            Kind::Gem => {
                put(sd_round_cyl(p - v3(0.0, 0.05, 0.0), 0.3, 0.05, 0.02), BASE);
                let q = (p - v3(0.0, 0.1 + 0.45, 0.0)).rot_y(self.rot + 0.4);
                put(sd_gem(q, 0.3, 1.5), BODY);
            }
            Kind::Can => {
                let h = self.height * 0.5;
                put(sd_round_cyl(p - v3(0.0, h, 0.0), 0.28, h, 0.035), BODY);
            }
        }
        if let Some((c, r)) = self.side {
            put(sd_sphere(p - c, r), ACCENT);
        }
        best
    }

    /// The material at a surface point; bands and ribbons are blended over
    /// `fw` world units so their edges are anti-aliased.
    fn material(&self, p: V3, id: u8, fw: f32) -> Material {
        let base = self.mats[id as usize];
        let band = |lo: f32, hi: f32, v: f32| smoothstep(lo - fw, lo + fw, v) * (1.0 - smoothstep(hi - fw, hi + fw, v));
        let blend = |a: Material, b: Material, t: f32| Material {
            albedo: mixc(a.albedo, b.albedo, t),
            metallic: if t > 0.5 { b.metallic } else { a.metallic },
            shine: a.shine + (b.shine - a.shine) * t,
            f0: a.f0 + (b.f0 - a.f0) * t,
        };
        match (self.kind, id) {
            (Kind::Bottle, BODY) => {
                let body_h = 0.33 + 0.08 * self.b;
                let t = band(body_h * 0.55, body_h * 1.35, p.y);
                blend(base, self.mats[SECOND as usize], t)
            }
            (Kind::Can, BODY) => {
                let top = self.height;
                let rim = 1.0 - band(0.06, top - 0.06, p.y);
                let stripe = band(top * 0.38, top * 0.52, p.y);
                let m = blend(base, self.mats[SECOND as usize], stripe);
                blend(m, self.mats[METAL as usize], rim)
            }
            (Kind::Gift, BODY) => {
                let q = (p - v3(0.0, 0.28, 0.0)).rot_y(self.rot);
                let w = 0.055;
                let t = band(-w, w, q.x).max(band(-w, w, q.z));
                blend(base, self.mats[ACCENT as usize], t)
            }
            _ => base,
        }
    }

    fn normal(&self, p: V3) -> V3 {
        let e = 0.0007;
        let k = |o: V3| self.map(p + o).0;
        let a = v3(1.0, -1.0, -1.0);
        let b = v3(-1.0, -1.0, 1.0);
        let c = v3(-1.0, 1.0, -1.0);
        let d = v3(1.0, 1.0, 1.0);
        (a * k(a * e) + b * k(b * e) + c * k(c * e) + d * k(d * e)).norm()
    }

    fn soft_shadow(&self, ro: V3, rd: V3, k: f32) -> f32 {
        if !hits_sphere(ro, rd, self.center, self.bound) {
            return 1.0;
        }
        let mut res: f32 = 1.0;
        let mut t = 0.01;
        for _ in 0..48 {
            let h = self.map(ro + rd * t).0;
            res = res.min(k * h / t);
            if res < 0.002 || t > 4.0 {
                break;
            }
            t += h.clamp(0.01, 0.25);
        }
        let r = res.clamp(0.0, 1.0);
        r * r * (3.0 - 2.0 * r)
    }

    fn occlusion(&self, p: V3, n: V3, reach: f32) -> f32 {
        if (p - self.center).len() > self.bound + reach {
            return 1.0;
        }
        let mut occ = 0.0;
        let mut w = 1.0;
        for i in 0..5 {
            let h = 0.01 + reach * i as f32 / 4.0;
            let d = self.map(p + n * h).0;
            occ += (h - d).max(0.0) * w;
            w *= 0.85;
        }
        (1.0 - 2.2 * occ / reach.max(0.1)).clamp(0.0, 1.0)
    }
}

fn hits_sphere(ro: V3, rd: V3, c: V3, r: f32) -> bool {
    sphere_span(ro, rd, c, r).is_some()
}

/// Entry and exit distances of a ray through a sphere.
fn sphere_span(ro: V3, rd: V3, c: V3, r: f32) -> Option<(f32, f32)> {
    let oc = ro - c;
    let b = oc.dot(rd);
    let cc = oc.dot(oc) - r * r;
    let disc = b * b - cc;
    if disc < 0.0 {
        return None;
    }
    let s = disc.sqrt();
    let (t0, t1) = (-b - s, -b + s);
    if t1 < 0.0 {
        None
    } else {
        Some((t0.max(0.0), t1))
    }
}

fn reflect(i: V3, n: V3) -> V3 {
    i - n * (2.0 * i.dot(n))
}

fn aces(x: f32) -> f32 {
    ((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14)).clamp(0.0, 1.0)
}

/// Camera and lights of one shot.
pub struct Shot<'a> {
    pub subject: Subject,
    backdrop: &'a Backdrop,
    eye: V3,
    fwd: V3,
    right: V3,
    up: V3,
    tan_half: f32,
    key: V3,
    key_color: Lin,
    fill: V3,
    rim: V3,
    softbox: V3,
    ground_tint: Lin,
}

impl<'a> Shot<'a> {
    pub fn new(subject: Subject, backdrop: &'a Backdrop, rng: &mut Rng) -> Shot<'a> {
        let fov: f32 = 30f32.to_radians();
        let tan_half = (fov * 0.5).tan();
        let elevation = rng.range(10.0, 22.0f32).to_radians();
        let azimuth = rng.range(-30.0, 30.0f32).to_radians();
        let target = v3(0.0, subject.height * 0.46, 0.0);
        // Fill about 62% of the shorter side with the subject.
        let extent = subject
            .height
            .max(subject.width * 0.95)
            .max(subject.side.map_or(0.0, |(c, r)| 2.0 * (c.x.abs() + r) * 0.8));
        let dist = extent * 0.5 / (0.62 * tan_half) + 0.5;
        let dir = v3(azimuth.sin() * elevation.cos(), elevation.sin(), azimuth.cos() * elevation.cos());
        let eye = target + dir * dist;
        let fwd = (target - eye).norm();
        let right = fwd.cross(v3(0.0, 1.0, 0.0)).norm();
        let up = right.cross(fwd);
        // Key light from the sun's side in a scene, else from either side.
        let side = match backdrop.mode {
            Mode::Scene => {
                if backdrop.sun.0 < 0.5 {
                    -1.0
                } else {
                    1.0
                }
            }
            Mode::Flat => {
                if rng.chance(0.5) {
                    -1.0
                } else {
                    1.0
                }
            }
        };
        let key = v3(side * 0.65, 0.85, 0.55).norm();
        let fill = v3(-side * 0.8, 0.3, 0.6).norm();
        let rim = v3(-side * 0.3, 0.5, -1.0).norm();
        let softbox = v3(side * 0.5, 0.7, 0.5).norm();
        let key_color = match backdrop.mode {
            Mode::Scene => scale(backdrop.sun_color(), 2.4),
            Mode::Flat => [2.5, 2.42, 2.3],
        };
        let ground_tint = backdrop.at(0.0, 1.0e9);
        Shot { subject, backdrop, eye, fwd, right, up, tan_half, key, key_color, fill, rim, softbox, ground_tint }
    }

    fn environment(&self, r: V3) -> Lin {
        match self.backdrop.mode {
            Mode::Flat => {
                let base = 0.12 + 0.55 * smoothstep(-0.2, 0.7, r.y);
                let bx = smoothstep(0.80, 0.90, r.dot(self.softbox)) * 2.2;
                let strip = smoothstep(0.93, 0.97, r.dot(v3(-self.softbox.x, 0.2, 0.4).norm())) * 1.2;
                let v = base + bx + strip;
                [v, v, v * 0.98]
            }
            Mode::Scene => {
                let sky = self.backdrop.sky(r.y * 1.5);
                let below = mixc(self.ground_tint, sky, 0.3);
                let c = mixc(below, sky, smoothstep(-0.1, 0.1, r.y));
                let sun = smoothstep(0.96, 0.995, r.dot(self.key)) * 4.0;
                add(c, scale(self.backdrop.sun_color(), sun))
            }
        }
    }

    fn shade(&self, p: V3, rd: V3, fw: f32) -> Lin {
        let s = &self.subject;
        let (_, id) = s.map(p);
        let m = s.material(p, id, fw);
        let n = s.normal(p);
        let v = -rd;
        let ndv = n.dot(v).max(0.0);
        let sh = s.soft_shadow(p + n * 0.003, self.key, 10.0);
        let ao = s.occlusion(p, n, 0.12);
        let diff = n.dot(self.key).max(0.0) * sh;
        let fill = n.dot(self.fill).max(0.0) * 0.35;
        let rim = n.dot(self.rim).max(0.0) * (1.0 - ndv).powi(2) * 0.9;
        let sky = self.environment(v3(n.x, n.y.max(0.0) + 0.2, n.z));
        let ambient = scale(mixc(self.ground_tint, sky, 0.5 + 0.5 * n.y), 0.35 * ao);
        let light = add(add(scale(self.key_color, diff), [fill, fill, fill * 1.05]), add(ambient, [rim, rim, rim]));
        let h = (self.key + v).norm();
        let spec = n.dot(h).max(0.0).powf(m.shine) * sh * (m.shine + 8.0) / 60.0;
        let env = scale(self.environment(reflect(rd, n)), ao);
        if m.metallic {
            // Conductors tint their reflections; only grazing angles go white.
            let f = (1.0 - ndv).powi(5);
            let refl = mul(env, mixc(m.albedo, [1.0, 1.0, 1.0], f));
            add(add(scale(mul(m.albedo, light), 0.25), refl), scale(mul(self.key_color, m.albedo), spec * 0.6))
        } else {
            let f = m.f0 + (1.0 - m.f0) * (1.0 - ndv).powi(5);
            let diffuse = mul(m.albedo, light);
            add(mixc(diffuse, env, f), scale(self.key_color, spec * 0.5 * (m.f0 * 10.0).min(1.0)))
        }
    }

    /// Colour (linear light, tone mapped) of the pixel at normalised
    /// screen coordinates (`sx` right, `sy` up; the shorter side spans -1..1),
    /// over `bg`. `pix` is the size of one pixel in those units.
    pub fn pixel(&self, sx: f32, sy: f32, pix: f32, bg: Lin) -> Lin {
        let s = &self.subject;
        let rd = (self.fwd + self.right * (sx * self.tan_half) + self.up * (sy * self.tan_half)).norm();
        let ro = self.eye;
        let ang = pix * self.tan_half; // radians per pixel, near the axis
                                       // The ground: soft shadow of the key light and contact occlusion.
        let mut backdrop = bg;
        if rd.y < 0.0 {
            let t = -ro.y / rd.y;
            let g = ro + rd * t;
            let up = v3(0.0, 1.0, 0.0);
            let sh = s.soft_shadow(g + up * 0.002, self.key, 5.0);
            let ao = s.occlusion(g, up, 0.35);
            let strength = if self.backdrop.mode == Mode::Scene { 0.55 } else { 0.45 };
            let f = (1.0 - strength * (1.0 - sh)) * (0.45 + 0.55 * ao);
            backdrop = scale(backdrop, f);
        }
        let Some((t0, t1)) = sphere_span(ro, rd, s.center, s.bound) else {
            return backdrop;
        };
        let step = if matches!(s.kind, Kind::Gem | Kind::Ring) { 0.8 } else { 1.0 };
        let mut t = t0;
        let mut closest = f32::MAX;
        let mut t_closest = t0;
        let mut hit = false;
        for _ in 0..160 {
            let d = s.map(ro + rd * t).0;
            let px = d / (ang * t);
            if px < closest {
                closest = px;
                t_closest = t;
            }
            if d < 0.02 * ang * t {
                hit = true;
                break;
            }
            t += d * step;
            if t > t1 {
                break;
            }
        }
        let (cover, t_at) = if hit { (1.0, t) } else { (1.0 - smoothstep(0.0, 1.0, closest), t_closest) };
        if cover <= 0.0 {
            return backdrop;
        }
        let c = self.shade(ro + rd * t_at, rd, ang * t_at * 1.5);
        let c = [aces(c[0] * 0.9), aces(c[1] * 0.9), aces(c[2] * 0.9)];
        mixc(backdrop, c, cover)
    }
}
