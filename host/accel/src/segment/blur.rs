//! Separable gaussian blur (nearest-edge borders, kernel truncated at 4 sigma,
//! as scikit-image's `gaussian`), rows in parallel.

use rayon::prelude::*;

/// Rows per parallel task: big enough that a task is worth scheduling.
const ROWS_PER_TASK: usize = 32;

/// The normalised 1-D kernel for `sigma` (radius `round(4 sigma)`).
pub fn kernel(sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as usize;
    let mut k: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let x = i as f32 - radius as f32;
            (-0.5 * x * x / (sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Blurs `src` (row-major, `width` x `height`) with a gaussian of `sigma`
/// pixels. `sigma <= 0` returns a copy.
pub fn gaussian(src: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    assert_eq!(src.len(), width * height);
    if sigma <= 0.0 || src.is_empty() {
        return src.to_vec();
    }
    let k = kernel(sigma);
    let r = k.len() / 2;

    // Horizontal pass: each row padded with its edge values, then convolved.
    let mut tmp = vec![0f32; src.len()];
    tmp.par_chunks_mut(width * ROWS_PER_TASK).zip(src.par_chunks(width * ROWS_PER_TASK)).for_each(
        |(out_rows, in_rows)| {
            let mut padded = vec![0f32; width + 2 * r];
            for (out, row) in out_rows.chunks_mut(width).zip(in_rows.chunks(width)) {
                padded[..r].fill(row[0]);
                padded[r..r + width].copy_from_slice(row);
                padded[r + width..].fill(row[width - 1]);
                out.fill(0.0);
                for (j, &w) in k.iter().enumerate() {
                    for (o, p) in out.iter_mut().zip(&padded[j..j + width]) {
                        *o += w * p;
                    }
                }
            }
        },
    );

    // Vertical pass: each output row is a weighted sum of whole input rows
    // (contiguous, so the inner loop vectorises).
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(width * ROWS_PER_TASK).enumerate().for_each(|(chunk, out_rows)| {
        for (i, o) in out_rows.chunks_mut(width).enumerate() {
            let y = chunk * ROWS_PER_TASK + i;
            o.fill(0.0);
            for (j, &w) in k.iter().enumerate() {
                let sy = (y + j).saturating_sub(r).min(height - 1);
                let row = &tmp[sy * width..(sy + 1) * width];
                for (a, b) in o.iter_mut().zip(row) {
                    *a += w * b;
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        let k = kernel(1.5);
        assert_eq!(k.len(), 13);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for i in 0..k.len() / 2 {
            assert!((k[i] - k[k.len() - 1 - i]).abs() < 1e-7);
        }
    }

    #[test]
    fn blur_keeps_constants_and_mass_of_an_impulse() {
        let (w, h) = (40, 70);
        let flat = vec![3.0f32; w * h];
        assert!(gaussian(&flat, w, h, 2.0).iter().all(|v| (v - 3.0).abs() < 1e-4));
        let mut impulse = vec![0f32; w * h];
        impulse[35 * w + 20] = 1.0;
        let out = gaussian(&impulse, w, h, 2.0);
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        // Peak stays in place and the response is symmetric.
        let at = |x: usize, y: usize| out[y * w + x];
        assert!(at(20, 35) > at(21, 35));
        assert!((at(18, 35) - at(22, 35)).abs() < 1e-6);
        assert!((at(20, 33) - at(20, 37)).abs() < 1e-6);
    }
}
