//! Watershed markers: local maxima of the distance map at least
//! `min_distance` apart, one per plateau. (A foreground component left
//! without a marker is labelled whole after the watershed.)
//!
//! 1. Candidates: foreground pixels not below any pixel of the square
//!    window of radius `min_distance` around them (a maximum filter, as
//!    scikit-image's `peak_local_max`), found by a cheap 3x3 test first and
//!    the full window only for its survivors.
//! 2. Plateaus: 8-connected candidates are one maximum, placed at the
//!    candidate pixel nearest their centroid.
//! 3. Non-maximum suppression, highest first: a maximum within
//!    `min_distance` (Chebyshev) of a kept one is dropped, as
//!    `peak_local_max` does.

use std::collections::HashMap;

/// Whether `distance[i]` is at least every value within Chebyshev radius `r`.
fn is_window_max(distance: &[f32], width: usize, height: usize, i: usize, r: usize) -> bool {
    let (x, y) = (i % width, i / width);
    let d = distance[i];
    for sy in y.saturating_sub(r)..(y + r + 1).min(height) {
        let row = &distance[sy * width..(sy + 1) * width];
        if row[x.saturating_sub(r)..(x + r + 1).min(width)].iter().any(|&v| v > d) {
            return false;
        }
    }
    true
}

/// Foreground pixels that are maxima of their `(2r + 1)`-square window.
pub fn candidates(distance: &[f32], mask: &[bool], width: usize, height: usize, r: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 0..distance.len() {
        let d = distance[i];
        if d <= 0.0 || !mask[i] {
            continue;
        }
        if is_window_max(distance, width, height, i, 1) && (r <= 1 || is_window_max(distance, width, height, i, r)) {
            out.push(i);
        }
    }
    out
}

/// Marker image (labels 1..=N, 0 elsewhere) and N.
pub fn markers(distance: &[f32], mask: &[bool], width: usize, height: usize, min_distance: u32) -> (Vec<u32>, u32) {
    let r = min_distance.max(1) as usize;
    let cands = candidates(distance, mask, width, height, r);
    let peaks = select(&cands, |i| distance[i], width, height, min_distance);
    let mut out = vec![0u32; distance.len()];
    for (k, &i) in peaks.iter().enumerate() {
        out[i] = k as u32 + 1;
    }
    (out, peaks.len() as u32)
}

/// Steps 2 and 3 on a list of candidate pixels (any order) with their
/// distances: the kept markers, in label order (marker `k` is label
/// `k + 1`). Shared by the CPU path and the CUDA path, which finds the
/// candidates on the device.
pub fn select(
    cands: &[usize],
    distance: impl Fn(usize) -> f32,
    width: usize,
    height: usize,
    min_distance: u32,
) -> Vec<usize> {
    let r = min_distance.max(1) as usize;
    // Plateaus: 8-connected groups of candidates, each placed at the member
    // nearest the group's centroid.
    let position: HashMap<usize, usize> = cands.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut group = vec![usize::MAX; cands.len()];
    let mut peaks: Vec<usize> = Vec::new();
    let mut members: Vec<usize> = Vec::new();
    for start in 0..cands.len() {
        if group[start] != usize::MAX {
            continue;
        }
        group[start] = start;
        members.clear();
        members.push(start);
        let mut head = 0;
        while head < members.len() {
            let i = cands[members[head]];
            head += 1;
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            super::label::for_neighbours(x, y, width, height, super::label::Connectivity::Eight, |j| {
                if let Some(&k) = position.get(&j) {
                    if group[k] == usize::MAX {
                        group[k] = start;
                        members.push(k);
                    }
                }
            });
        }
        let n = members.len() as f64;
        let cx = members.iter().map(|&k| (cands[k] % width) as f64).sum::<f64>() / n;
        let cy = members.iter().map(|&k| (cands[k] / width) as f64).sum::<f64>() / n;
        let best = members
            .iter()
            .map(|&k| cands[k])
            .min_by(|&a, &b| {
                let da = ((a % width) as f64 - cx).powi(2) + ((a / width) as f64 - cy).powi(2);
                let db = ((b % width) as f64 - cx).powi(2) + ((b / width) as f64 - cy).powi(2);
                da.total_cmp(&db).then(a.cmp(&b))
            })
            .expect("a group has members");
        peaks.push(best);
    }
    peaks.sort_by(|&a, &b| distance(b).total_cmp(&distance(a)).then(a.cmp(&b)));

    // Non-maximum suppression on a grid of r-sized cells.
    let mut grid: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
    let mut kept = Vec::new();
    for &i in &peaks {
        let (x, y) = (i % width, i / width);
        let (cx, cy) = (x / r, y / r);
        let near = (cx.saturating_sub(1)..=cx + 1).any(|gx| {
            (cy.saturating_sub(1)..=cy + 1).any(|gy| {
                grid.get(&(gx, gy))
                    .is_some_and(|kept| kept.iter().any(|&(kx, ky)| kx.abs_diff(x).max(ky.abs_diff(y)) <= r))
            })
        });
        if !near {
            grid.entry((cx, cy)).or_default().push((x, y));
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_match_a_naive_maximum_filter() {
        let (w, h) = (23, 17);
        let d: Vec<f32> = (0..w * h).map(|i| ((i * 7919) % 13) as f32).collect();
        let mask: Vec<bool> = (0..w * h).map(|i| i % 5 != 0).collect();
        for r in [1usize, 2, 4] {
            let fast = candidates(&d, &mask, w, h, r);
            let mut slow = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    let mut m = f32::NEG_INFINITY;
                    for sy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for sx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            m = m.max(d[sy * w + sx]);
                        }
                    }
                    let i = y * w + x;
                    if mask[i] && d[i] > 0.0 && d[i] >= m {
                        slow.push(i);
                    }
                }
            }
            assert_eq!(fast, slow, "r {r}");
        }
    }

    #[test]
    fn one_marker_per_plateau_and_spacing_suppresses() {
        // A 3x7 bar (its distance map has a plateau along the middle row)
        // and a single pixel far away.
        let (w, h) = (20, 9);
        let mut mask = vec![false; w * h];
        for y in 2..5 {
            for x in 2..9 {
                mask[y * w + x] = true;
            }
        }
        mask[7 * w + 17] = true;
        let d = super::super::edt::distance_transform(&mask, w, h);
        let (m, n) = markers(&d, &mask, w, h, 1);
        assert_eq!(n, 2);
        assert_eq!(m.iter().filter(|&&l| l != 0).count(), 2);
        assert_ne!(m[3 * w + 5], 0, "the bar's marker sits mid-plateau");
        assert_ne!(m[7 * w + 17], 0);
        // A larger spacing suppresses the weaker maximum nearby.
        let (_, n) = markers(&d, &mask, w, h, 12);
        assert_eq!(n, 1);
    }
}
