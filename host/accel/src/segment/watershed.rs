//! Marker-based watershed by priority flood on the distance map, restricted
//! to the foreground: pixels far from the background flood first, so the
//! basins of two touching cells meet at the neck between them.
//!
//! The priority queue is a bucket queue over the distance quantised to
//! 1/8 pixel (linear time); within a bucket, first in first out, so ties
//! grow evenly from every marker.

use super::label::Connectivity;

/// Quantisation of the distance for the bucket queue, in levels per pixel.
pub const LEVELS_PER_PIXEL: f32 = 8.0;
/// Upper bound on the number of buckets.
pub const MAX_BUCKETS: usize = 1 << 16;

/// Floods `markers` (0 = unlabelled) over the pixels where `mask` is set,
/// highest `distance` first. Foreground pixels that no marker reaches stay 0.
pub fn watershed(distance: &[f32], mask: &[bool], markers: &[u32], width: usize, height: usize) -> Vec<u32> {
    assert_eq!(distance.len(), width * height);
    // At most MAX_BUCKETS levels: huge distances (a mask with no background
    // reports 1e10) get a coarser step instead of a huge queue.
    let dmax = distance.iter().zip(mask).filter(|(_, &m)| m).map(|(&d, _)| d).fold(0f32, f32::max).min(1e10);
    let per_pixel = LEVELS_PER_PIXEL.min(MAX_BUCKETS as f32 / dmax.max(1.0));
    let level = |d: f32| ((d.clamp(0.0, dmax) * per_pixel) as usize).min(MAX_BUCKETS);
    let top = level(dmax);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); top + 1];
    let mut labels: Vec<u32> = markers.iter().zip(mask).map(|(&m, &f)| if f { m } else { 0 }).collect();
    for (i, &l) in labels.iter().enumerate() {
        if l != 0 {
            buckets[level(distance[i]).min(top)].push(i as u32);
        }
    }
    let mut current = top;
    loop {
        let mut head = 0;
        while head < buckets[current].len() {
            let i = buckets[current][head] as usize;
            head += 1;
            let l = labels[i];
            let (x, y) = (i % width, i / width);
            let neighbours = [
                (x > 0, i.wrapping_sub(1)),
                (x + 1 < width, i + 1),
                (y > 0, i.wrapping_sub(width)),
                (y + 1 < height, i + width),
            ];
            for (inside, j) in neighbours {
                if inside && mask[j] && labels[j] == 0 {
                    labels[j] = l;
                    buckets[level(distance[j]).min(current)].push(j as u32);
                }
            }
        }
        buckets[current] = Vec::new();
        if current == 0 {
            break;
        }
        current -= 1;
    }
    labels
}

/// Labels whole the foreground components that no marker reached (they had
/// no seed, e.g. suppressed by a stronger one across the background),
/// numbering them from `next + 1`; returns the new highest label.
pub fn label_unreached(labels: &mut [u32], mask: &[bool], width: usize, height: usize, next: u32) -> u32 {
    let unreached: Vec<bool> = labels.iter().zip(mask).map(|(&l, &m)| m && l == 0).collect();
    if !unreached.contains(&true) {
        return next;
    }
    let (extra, n) = super::label::label(&unreached, width, height, Connectivity::Four);
    for (l, &e) in labels.iter_mut().zip(&extra) {
        if e != 0 {
            *l = next + e;
        }
    }
    next + n
}

#[cfg(test)]
mod tests {
    use super::super::edt::distance_transform;
    use super::*;

    #[test]
    fn all_foreground_floods_from_its_markers() {
        // No background: the distance transform reports 1e10 everywhere.
        let (w, h) = (30, 20);
        let mask = vec![true; w * h];
        let d = distance_transform(&mask, w, h);
        let mut markers = vec![0u32; w * h];
        markers[10 * w + 5] = 1;
        markers[10 * w + 25] = 2;
        let labels = watershed(&d, &mask, &markers, w, h);
        assert!(labels.iter().all(|&l| l != 0));
        assert_eq!(labels[10 * w], 1);
        assert_eq!(labels[10 * w + 29], 2);
    }

    #[test]
    fn splits_two_touching_discs_at_the_neck() {
        let (w, h) = (60, 40);
        let (c1, c2, r) = ((20.0f32, 20.0f32), (38.0f32, 20.0f32), 11.0f32);
        let inside = |x: f32, y: f32, c: (f32, f32)| (x - c.0).powi(2) + (y - c.1).powi(2) <= r * r;
        let mask: Vec<bool> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                inside(x, y, c1) || inside(x, y, c2)
            })
            .collect();
        let d = distance_transform(&mask, w, h);
        let mut markers = vec![0u32; w * h];
        markers[20 * w + 20] = 1;
        markers[20 * w + 38] = 2;
        let labels = watershed(&d, &mask, &markers, w, h);
        // Every foreground pixel is labelled, the background is not.
        for i in 0..w * h {
            assert_eq!(labels[i] != 0, mask[i], "pixel {i}");
        }
        // Each side of the neck (x = 29) belongs to its own disc.
        for i in 0..w * h {
            if mask[i] {
                let x = i % w;
                if x <= 27 {
                    assert_eq!(labels[i], 1, "pixel {i}");
                } else if x >= 31 {
                    assert_eq!(labels[i], 2, "pixel {i}");
                }
            }
        }
        let a1 = labels.iter().filter(|&&l| l == 1).count() as i64;
        let a2 = labels.iter().filter(|&&l| l == 2).count() as i64;
        assert!((a1 - a2).abs() < 20, "areas {a1} {a2}");
    }
}
