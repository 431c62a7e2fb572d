//! Per-object measurements of a label image: area, centroid, bounding box,
//! mean intensity (in the input's own sample units).

/// One segmented object.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its label in the label image (1..=N).
    pub id: u32,
    /// Pixels.
    pub area: u32,
    pub centroid_x: f32,
    pub centroid_y: f32,
    pub bbox_x: u32,
    pub bbox_y: u32,
    pub bbox_width: u32,
    pub bbox_height: u32,
    pub mean_intensity: f32,
}

/// Measures labels `1..=count` of `labels` over `intensity`.
pub fn measure(labels: &[u32], intensity: &[u16], width: usize, count: u32) -> Vec<Cell> {
    struct Acc {
        area: u64,
        sx: u64,
        sy: u64,
        si: u64,
        x0: usize,
        y0: usize,
        x1: usize,
        y1: usize,
    }
    let mut acc: Vec<Acc> = (0..=count)
        .map(|_| Acc { area: 0, sx: 0, sy: 0, si: 0, x0: usize::MAX, y0: usize::MAX, x1: 0, y1: 0 })
        .collect();
    for (i, (&l, &v)) in labels.iter().zip(intensity).enumerate() {
        if l == 0 {
            continue;
        }
        let (x, y) = (i % width, i / width);
        let a = &mut acc[l as usize];
        a.area += 1;
        a.sx += x as u64;
        a.sy += y as u64;
        a.si += v as u64;
        a.x0 = a.x0.min(x);
        a.y0 = a.y0.min(y);
        a.x1 = a.x1.max(x);
        a.y1 = a.y1.max(y);
    }
    acc.iter()
        .enumerate()
        .skip(1)
        .filter(|(_, a)| a.area > 0)
        .map(|(id, a)| Cell {
            id: id as u32,
            area: a.area as u32,
            centroid_x: (a.sx as f64 / a.area as f64) as f32,
            centroid_y: (a.sy as f64 / a.area as f64) as f32,
            bbox_x: a.x0 as u32,
            bbox_y: a.y0 as u32,
            bbox_width: (a.x1 - a.x0 + 1) as u32,
            bbox_height: (a.y1 - a.y0 + 1) as u32,
            mean_intensity: (a.si as f64 / a.area as f64) as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_area_centroid_bbox_and_mean() {
        // 6x4 image: object 1 is a 2x3 block at (1,0), object 2 one pixel at (5,3).
        let w = 6;
        let mut labels = vec![0u32; 24];
        let mut intensity = vec![0u16; 24];
        for y in 0..3 {
            for x in 1..3 {
                labels[y * w + x] = 1;
                intensity[y * w + x] = (10 * (x + y)) as u16;
            }
        }
        labels[3 * w + 5] = 2;
        intensity[3 * w + 5] = 700;
        let cells = measure(&labels, &intensity, w, 2);
        assert_eq!(cells.len(), 2);
        let c = &cells[0];
        assert_eq!((c.id, c.area), (1, 6));
        assert!((c.centroid_x - 1.5).abs() < 1e-6 && (c.centroid_y - 1.0).abs() < 1e-6);
        assert_eq!((c.bbox_x, c.bbox_y, c.bbox_width, c.bbox_height), (1, 0, 2, 3));
        // Intensities 10,20,20,30,30,40 -> mean 25.
        assert!((c.mean_intensity - 25.0).abs() < 1e-4);
        let c = &cells[1];
        assert_eq!((c.id, c.area, c.bbox_x, c.bbox_y, c.bbox_width, c.bbox_height), (2, 1, 5, 3, 1, 1));
        assert_eq!(c.mean_intensity, 700.0);
    }
}
