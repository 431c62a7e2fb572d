//! Logo marks: a flat badge (circle, rounded square, hexagon, diamond or
//! shield) holding an emblem (a monogram of the prompt's initials in a
//! monoline stroke font, a star, peaks under a sun, rings, chevrons, a leaf
//! or a bolt), drawn with anti-aliased 2D signed distance functions.

use crate::color::{smoothstep, words, Rng};

#[derive(Clone, Copy, Debug, PartialEq)]
struct P2 {
    x: f32,
    y: f32,
}

const fn p2(x: f32, y: f32) -> P2 {
    P2 { x, y }
}

impl P2 {
    fn sub(self, o: P2) -> P2 {
        p2(self.x - o.x, self.y - o.y)
    }
    fn dot(self, o: P2) -> f32 {
        self.x * o.x + self.y * o.y
    }
    fn len(self) -> f32 {
        self.dot(self).sqrt()
    }
    fn rot(self, a: f32) -> P2 {
        let (s, c) = a.sin_cos();
        p2(c * self.x - s * self.y, s * self.x + c * self.y)
    }
}

fn sd_circle(p: P2, r: f32) -> f32 {
    p.len() - r
}

fn sd_round_rect(p: P2, hw: f32, hh: f32, r: f32) -> f32 {
    let qx = p.x.abs() - hw + r;
    let qy = p.y.abs() - hh + r;
    (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt() + qx.max(qy).min(0.0) - r
}

fn sd_segment(p: P2, a: P2, b: P2) -> f32 {
    let pa = p.sub(a);
    let ba = b.sub(a);
    let h = (pa.dot(ba) / ba.dot(ba).max(1e-12)).clamp(0.0, 1.0);
    p2(pa.x - ba.x * h, pa.y - ba.y * h).len()
}

/// Star (or, with `m` = 2, a regular polygon) of `n` points and radius `r`;
/// `m` in 2..n controls how sharp the points are.
fn sd_star(p: P2, r: f32, n: u32, m: f32) -> f32 {
    let an = std::f32::consts::PI / n as f32;
    let en = std::f32::consts::PI / m;
    let acs = p2(an.cos(), an.sin());
    let ecs = p2(en.cos(), en.sin());
    let bn = (p.x.atan2(p.y)).rem_euclid(2.0 * an) - an;
    let l = p.len();
    let mut q = p2(l * bn.cos(), l * bn.sin().abs());
    q = q.sub(p2(r * acs.x, r * acs.y));
    let k = (-q.dot(ecs)).clamp(0.0, r * acs.y / ecs.y);
    q = p2(q.x + ecs.x * k, q.y + ecs.y * k);
    q.len() * q.x.signum()
}

/// Any simple polygon.
fn sd_polygon(p: P2, v: &[P2]) -> f32 {
    let mut d = p.sub(v[0]).dot(p.sub(v[0]));
    let mut s = 1.0;
    let n = v.len();
    let mut j = n - 1;
    for i in 0..n {
        let e = v[j].sub(v[i]);
        let w = p.sub(v[i]);
        let h = (w.dot(e) / e.dot(e)).clamp(0.0, 1.0);
        let b = p2(w.x - e.x * h, w.y - e.y * h);
        d = d.min(b.dot(b));
        let c1 = p.y >= v[i].y;
        let c2 = p.y < v[j].y;
        let c3 = e.x * w.y > e.y * w.x;
        if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
            s = -s;
        }
        j = i;
    }
    s * d.sqrt()
}

fn sd_polyline(p: P2, pts: &[P2]) -> f32 {
    pts.windows(2).map(|w| sd_segment(p, w[0], w[1])).fold(f32::MAX, f32::min)
}

/// Monoline stroke font on a 4 x 6 grid (y down), A-Z and 0-9.
fn glyph(c: char) -> &'static [&'static [(f32, f32)]] {
    match c {
        'A' => &[&[(0.0, 6.0), (2.0, 0.0), (4.0, 6.0)], &[(0.7, 4.0), (3.3, 4.0)]],
        'B' => &[
            &[(0.0, 3.0), (0.0, 0.0), (2.8, 0.0), (3.7, 0.8), (3.7, 2.2), (2.8, 3.0), (0.0, 3.0)],
            &[(0.0, 3.0), (0.0, 6.0), (3.0, 6.0), (4.0, 5.0), (4.0, 4.0), (3.0, 3.0)],
        ],
        'C' => &[&[(4.0, 1.0), (3.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 5.0), (1.0, 6.0), (3.0, 6.0), (4.0, 5.0)]],
        'D' => &[&[(0.0, 0.0), (0.0, 6.0), (2.5, 6.0), (4.0, 4.5), (4.0, 1.5), (2.5, 0.0), (0.0, 0.0)]],
        'E' => &[&[(4.0, 0.0), (0.0, 0.0), (0.0, 6.0), (4.0, 6.0)], &[(0.0, 3.0), (3.0, 3.0)]],
        'F' => &[&[(4.0, 0.0), (0.0, 0.0), (0.0, 6.0)], &[(0.0, 3.0), (3.0, 3.0)]],
        'G' => &[&[
            (4.0, 1.0),
            (3.0, 0.0),
            (1.0, 0.0),
            (0.0, 1.0),
            (0.0, 5.0),
            (1.0, 6.0),
            (3.0, 6.0),
            (4.0, 5.0),
            (4.0, 3.5),
            (2.3, 3.5),
        ]],
        'H' => &[&[(0.0, 0.0), (0.0, 6.0)], &[(4.0, 0.0), (4.0, 6.0)], &[(0.0, 3.0), (4.0, 3.0)]],
        'I' => &[&[(2.0, 0.0), (2.0, 6.0)], &[(1.0, 0.0), (3.0, 0.0)], &[(1.0, 6.0), (3.0, 6.0)]],
        'J' => &[&[(4.0, 0.0), (4.0, 5.0), (3.0, 6.0), (1.0, 6.0), (0.0, 5.0)]],
        'K' => &[&[(0.0, 0.0), (0.0, 6.0)], &[(4.0, 0.0), (0.0, 3.5)], &[(1.3, 2.7), (4.0, 6.0)]],
        'L' => &[&[(0.0, 0.0), (0.0, 6.0), (4.0, 6.0)]],
        'M' => &[&[(0.0, 6.0), (0.0, 0.0), (2.0, 3.5), (4.0, 0.0), (4.0, 6.0)]],
        'N' => &[&[(0.0, 6.0), (0.0, 0.0), (4.0, 6.0), (4.0, 0.0)]],
        'O' | '0' => &[&[
            (1.0, 0.0),
            (3.0, 0.0),
            (4.0, 1.0),
            (4.0, 5.0),
            (3.0, 6.0),
            (1.0, 6.0),
            (0.0, 5.0),
            (0.0, 1.0),
            (1.0, 0.0),
        ]],
        'P' => &[&[(0.0, 6.0), (0.0, 0.0), (3.0, 0.0), (4.0, 1.0), (4.0, 2.5), (3.0, 3.5), (0.0, 3.5)]],
        'Q' => &[
            &[
                (1.0, 0.0),
                (3.0, 0.0),
                (4.0, 1.0),
                (4.0, 5.0),
                (3.0, 6.0),
                (1.0, 6.0),
                (0.0, 5.0),
                (0.0, 1.0),
                (1.0, 0.0),
            ],
            &[(2.5, 4.5), (4.2, 6.3)],
        ],
        'R' => &[
            &[(0.0, 6.0), (0.0, 0.0), (3.0, 0.0), (4.0, 1.0), (4.0, 2.5), (3.0, 3.5), (0.0, 3.5)],
            &[(2.0, 3.5), (4.0, 6.0)],
        ],
        'S' => &[&[
            (4.0, 1.0),
            (3.0, 0.0),
            (1.0, 0.0),
            (0.0, 1.0),
            (0.0, 2.0),
            (1.0, 3.0),
            (3.0, 3.0),
            (4.0, 4.0),
            (4.0, 5.0),
            (3.0, 6.0),
            (1.0, 6.0),
            (0.0, 5.0),
        ]],
        'T' => &[&[(0.0, 0.0), (4.0, 0.0)], &[(2.0, 0.0), (2.0, 6.0)]],
        'U' => &[&[(0.0, 0.0), (0.0, 5.0), (1.0, 6.0), (3.0, 6.0), (4.0, 5.0), (4.0, 0.0)]],
        'V' => &[&[(0.0, 0.0), (2.0, 6.0), (4.0, 0.0)]],
        'W' => &[&[(0.0, 0.0), (1.0, 6.0), (2.0, 2.5), (3.0, 6.0), (4.0, 0.0)]],
        'X' => &[&[(0.0, 0.0), (4.0, 6.0)], &[(4.0, 0.0), (0.0, 6.0)]],
        'Y' => &[&[(0.0, 0.0), (2.0, 3.0)], &[(4.0, 0.0), (2.0, 3.0), (2.0, 6.0)]],
        'Z' => &[&[(0.0, 0.0), (4.0, 0.0), (0.0, 6.0), (4.0, 6.0)]],
        '1' => &[&[(1.0, 1.0), (2.0, 0.0), (2.0, 6.0)], &[(1.0, 6.0), (3.0, 6.0)]],
        '2' => &[&[(0.0, 1.0), (1.0, 0.0), (3.0, 0.0), (4.0, 1.0), (4.0, 2.0), (0.0, 6.0), (4.0, 6.0)]],
        '3' => &[
            &[(0.0, 1.0), (1.0, 0.0), (3.0, 0.0), (4.0, 1.0), (4.0, 2.0), (3.0, 3.0), (1.5, 3.0)],
            &[(3.0, 3.0), (4.0, 4.0), (4.0, 5.0), (3.0, 6.0), (1.0, 6.0), (0.0, 5.0)],
        ],
        '4' => &[&[(3.0, 6.0), (3.0, 0.0), (0.0, 4.0), (4.0, 4.0)]],
        '5' => &[&[(4.0, 0.0), (0.0, 0.0), (0.0, 3.0), (3.0, 3.0), (4.0, 4.0), (4.0, 5.0), (3.0, 6.0), (0.0, 6.0)]],
        '6' => &[&[
            (3.5, 0.0),
            (1.0, 0.0),
            (0.0, 1.0),
            (0.0, 5.0),
            (1.0, 6.0),
            (3.0, 6.0),
            (4.0, 5.0),
            (4.0, 4.0),
            (3.0, 3.0),
            (0.0, 3.0),
        ]],
        '7' => &[&[(0.0, 0.0), (4.0, 0.0), (1.5, 6.0)]],
        '8' => &[&[
            (1.0, 3.0),
            (0.0, 2.0),
            (0.0, 1.0),
            (1.0, 0.0),
            (3.0, 0.0),
            (4.0, 1.0),
            (4.0, 2.0),
            (3.0, 3.0),
            (1.0, 3.0),
            (0.0, 4.0),
            (0.0, 5.0),
            (1.0, 6.0),
            (3.0, 6.0),
            (4.0, 5.0),
            (4.0, 4.0),
            (3.0, 3.0),
        ]],
        '9' => &[&[
            (4.0, 3.0),
            (1.0, 3.0),
            (0.0, 2.0),
            (0.0, 1.0),
            (1.0, 0.0),
            (3.0, 0.0),
            (4.0, 1.0),
            (4.0, 5.0),
            (3.0, 6.0),
            (0.5, 6.0),
        ]],
        _ => &[],
    }
}

const STOP: &[&str] = &["a", "an", "the", "of", "for", "with", "and", "in", "on", "at", "to", "my", "our", "logo"];

/// Up to two initials of the prompt's significant words (A-Z, 0-9).
pub fn initials(prompt: &str) -> String {
    words(prompt)
        .iter()
        .filter(|w| !STOP.contains(&w.as_str()))
        .filter_map(|w| w.chars().next())
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| c.is_ascii_alphanumeric())
        .take(2)
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Badge {
    Circle,
    RoundedSquare,
    Hexagon,
    Diamond,
    Shield,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emblem {
    Monogram,
    Star,
    Peaks,
    Rings,
    Chevrons,
    Leaf,
    Bolt,
}

impl Badge {
    pub fn name(self) -> &'static str {
        match self {
            Badge::Circle => "circle",
            Badge::RoundedSquare => "rounded square",
            Badge::Hexagon => "hexagon",
            Badge::Diamond => "diamond",
            Badge::Shield => "shield",
        }
    }
}

impl Emblem {
    pub fn name(self) -> &'static str {
        match self {
            Emblem::Monogram => "monogram",
            Emblem::Star => "star",
            Emblem::Peaks => "peaks",
            Emblem::Rings => "rings",
            Emblem::Chevrons => "chevrons",
            Emblem::Leaf => "leaf",
            Emblem::Bolt => "bolt",
        }
    }
}

/// A logo mark in normalised coordinates: origin at the centre, y up, the
/// shorter side of the image spanning -1..1.
pub struct Mark {
    pub badge: Badge,
    pub emblem: Emblem,
    pub text: String,
    radius: f32,
    outline: bool,
    star_points: u32,
    tilt: f32,
    strokes: Vec<Vec<P2>>,
    stroke_w: f32,
}

/// Coverage (0..1) of each layer at one point.
pub struct Cover {
    pub shadow: f32,
    pub outline: f32,
    pub badge: f32,
    pub emblem: f32,
    pub dot: f32,
}

impl Mark {
    pub fn new(prompt: &str, rng: &mut Rng) -> Mark {
        let badges = [Badge::Circle, Badge::RoundedSquare, Badge::Hexagon, Badge::Diamond, Badge::Shield];
        let badge = badges[rng.below(badges.len())];
        let text = initials(prompt);
        let mut emblems =
            vec![Emblem::Star, Emblem::Peaks, Emblem::Rings, Emblem::Chevrons, Emblem::Leaf, Emblem::Bolt];
        if !text.is_empty() {
            // Initials are the most logo-like choice: weight them up.
            emblems.extend([Emblem::Monogram, Emblem::Monogram, Emblem::Monogram]);
        }
        let emblem = emblems[rng.below(emblems.len())];
        let radius: f32 = 0.62;
        // Lay out the monogram's strokes: glyphs of 4 x 6 units, gap 1.6.
        let mut strokes = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len() as f32;
        let total_w = 4.0 * n + 1.6 * (n - 1.0).max(0.0);
        let box_h = if badge == Badge::Diamond { 0.5 } else { 0.62 } * radius;
        let s = (box_h / 6.0).min(radius * 1.05 / total_w.max(1.0));
        for (i, c) in chars.iter().enumerate() {
            let x0 = -total_w * 0.5 + i as f32 * 5.6;
            for stroke in glyph(*c) {
                strokes.push(stroke.iter().map(|(x, y)| p2((x0 + x) * s, (3.0 - y) * s)).collect());
            }
        }
        Mark {
            badge,
            emblem,
            text,
            radius,
            outline: rng.chance(0.5),
            star_points: 5 + rng.below(4) as u32,
            tilt: rng.range(-0.35, 0.35),
            strokes,
            stroke_w: s * 0.85,
        }
    }

    fn badge_sd(&self, p: P2) -> f32 {
        let r = self.radius;
        match self.badge {
            Badge::Circle => sd_circle(p, r),
            Badge::RoundedSquare => sd_round_rect(p, r * 0.88, r * 0.88, r * 0.28),
            Badge::Hexagon => sd_star(p2(p.y, p.x), r * 1.02, 6, 2.0) - 0.02,
            Badge::Diamond => sd_star(p, r * 1.05, 4, 2.0) - 0.05,
            Badge::Shield => {
                let top = sd_round_rect(p2(p.x, p.y - r * 0.25), r * 0.85, r * 0.6, r * 0.12);
                let tip = sd_polygon(p, &[p2(-r * 0.85, r * 0.2), p2(r * 0.85, r * 0.2), p2(0.0, -r * 1.05)]);
                top.min(tip)
            }
        }
    }

    fn emblem_sd(&self, p: P2) -> f32 {
        let r = self.radius;
        match self.emblem {
            Emblem::Monogram => {
                self.strokes.iter().map(|s| sd_polyline(p, s)).fold(f32::MAX, f32::min) - self.stroke_w * 0.5
            }
            Emblem::Star => sd_star(p.rot(self.tilt * 0.3), r * 0.5, self.star_points, 3.0),
            Emblem::Peaks => {
                let base = -r * 0.3;
                let big = sd_polygon(p, &[p2(-r * 0.55, base), p2(-r * 0.08, r * 0.38), p2(r * 0.38, base)]);
                let small = sd_polygon(p, &[p2(-r * 0.05, base), p2(r * 0.25, r * 0.12), p2(r * 0.58, base)]);
                let sun = sd_circle(p.sub(p2(r * 0.3, r * 0.36)), r * 0.12);
                let ground = sd_round_rect(p.sub(p2(0.0, base - r * 0.1)), r * 0.58, r * 0.04, r * 0.04);
                big.min(small).min(sun).min(ground)
            }
            Emblem::Rings => {
                let d = p.len();
                let ring = (d - r * 0.45).abs() - r * 0.07;
                let dot = d - r * 0.18;
                ring.min(dot)
            }
            Emblem::Chevrons => {
                let mut d = f32::MAX;
                for i in 0..3 {
                    let y = r * (0.28 - 0.3 * i as f32);
                    let pts = [p2(-r * 0.42, y - r * 0.22), p2(0.0, y + r * 0.12), p2(r * 0.42, y - r * 0.22)];
                    d = d.min(sd_polyline(p, &pts) - r * 0.07);
                }
                d
            }
            Emblem::Leaf => {
                let q = p.rot(0.785 + self.tilt);
                let w = r * 0.5;
                let a = sd_circle(p2(q.x - w * 0.55, q.y), w);
                let b = sd_circle(p2(q.x + w * 0.55, q.y), w);
                let leaf = a.max(b);
                let rib = sd_segment(q, p2(0.0, -w * 0.75), p2(0.0, w * 0.75)) - r * 0.025;
                leaf.max(-rib)
            }
            Emblem::Bolt => {
                let k = r * 0.62;
                let pts = [
                    p2(0.15 * k, 0.95 * k),
                    p2(-0.45 * k, -0.05 * k),
                    p2(-0.02 * k, -0.05 * k),
                    p2(-0.2 * k, -0.95 * k),
                    p2(0.45 * k, 0.12 * k),
                    p2(0.02 * k, 0.12 * k),
                ];
                sd_polygon(p, &pts)
            }
        }
    }

    /// Coverage of each layer at (x, y); `px` is one pixel in these units.
    pub fn cover(&self, x: f32, y: f32, px: f32) -> Cover {
        let p = p2(x, y);
        let aa = |d: f32| (0.5 - d / px).clamp(0.0, 1.0);
        let b = self.badge_sd(p);
        let outline = if self.outline { aa((b + self.radius * 0.09).abs() - self.radius * 0.022) * aa(b) } else { 0.0 };
        let emblem = aa(self.emblem_sd(p)) * aa(b + self.radius * 0.04);
        let dot_p = p.sub(p2(0.0, -self.radius * 0.78));
        let dot = if self.emblem == Emblem::Monogram && self.badge != Badge::Shield {
            aa(sd_circle(dot_p, self.radius * 0.045))
        } else {
            0.0
        };
        // A soft drop shadow, down and to the right, for painted backdrops.
        let sb = self.badge_sd(p2(x - 0.025, y + 0.035));
        let shadow = 1.0 - smoothstep(-0.04, 0.06, sb);
        Cover { shadow, outline, badge: aa(b), emblem, dot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_skip_small_words() {
        assert_eq!(initials("the Blue Harbour coffee company"), "BH");
        assert_eq!(initials("a logo for zebra"), "Z");
        assert_eq!(initials("!!!"), "");
    }

    #[test]
    fn every_letter_and_digit_has_strokes() {
        for c in ('A'..='Z').chain('0'..='9') {
            assert!(!glyph(c).is_empty(), "{c}");
        }
    }

    #[test]
    fn polygon_sign() {
        let tri = [p2(-1.0, -1.0), p2(1.0, -1.0), p2(0.0, 1.0)];
        assert!(sd_polygon(p2(0.0, 0.0), &tri) < 0.0);
        assert!(sd_polygon(p2(0.0, 2.0), &tri) > 0.0);
    }
}
