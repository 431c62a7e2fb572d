//! Weighted k-means with greedy k-means++ seeding, deterministic for a seed.
//!
//! Points are colours in a perceptual space and weights are how many pixels
//! share that colour, so an image with a few hundred distinct colours (a
//! logo) clusters in microseconds whatever its size.

/// SplitMix64: a tiny, well-mixed, seedable generator (no dependency needed).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[inline]
pub fn dist2(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    let d0 = a[0] - b[0];
    let d1 = a[1] - b[1];
    let d2 = a[2] - b[2];
    d0 * d0 + d1 * d1 + d2 * d2
}

#[inline]
fn nearest(p: &[f32; 3], centres: &[[f32; 3]]) -> (usize, f32) {
    let mut best = 0;
    let mut best_d = f32::INFINITY;
    for (j, c) in centres.iter().enumerate() {
        let d = dist2(p, c);
        if d < best_d {
            best_d = d;
            best = j;
        }
    }
    (best, best_d)
}

/// Result of [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Cluster centres (weighted means of their points).
    pub centres: Vec<[f32; 3]>,
    /// Cluster of each input point.
    pub assignment: Vec<u8>,
    /// Lloyd iterations run.
    pub iterations: u32,
    /// Whether the assignment stopped changing before `max_iterations`.
    pub converged: bool,
    /// Weighted sum of squared distances to the assigned centres.
    pub inertia: f64,
}

/// Samples an index with probability proportional to `w[i]`, given their
/// sum `total` (> 0).
fn sample(w: &[f64], total: f64, rng: &mut SplitMix64) -> usize {
    let target = rng.next_f64() * total;
    let mut acc = 0.0;
    for (i, &x) in w.iter().enumerate() {
        acc += x;
        if acc > target {
            return i;
        }
    }
    // Rounding: the last index with any weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

/// Greedy k-means++ seeding (Arthur & Vassilvitskii; the greedy variant with
/// `2 + ln k` candidates per centre, as scikit-learn does). Stops early when
/// every point coincides with a centre (fewer distinct points than `k`).
pub fn kmeans_plus_plus(points: &[[f32; 3]], weights: &[f64], k: usize, rng: &mut SplitMix64) -> Vec<[f32; 3]> {
    assert_eq!(points.len(), weights.len());
    if points.is_empty() || k == 0 {
        return Vec::new();
    }
    let total_w: f64 = weights.iter().sum();
    let first = sample(weights, total_w, rng);
    let mut centres = vec![points[first]];
    let mut d2: Vec<f32> = points.iter().map(|p| dist2(p, &points[first])).collect();
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut scores = vec![0f64; points.len()];
    while centres.len() < k {
        for ((s, &d), &w) in scores.iter_mut().zip(&d2).zip(weights) {
            *s = d as f64 * w;
        }
        let potential: f64 = scores.iter().sum();
        if potential <= 0.0 {
            break;
        }
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..trials {
            let cand = sample(&scores, potential, rng);
            let c = points[cand];
            let pot: f64 =
                points.iter().zip(&d2).zip(weights).map(|((p, &d), &w)| d.min(dist2(p, &c)) as f64 * w).sum();
            if best.is_none_or(|(b, _)| pot < b) {
                best = Some((pot, cand));
            }
        }
        let (_, chosen) = best.expect("at least two trials");
        let c = points[chosen];
        for (d, p) in d2.iter_mut().zip(points) {
            *d = d.min(dist2(p, &c));
        }
        centres.push(c);
    }
    centres
}

/// Weighted Lloyd iterations from a k-means++ start. `k` is capped at 255
/// and at the number of distinct points; fewer centres come back when the
/// data has fewer distinct values.
pub fn kmeans(points: &[[f32; 3]], weights: &[f64], k: usize, seed: u64, max_iterations: u32) -> KMeans {
    let k = k.min(255);
    let mut rng = SplitMix64::new(seed);
    let mut centres = kmeans_plus_plus(points, weights, k, &mut rng);
    let n = points.len();
    let mut assignment = vec![u8::MAX; n];
    let mut iterations = 0;
    let mut converged = centres.len() <= 1 || n == 0;
    let mut sums = vec![[0f64; 4]; centres.len()];
    if converged {
        assignment.iter_mut().for_each(|a| *a = 0);
    }
    while !converged && iterations < max_iterations {
        iterations += 1;
        let mut changed = 0usize;
        sums.iter_mut().for_each(|s| *s = [0.0; 4]);
        for ((p, a), &w) in points.iter().zip(assignment.iter_mut()).zip(weights) {
            let (j, _) = nearest(p, &centres);
            if *a != j as u8 {
                *a = j as u8;
                changed += 1;
            }
            let s = &mut sums[j];
            s[0] += p[0] as f64 * w;
            s[1] += p[1] as f64 * w;
            s[2] += p[2] as f64 * w;
            s[3] += w;
        }
        let mut reseeded = false;
        for j in 0..centres.len() {
            let s = sums[j];
            if s[3] > 0.0 {
                centres[j] = [(s[0] / s[3]) as f32, (s[1] / s[3]) as f32, (s[2] / s[3]) as f32];
            } else {
                // Empty cluster: move it to the point that costs the most
                // where it is now (ties: the lowest index).
                let mut worst = (f64::MIN, 0usize);
                for (i, (p, &w)) in points.iter().zip(weights).enumerate() {
                    let cost = dist2(p, &centres[assignment[i] as usize]) as f64 * w;
                    if cost > worst.0 {
                        worst = (cost, i);
                    }
                }
                centres[j] = points[worst.1];
                reseeded = true;
            }
        }
        if changed == 0 && !reseeded {
            converged = true;
        }
    }
    // Final assignment against the final centres, and the inertia.
    let mut inertia = 0.0;
    for ((p, a), &w) in points.iter().zip(assignment.iter_mut()).zip(weights) {
        let (j, d) = nearest(p, &centres);
        *a = j as u8;
        inertia += d as f64 * w;
    }
    KMeans { centres, assignment, iterations, converged, inertia }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (Vec<[f32; 3]>, Vec<f64>) {
        // Three well separated blobs, generated deterministically.
        let mut rng = SplitMix64::new(7);
        let centres = [[10.0f32, 0.0, 0.0], [60.0, 40.0, -30.0], [90.0, -50.0, 20.0]];
        let mut pts = Vec::new();
        let mut w = Vec::new();
        for (i, c) in centres.iter().enumerate() {
            for _ in 0..200 {
                let j = |rng: &mut SplitMix64| (rng.next_f64() as f32 - 0.5) * 4.0;
                pts.push([c[0] + j(&mut rng), c[1] + j(&mut rng), c[2] + j(&mut rng)]);
                w.push(1.0 + i as f64);
            }
        }
        (pts, w)
    }

    #[test]
    fn finds_separated_blobs_and_converges() {
        let (pts, w) = blobs();
        let r = kmeans(&pts, &w, 3, 42, 100);
        assert!(r.converged, "{r:?}");
        assert_eq!(r.centres.len(), 3);
        // Every blob maps to exactly one cluster.
        for b in 0..3 {
            let a = r.assignment[b * 200];
            assert!(r.assignment[b * 200..(b + 1) * 200].iter().all(|&x| x == a));
        }
        let mut found: Vec<f32> = r.centres.iter().map(|c| c[0]).collect();
        found.sort_by(f32::total_cmp);
        for (f, want) in found.iter().zip([10.0, 60.0, 90.0]) {
            assert!((f - want).abs() < 1.0, "{found:?}");
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (pts, w) = blobs();
        let a = kmeans(&pts, &w, 5, 9, 100);
        let b = kmeans(&pts, &w, 5, 9, 100);
        assert_eq!(a, b);
    }

    #[test]
    fn fewer_distinct_points_than_k() {
        let pts = vec![[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0]];
        let r = kmeans(&pts, &[1.0, 1.0, 1.0], 8, 1, 10);
        assert_eq!(r.centres.len(), 2);
        assert_eq!(r.inertia, 0.0);
        assert_eq!(r.assignment[0], r.assignment[1]);
        assert_ne!(r.assignment[0], r.assignment[2]);
    }

    #[test]
    fn lloyd_never_increases_inertia_over_seeding() {
        let (pts, w) = blobs();
        let mut rng = SplitMix64::new(3);
        let seeds = kmeans_plus_plus(&pts, &w, 6, &mut rng);
        let seed_inertia: f64 = pts
            .iter()
            .zip(&w)
            .map(|(p, &w)| seeds.iter().map(|c| dist2(p, c)).fold(f32::INFINITY, f32::min) as f64 * w)
            .sum();
        let r = kmeans(&pts, &w, 6, 3, 100);
        assert!(r.inertia <= seed_inertia + 1e-6, "{} > {}", r.inertia, seed_inertia);
    }
}
