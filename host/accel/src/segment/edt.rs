//! Exact Euclidean distance transform (Felzenszwalb & Huttenlocher, 2012),
//! separable: first the distance to the nearest background pixel in the
//! same column (two sweeps down and up the image, a whole row at a time so
//! they vectorise), then along each row the lower envelope of parabolas
//! (the 1-D squared-distance transform), rows in parallel.

use rayon::prelude::*;

const INF: f32 = 1e20;
const LINES_PER_TASK: usize = 16;

/// 1-D squared distance transform of `f` into `d`; `v` and `z` are scratch
/// (`n` and `n + 1` long). `f[first]` must be finite; infinite samples (no
/// background in reach yet) add no parabola to the lower envelope.
fn dt_1d(f: &[f32], first: usize, d: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    let mut k = 0usize;
    v[0] = first;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    for q in first + 1..n {
        if f[q] >= INF {
            continue;
        }
        // f holds squared integer distances: the numerator is exact in i64.
        let fq = f[q] as i64 + (q * q) as i64;
        let mut s;
        loop {
            let p = v[k];
            s = (fq - (f[p] as i64 + (p * p) as i64)) as f32 / (2 * (q - p)) as f32;
            if s <= z[k] {
                k -= 1; // z[0] is -inf, so k never underflows
            } else {
                break;
            }
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f32::INFINITY;
    }
    let mut k = 0usize;
    for (q, out) in d.iter_mut().enumerate().take(n) {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f32 - p as f32;
        *out = dq * dq + f[p];
    }
}

/// Transforms every `width`-long line of `data` (squared distances, INF
/// where unknown) in place.
fn transform_lines(data: &mut [f32], width: usize) {
    data.par_chunks_mut(width * LINES_PER_TASK).for_each(|lines| {
        let mut f = vec![0f32; width];
        let mut v = vec![0usize; width];
        let mut z = vec![0f32; width + 1];
        for line in lines.chunks_mut(width) {
            // Lines with no background in their column reach stay INF; lines
            // that are all background stay 0.
            let Some(first) = line.iter().position(|&x| x < INF) else { continue };
            if line.iter().all(|&x| x == 0.0) {
                continue;
            }
            f.copy_from_slice(line);
            dt_1d(&f, first, line, &mut v, &mut z);
        }
    });
}

/// Euclidean distance from every foreground pixel (`mask[i] == true`) to
/// the nearest background pixel; 0 on the background. A mask with no
/// background gets a large finite distance everywhere (1e10).
pub fn distance_transform(mask: &[bool], width: usize, height: usize) -> Vec<f32> {
    assert_eq!(mask.len(), width * height);
    // Column pass: distance (in rows) to the nearest background pixel above,
    // then below.
    let mut g = vec![0f32; mask.len()];
    for y in 0..height {
        let (done, rest) = g.split_at_mut(y * width);
        let row = &mut rest[..width];
        let m = &mask[y * width..(y + 1) * width];
        if y == 0 {
            for (d, &fg) in row.iter_mut().zip(m) {
                *d = if fg { INF } else { 0.0 };
            }
        } else {
            let above = &done[(y - 1) * width..];
            for ((d, &fg), &a) in row.iter_mut().zip(m).zip(above) {
                *d = if fg { (a + 1.0).min(INF) } else { 0.0 };
            }
        }
    }
    for y in (0..height.saturating_sub(1)).rev() {
        let (head, below) = g.split_at_mut((y + 1) * width);
        let row = &mut head[y * width..];
        for (d, &b) in row.iter_mut().zip(&below[..width]) {
            let c = b + 1.0;
            *d = if c < *d { c } else { *d };
        }
    }
    // Squared, then the row pass.
    for d in g.iter_mut() {
        *d = if *d >= INF { INF } else { *d * *d };
    }
    transform_lines(&mut g, width);
    g.into_iter().map(|v| if v >= INF { 1e10 } else { v.sqrt() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(mask: &[bool], w: usize, h: usize) -> Vec<f32> {
        let bg: Vec<(i64, i64)> = (0..w * h).filter(|&i| !mask[i]).map(|i| ((i % w) as i64, (i / w) as i64)).collect();
        (0..w * h)
            .map(|i| {
                if !mask[i] {
                    return 0.0;
                }
                let (x, y) = ((i % w) as i64, (i / w) as i64);
                let best = bg.iter().map(|&(bx, by)| (bx - x).pow(2) + (by - y).pow(2)).min();
                best.map_or(1e10, |d| (d as f32).sqrt())
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_on_random_masks() {
        let mut state = 99u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for trial in 0..60 {
            let w = 1 + (next() % 23) as usize;
            let h = 1 + (next() % 19) as usize;
            let density = [50, 80, 95, 99][trial % 4];
            let mask: Vec<bool> = (0..w * h).map(|_| next() % 100 < density).collect();
            let fast = distance_transform(&mask, w, h);
            let slow = brute_force(&mask, w, h);
            for i in 0..w * h {
                assert!(
                    (fast[i] - slow[i]).abs() < 1e-3 || (fast[i] >= 1e9 && slow[i] >= 1e9),
                    "trial {trial} {w}x{h} pixel {i}: {} vs {}",
                    fast[i],
                    slow[i]
                );
            }
        }
    }
}
