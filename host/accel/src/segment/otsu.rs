//! Otsu's threshold on a 256-bin histogram spanning the data's range
//! (scikit-image's `threshold_otsu` with its defaults).

const BINS: usize = 256;

/// The Otsu threshold of `values`; foreground is `value > threshold`.
/// A constant image returns its value (so nothing is foreground).
pub fn threshold(values: &[f32]) -> f32 {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if values.is_empty() || hi <= lo {
        return lo;
    }
    let scale = BINS as f32 / (hi - lo);
    let mut hist = [0u64; BINS];
    for &v in values {
        let bin = (((v - lo) * scale) as usize).min(BINS - 1);
        hist[bin] += 1;
    }
    let bin_width = (hi - lo) / BINS as f32;
    let centre = |i: usize| lo + (i as f32 + 0.5) * bin_width;

    // Class weights and means below and above each split, as f64.
    let total: f64 = hist.iter().map(|&c| c as f64).sum();
    let total_mass: f64 = hist.iter().enumerate().map(|(i, &c)| c as f64 * centre(i) as f64).sum();
    let (mut w0, mut m0) = (0f64, 0f64);
    let (mut best, mut best_split) = (-1f64, 0usize);
    for (i, &count) in hist.iter().enumerate().take(BINS - 1) {
        w0 += count as f64;
        m0 += count as f64 * centre(i) as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let diff = m0 / w0 - (total_mass - m0) / w1;
        let between = w0 * w1 * diff * diff;
        if between > best {
            best = between;
            best_split = i;
        }
    }
    centre(best_split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_bimodal_image_between_its_modes() {
        // Two noisy modes, around 40 and 180, in unequal amounts.
        let mut state = 12345u64;
        let mut noise = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 21) as f32 - 10.0
        };
        let mut values: Vec<f32> = (0..7000).map(|_| 40.0 + noise()).collect();
        values.extend((0..3000).map(|_| 180.0 + noise()));
        let t = threshold(&values);
        assert!(t > 50.0 && t < 170.0, "threshold {t}");
        let fg = values.iter().filter(|&&v| v > t).count();
        assert_eq!(fg, 3000);
    }

    #[test]
    fn constant_image_has_no_foreground() {
        let values = vec![7.0f32; 100];
        let t = threshold(&values);
        assert!(values.iter().all(|&v| v <= t));
    }
}
