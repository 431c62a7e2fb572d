//! Polygon simplification (Ramer–Douglas–Peucker) and cubic Bézier fitting
//! (Schneider, "An Algorithm for Automatically Fitting Digitized Curves",
//! Graphics Gems, 1990).

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct P {
    pub x: f64,
    pub y: f64,
}

impl P {
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
    pub fn add(self, o: P) -> P {
        P::new(self.x + o.x, self.y + o.y)
    }
    pub fn sub(self, o: P) -> P {
        P::new(self.x - o.x, self.y - o.y)
    }
    pub fn mul(self, k: f64) -> P {
        P::new(self.x * k, self.y * k)
    }
    pub fn dot(self, o: P) -> f64 {
        self.x * o.x + self.y * o.y
    }
    pub fn len(self) -> f64 {
        self.dot(self).sqrt()
    }
    pub fn dist(self, o: P) -> f64 {
        self.sub(o).len()
    }
    pub fn normalized(self) -> P {
        let l = self.len();
        if l > 0.0 {
            self.mul(1.0 / l)
        } else {
            self
        }
    }
}

/// Distance from `p` to the segment `a`-`b`.
pub fn seg_dist(p: P, a: P, b: P) -> f64 {
    let ab = b.sub(a);
    let l2 = ab.dot(ab);
    if l2 == 0.0 {
        return p.dist(a);
    }
    let t = (p.sub(a).dot(ab) / l2).clamp(0.0, 1.0);
    p.dist(a.add(ab.mul(t)))
}

/// RDP on the open polyline `pts[lo..=hi]`: pushes kept indices in
/// `(lo, hi]` in order (iterative, so long contours cannot overflow the stack).
fn rdp_open(pts: &[P], lo: usize, hi: usize, eps: f64, keep: &mut Vec<usize>) {
    let mut stack = vec![(lo, hi)];
    let mut kept = vec![hi];
    while let Some((a, b)) = stack.pop() {
        let mut best = (0.0, 0usize);
        for i in a + 1..b {
            let d = seg_dist(pts[i], pts[a], pts[b]);
            if d > best.0 {
                best = (d, i);
            }
        }
        if best.0 > eps {
            kept.push(best.1);
            stack.push((a, best.1));
            stack.push((best.1, b));
        }
    }
    kept.sort_unstable();
    keep.extend(kept);
}

/// RDP on a closed polygon: indices of the kept vertices, starting with 0
/// (the contour's first point) and the point farthest from it.
pub fn rdp_closed(pts: &[P], eps: f64) -> Vec<usize> {
    let n = pts.len();
    if n <= 3 {
        return (0..n).collect();
    }
    let far = (1..n).max_by(|&a, &b| pts[0].dist(pts[a]).total_cmp(&pts[0].dist(pts[b]))).unwrap();
    let mut ring: Vec<P> = pts.to_vec();
    ring.push(pts[0]);
    let mut keep = vec![0];
    rdp_open(&ring, 0, far, eps, &mut keep);
    rdp_open(&ring, far, n, eps, &mut keep);
    keep.pop(); // index n is the first point again
    keep
}

/// A cubic Bézier segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cubic {
    pub p0: P,
    pub c1: P,
    pub c2: P,
    pub p3: P,
}

impl Cubic {
    pub fn at(&self, t: f64) -> P {
        let mt = 1.0 - t;
        let (a, b, c, d) = (mt * mt * mt, 3.0 * mt * mt * t, 3.0 * mt * t * t, t * t * t);
        P::new(
            a * self.p0.x + b * self.c1.x + c * self.c2.x + d * self.p3.x,
            a * self.p0.y + b * self.c1.y + c * self.c2.y + d * self.p3.y,
        )
    }
    fn d1(&self, t: f64) -> P {
        let mt = 1.0 - t;
        self.c1
            .sub(self.p0)
            .mul(3.0 * mt * mt)
            .add(self.c2.sub(self.c1).mul(6.0 * mt * t))
            .add(self.p3.sub(self.c2).mul(3.0 * t * t))
    }
    fn d2(&self, t: f64) -> P {
        let mt = 1.0 - t;
        self.c2
            .sub(self.c1.mul(2.0))
            .add(self.p0)
            .mul(6.0 * mt)
            .add(self.p3.sub(self.c2.mul(2.0)).add(self.c1).mul(6.0 * t))
    }
}

/// Fits cubic Béziers through `pts` (at least 2) with end tangents `t1`
/// (pointing into the curve at the start) and `t2` (pointing back into the
/// curve at the end), splitting until every point is within `err`.
pub fn fit_cubics(pts: &[P], t1: P, t2: P, err: f64, out: &mut Vec<Cubic>) {
    fit_rec(pts, t1, t2, err * err, 0, out)
}

fn fit_rec(pts: &[P], t1: P, t2: P, err2: f64, depth: u32, out: &mut Vec<Cubic>) {
    let n = pts.len();
    let (first, last) = (pts[0], pts[n - 1]);
    if n == 2 || depth > 24 {
        let d = first.dist(last) / 3.0;
        out.push(Cubic { p0: first, c1: first.add(t1.mul(d)), c2: last.add(t2.mul(d)), p3: last });
        return;
    }
    let mut u = chord_params(pts);
    let mut bez = generate(pts, &u, t1, t2);
    let (mut max_err, mut split) = max_error(pts, &bez, &u);
    if max_err < err2 {
        out.push(bez);
        return;
    }
    if max_err < err2 * 16.0 {
        for _ in 0..6 {
            reparameterize(pts, &mut u, &bez);
            bez = generate(pts, &u, t1, t2);
            let (e, s) = max_error(pts, &bez, &u);
            max_err = e;
            split = s;
            if max_err < err2 {
                out.push(bez);
                return;
            }
        }
    }
    let split = split.clamp(1, n - 2);
    let tc = center_tangent(pts, split);
    fit_rec(&pts[..=split], t1, tc, err2, depth + 1, out);
    fit_rec(&pts[split..], tc.mul(-1.0), t2, err2, depth + 1, out);
}

/// Tangent at an interior point (pointing backwards), from points a few
/// steps away on both sides so pixel staircases do not skew it.
fn center_tangent(pts: &[P], i: usize) -> P {
    let k = 3.min(i).min(pts.len() - 1 - i);
    let t = pts[i - k].sub(pts[i + k]).normalized();
    if t.len() == 0.0 {
        pts[i - 1].sub(pts[i + 1]).normalized()
    } else {
        t
    }
}

fn chord_params(pts: &[P]) -> Vec<f64> {
    let mut u = Vec::with_capacity(pts.len());
    u.push(0.0);
    for i in 1..pts.len() {
        let prev = u[i - 1];
        u.push(prev + pts[i].dist(pts[i - 1]));
    }
    let total = *u.last().unwrap();
    if total > 0.0 {
        u.iter_mut().for_each(|v| *v /= total);
    }
    u
}

fn generate(pts: &[P], u: &[f64], t1: P, t2: P) -> Cubic {
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut c = [[0.0f64; 2]; 2];
    let mut x = [0.0f64; 2];
    for (i, &t) in u.iter().enumerate() {
        let mt = 1.0 - t;
        let b0 = mt * mt * mt;
        let b1 = 3.0 * mt * mt * t;
        let b2 = 3.0 * mt * t * t;
        let b3 = t * t * t;
        let a0 = t1.mul(b1);
        let a1 = t2.mul(b2);
        c[0][0] += a0.dot(a0);
        c[0][1] += a0.dot(a1);
        c[1][1] += a1.dot(a1);
        let tmp = pts[i].sub(first.mul(b0 + b1).add(last.mul(b2 + b3)));
        x[0] += a0.dot(tmp);
        x[1] += a1.dot(tmp);
    }
    c[1][0] = c[0][1];
    let det_c = c[0][0] * c[1][1] - c[1][0] * c[0][1];
    let det_c0x = c[0][0] * x[1] - c[1][0] * x[0];
    let det_xc1 = x[0] * c[1][1] - x[1] * c[0][1];
    let (mut al, mut ar) = if det_c.abs() > 1e-12 { (det_xc1 / det_c, det_c0x / det_c) } else { (0.0, 0.0) };
    let seg = first.dist(last);
    let eps = 1e-6 * seg;
    // Degenerate or wild solutions: fall back to the Wu/Barsky heuristic.
    if al < eps || ar < eps || al > seg * 3.0 || ar > seg * 3.0 {
        al = seg / 3.0;
        ar = seg / 3.0;
    }
    Cubic { p0: first, c1: first.add(t1.mul(al)), c2: last.add(t2.mul(ar)), p3: last }
}

fn max_error(pts: &[P], bez: &Cubic, u: &[f64]) -> (f64, usize) {
    let mut best = (0.0, pts.len() / 2);
    for i in 1..pts.len() - 1 {
        let d = bez.at(u[i]).sub(pts[i]);
        let e = d.dot(d);
        if e >= best.0 {
            best = (e, i);
        }
    }
    best
}

fn reparameterize(pts: &[P], u: &mut [f64], bez: &Cubic) {
    for (p, t) in pts.iter().zip(u.iter_mut()) {
        let q = bez.at(*t).sub(*p);
        let d1 = bez.d1(*t);
        let d2 = bez.d2(*t);
        let num = q.dot(d1);
        let den = d1.dot(d1) + q.dot(d2);
        if den.abs() > 1e-12 {
            *t = (*t - num / den).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdp_keeps_the_corners_of_a_staircase_rectangle() {
        // A 4x3 rectangle traced as unit steps.
        let mut pts = Vec::new();
        for x in 0..4 {
            pts.push(P::new(x as f64, 0.0));
        }
        for y in 0..3 {
            pts.push(P::new(4.0, y as f64));
        }
        for x in (1..=4).rev() {
            pts.push(P::new(x as f64, 3.0));
        }
        for y in (1..=3).rev() {
            pts.push(P::new(0.0, y as f64));
        }
        let keep = rdp_closed(&pts, 0.5);
        let kept: Vec<P> = keep.iter().map(|&i| pts[i]).collect();
        assert_eq!(kept, vec![P::new(0.0, 0.0), P::new(4.0, 0.0), P::new(4.0, 3.0), P::new(0.0, 3.0)]);
    }

    #[test]
    fn fits_a_quarter_circle_with_one_or_two_cubics() {
        let pts: Vec<P> = (0..=40)
            .map(|i| {
                let a = std::f64::consts::FRAC_PI_2 * i as f64 / 40.0;
                P::new(50.0 * a.cos(), 50.0 * a.sin())
            })
            .collect();
        let mut out = Vec::new();
        fit_cubics(&pts, P::new(0.0, 1.0), P::new(1.0, 0.0), 0.1, &mut out);
        assert!(!out.is_empty() && out.len() <= 2, "{}", out.len());
        assert_eq!(out[0].p0, pts[0]);
        assert_eq!(out.last().unwrap().p3, pts[40]);
        for i in 0..=20 {
            let p = out[0].at(i as f64 / 20.0);
            let r = p.len();
            assert!((r - 50.0).abs() < 0.2, "{r}");
        }
    }
}
