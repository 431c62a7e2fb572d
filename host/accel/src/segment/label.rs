//! Connected-component labelling of a binary mask (4- or 8-connected),
//! by scanline flood fill: labels 1..=N in raster order of first pixels.

/// Neighbourhood used to connect pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    Four,
    Eight,
}

/// Labels the `true` pixels of `mask`; returns the labels and their count.
pub fn label(mask: &[bool], width: usize, height: usize, connectivity: Connectivity) -> (Vec<u32>, u32) {
    assert_eq!(mask.len(), width * height);
    let mut labels = vec![0u32; mask.len()];
    let mut next = 0u32;
    let mut stack: Vec<usize> = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            for_neighbours(x, y, width, height, connectivity, |j| {
                if mask[j] && labels[j] == 0 {
                    labels[j] = next;
                    stack.push(j);
                }
            });
        }
    }
    (labels, next)
}

/// Calls `f` with the index of each in-bounds neighbour of `(x, y)`.
#[inline]
pub fn for_neighbours(
    x: isize,
    y: isize,
    width: usize,
    height: usize,
    connectivity: Connectivity,
    mut f: impl FnMut(usize),
) {
    const N4: [(isize, isize); 4] = [(-1, 0), (1, 0), (0, -1), (0, 1)];
    const N8: [(isize, isize); 8] = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, -1), (-1, 1), (1, 1)];
    let offsets: &[(isize, isize)] = match connectivity {
        Connectivity::Four => &N4,
        Connectivity::Eight => &N8,
    };
    for &(dx, dy) in offsets {
        let (nx, ny) = (x + dx, y + dy);
        if nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height {
            f(ny as usize * width + nx as usize);
        }
    }
}

/// Drops labelled objects smaller than `min_area` pixels and renumbers the
/// rest 1..=N in order of their old labels; returns N.
pub fn drop_small_and_relabel(labels: &mut [u32], min_area: u32) -> u32 {
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut area = vec![0u32; max + 1];
    for &l in labels.iter() {
        area[l as usize] += 1;
    }
    let mut map = vec![0u32; max + 1];
    let mut n = 0;
    for l in 1..=max {
        if area[l] > 0 && area[l] >= min_area {
            n += 1;
            map[l] = n;
        }
    }
    for l in labels.iter_mut() {
        *l = map[*l as usize];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_from(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let w = rows[0].len();
        (rows.iter().flat_map(|r| r.bytes().map(|b| b == b'#')).collect(), w, rows.len())
    }

    #[test]
    fn labels_components_with_either_connectivity() {
        let (mask, w, h) = mask_from(&[
            "##..#", //
            "##...", //
            "..#..", //
            "....#", //
            "###.#", //
        ]);
        let (l4, n4) = label(&mask, w, h, Connectivity::Four);
        assert_eq!(n4, 5);
        assert_eq!(l4[0], 1);
        assert_eq!(l4[w + 1], 1);
        assert_eq!(l4[4], 2);
        assert_eq!(l4[2 * w + 2], 3);
        assert_eq!(l4[3 * w + 4], 4);
        assert_eq!(l4[4 * w + 4], 4);
        assert_eq!(l4[4 * w], 5);
        assert_eq!(l4[2], 0);
        let (l8, n8) = label(&mask, w, h, Connectivity::Eight);
        // The diagonal pixel joins the top-left block.
        assert_eq!(n8, 4);
        assert_eq!(l8[2 * w + 2], l8[0]);
    }

    #[test]
    fn drops_small_objects_and_renumbers() {
        let mut labels = vec![0, 3, 3, 3, 7, 0, 5, 5, 5, 5];
        let n = drop_small_and_relabel(&mut labels, 3);
        assert_eq!(n, 2);
        assert_eq!(labels, vec![0, 1, 1, 1, 0, 0, 2, 2, 2, 2]);
    }
}
