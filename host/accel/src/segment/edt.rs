//! Exact Euclidean distance transform (Felzenszwalb & Huttenlocher, 2012):
//! two passes of the 1-D squared-distance transform (lower envelope of
//! parabolas), rows then columns, each line in parallel.

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
        let fq = f[q] as f64 + (q * q) as f64;
        let mut s;
        loop {
            let p = v[k];
            s = ((fq - (f[p] as f64 + (p * p) as f64)) / (2.0 * (q - p) as f64)) as f32;
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

/// Transforms every `width`-long line of `data` in place.
fn transform_lines(data: &mut [f32], width: usize) {
    data.par_chunks_mut(width * LINES_PER_TASK).for_each(|lines| {
        let mut f = vec![0f32; width];
        let mut v = vec![0usize; width];
        let mut z = vec![0f32; width + 1];
        for line in lines.chunks_mut(width) {
            if line.iter().all(|&x| x >= INF) {
                continue;
            }
            f.copy_from_slice(line);
            // Start the envelope at the first finite sample.
            let first = f.iter().position(|&x| x < INF).unwrap_or(0);
            dt_1d(&f, first, line, &mut v, &mut z);
        }
    });
}

fn transpose(src: &[f32], width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    const B: usize = 32;
    out.par_chunks_mut(height * B).enumerate().for_each(|(bx, cols)| {
        let x0 = bx * B;
        let x1 = (x0 + B).min(width);
        for y0 in (0..height).step_by(B) {
            let y1 = (y0 + B).min(height);
            for x in x0..x1 {
                let row = &mut cols[(x - x0) * height..(x - x0 + 1) * height];
                for y in y0..y1 {
                    row[y] = src[y * width + x];
                }
            }
        }
    });
    out
}

/// Euclidean distance from every foreground pixel (`mask[i] == true`) to
/// the nearest background pixel; 0 on the background. A mask with no
/// background gets a large finite distance everywhere (1e10).
pub fn distance_transform(mask: &[bool], width: usize, height: usize) -> Vec<f32> {
    assert_eq!(mask.len(), width * height);
    let mut g: Vec<f32> = mask.iter().map(|&m| if m { INF } else { 0.0 }).collect();
    transform_lines(&mut g, width);
    let mut t = transpose(&g, width, height);
    transform_lines(&mut t, height);
    let g = transpose(&t, height, width);
    g.into_iter().map(|v| if v >= INF { 1e10 } else { v.sqrt() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(mask: &[bool], w: usize, h: usize) -> Vec<f32> {
        let bg: Vec<(i64, i64)> =
            (0..w * h).filter(|&i| !mask[i]).map(|i| ((i % w) as i64, (i / w) as i64)).collect();
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
