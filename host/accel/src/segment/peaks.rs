//! Watershed markers: local maxima of the distance map at least
//! `min_distance` apart, one per plateau, and at least one per foreground
//! component (so no cell is lost for want of a seed).
//!
//! 1. A square maximum filter of radius `min_distance` (van Herk / Gil-Werman
//!    along rows, row-wise maxima down columns); candidates are foreground
//!    pixels equal to their neighbourhood maximum.
//! 2. Plateaus: 8-connected candidates are one maximum, placed at the
//!    candidate pixel nearest their centroid.
//! 3. Non-maximum suppression, highest first: a maximum within
//!    `min_distance` (Chebyshev) of a kept one is dropped, as
//!    scikit-image's `peak_local_max` does.
//! 4. A foreground component left without a marker gets one at its
//!    highest pixel.

use super::label::{label, Connectivity};
use std::collections::HashMap;

/// Square maximum filter of radius `r` (window `2r + 1`), borders ignored.
pub fn max_filter(src: &[f32], width: usize, height: usize, r: usize) -> Vec<f32> {
    let k = 2 * r + 1;
    let mut rows = vec![0f32; src.len()];
    let n = width + 2 * r;
    let padded_len = n.div_ceil(k) * k;
    let mut p = vec![f32::NEG_INFINITY; padded_len];
    let mut g = vec![0f32; padded_len];
    let mut h = vec![0f32; padded_len];
    for (row, out) in src.chunks(width).zip(rows.chunks_mut(width)) {
        p.fill(f32::NEG_INFINITY);
        p[r..r + width].copy_from_slice(row);
        for block in (0..padded_len).step_by(k) {
            g[block] = p[block];
            for i in block + 1..block + k {
                g[i] = g[i - 1].max(p[i]);
            }
            h[block + k - 1] = p[block + k - 1];
            for i in (block..block + k - 1).rev() {
                h[i] = h[i + 1].max(p[i]);
            }
        }
        for (x, o) in out.iter_mut().enumerate() {
            *o = h[x].max(g[x + k - 1]);
        }
    }
    let mut out = vec![0f32; src.len()];
    for y in 0..height {
        let o = &mut out[y * width..(y + 1) * width];
        o.copy_from_slice(&rows[y * width..(y + 1) * width]);
        for sy in y.saturating_sub(r)..(y + r + 1).min(height) {
            for (a, b) in o.iter_mut().zip(&rows[sy * width..(sy + 1) * width]) {
                *a = a.max(*b);
            }
        }
    }
    out
}

/// Marker image (labels 1..=N, 0 elsewhere) and N.
pub fn markers(distance: &[f32], mask: &[bool], width: usize, height: usize, min_distance: u32) -> (Vec<u32>, u32) {
    let r = min_distance.max(1) as usize;
    let maxf = max_filter(distance, width, height, r);
    let candidate: Vec<bool> =
        (0..distance.len()).map(|i| mask[i] && distance[i] > 0.0 && distance[i] >= maxf[i]).collect();

    // One maximum per plateau, at the plateau pixel nearest its centroid.
    let (plateaus, count) = label(&candidate, width, height, Connectivity::Eight);
    let mut sums = vec![(0f64, 0f64, 0u32); count as usize + 1];
    for (i, &l) in plateaus.iter().enumerate() {
        if l != 0 {
            let s = &mut sums[l as usize];
            s.0 += (i % width) as f64;
            s.1 += (i / width) as f64;
            s.2 += 1;
        }
    }
    let mut best = vec![(f64::INFINITY, 0usize); count as usize + 1];
    for (i, &l) in plateaus.iter().enumerate() {
        if l != 0 {
            let s = sums[l as usize];
            let (cx, cy) = (s.0 / s.2 as f64, s.1 / s.2 as f64);
            let d2 = ((i % width) as f64 - cx).powi(2) + ((i / width) as f64 - cy).powi(2);
            if d2 < best[l as usize].0 {
                best[l as usize] = (d2, i);
            }
        }
    }
    let mut peaks: Vec<usize> = best[1..].iter().map(|&(_, i)| i).collect();
    peaks.sort_by(|&a, &b| distance[b].total_cmp(&distance[a]).then(a.cmp(&b)));

    // Non-maximum suppression on a grid of r-sized cells.
    let mut grid: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
    let mut out = vec![0u32; distance.len()];
    let mut n = 0u32;
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
            n += 1;
            out[i] = n;
        }
    }

    // Components without a marker get one at their highest pixel.
    let (components, ncomp) = label(mask, width, height, Connectivity::Four);
    let mut seeded = vec![false; ncomp as usize + 1];
    let mut highest = vec![(f32::NEG_INFINITY, 0usize); ncomp as usize + 1];
    for (i, &c) in components.iter().enumerate() {
        if c != 0 {
            seeded[c as usize] |= out[i] != 0;
            if distance[i] > highest[c as usize].0 {
                highest[c as usize] = (distance[i], i);
            }
        }
    }
    for c in 1..=ncomp as usize {
        if !seeded[c] {
            n += 1;
            out[highest[c].1] = n;
        }
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_filter_matches_naive() {
        let (w, h) = (17, 11);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 7919) % 101) as f32).collect();
        for r in [1usize, 2, 5] {
            let fast = max_filter(&src, w, h, r);
            for y in 0..h {
                for x in 0..w {
                    let mut m = f32::NEG_INFINITY;
                    for sy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for sx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            m = m.max(src[sy * w + sx]);
                        }
                    }
                    assert_eq!(fast[y * w + x], m, "r {r} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn one_marker_per_plateau_and_per_component() {
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
    }
}
