//! Boundary tracing of a binary mask into closed lattice contours.
//!
//! Every edge between a foreground pixel and the background (or the image
//! border) becomes a directed unit edge with the foreground on its right
//! (screen coordinates, y down), so outer boundaries run clockwise and holes
//! counter-clockwise. Edges are then chained into loops; where two pixels
//! touch only at a corner, the chain turns left, which keeps diagonal
//! foreground pixels in one shape (8-connected foreground, 4-connected
//! background), as potrace and most tracers do.

/// A closed boundary: lattice points (pixel corners), one per unit step;
/// the last point connects back to the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Contour {
    pub points: Vec<[i32; 2]>,
    /// Signed area in pixels: positive for outer boundaries, negative for holes.
    pub area: i64,
}

const E: u8 = 0;
const S: u8 = 1;
const W: u8 = 2;
const N: u8 = 3;
const STEP: [[i32; 2]; 4] = [[1, 0], [0, 1], [-1, 0], [0, -1]];

/// Traces every boundary of `mask` (row-major, `width * height`, true =
/// foreground). Contours come in raster order of their first point.
pub fn trace(mask: &[bool], width: usize, height: usize) -> Vec<Contour> {
    assert_eq!(mask.len(), width * height);
    let vw = width + 1;
    let mut out_edges = vec![0u8; vw * (height + 1)];
    let fg = |x: isize, y: isize| -> bool {
        x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height && mask[y as usize * width + x as usize]
    };
    for y in 0..height {
        for x in 0..width {
            if !mask[y * width + x] {
                continue;
            }
            let (xi, yi) = (x as isize, y as isize);
            if !fg(xi, yi - 1) {
                out_edges[y * vw + x] |= 1 << E;
            }
            if !fg(xi + 1, yi) {
                out_edges[y * vw + x + 1] |= 1 << S;
            }
            if !fg(xi, yi + 1) {
                out_edges[(y + 1) * vw + x + 1] |= 1 << W;
            }
            if !fg(xi - 1, yi) {
                out_edges[(y + 1) * vw + x] |= 1 << N;
            }
        }
    }

    let mut contours = Vec::new();
    for start in 0..out_edges.len() {
        while out_edges[start] != 0 {
            let start_dir = out_edges[start].trailing_zeros() as u8;
            let (sx, sy) = ((start % vw) as i32, (start / vw) as i32);
            let mut points = vec![[sx, sy]];
            let mut cur = start;
            let mut dir = start_dir;
            let mut area2: i64 = 0;
            loop {
                out_edges[cur] &= !(1 << dir);
                let [x, y] = [(cur % vw) as i32, (cur / vw) as i32];
                let [nx, ny] = [x + STEP[dir as usize][0], y + STEP[dir as usize][1]];
                area2 += x as i64 * ny as i64 - nx as i64 * y as i64;
                cur = ny as usize * vw + nx as usize;
                // Left turn first (joins diagonal neighbours), then straight, then right.
                let available = out_edges[cur] | if cur == start { 1 << start_dir } else { 0 };
                let next = [(dir + 3) % 4, dir, (dir + 1) % 4]
                    .into_iter()
                    .find(|&d| available & (1 << d) != 0)
                    .expect("every boundary vertex has an outgoing edge");
                if cur == start && next == start_dir {
                    break;
                }
                points.push([nx, ny]);
                dir = next;
            }
            contours.push(Contour { points, area: area2 / 2 });
        }
    }
    contours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        (rows.iter().flat_map(|r| r.bytes().map(|b| b == b'#')).collect(), w, h)
    }

    #[test]
    fn single_pixel_is_a_clockwise_unit_square() {
        let (m, w, h) = mask(&["...", ".#.", "..."]);
        let c = trace(&m, w, h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].points, vec![[1, 1], [2, 1], [2, 2], [1, 2]]);
        assert_eq!(c[0].area, 1);
    }

    #[test]
    fn ring_has_an_outer_boundary_and_a_hole() {
        let (m, w, h) = mask(&["#####", "#...#", "#...#", "#####"]);
        let c = trace(&m, w, h);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].area, 20);
        assert_eq!(c[1].area, -6);
        assert_eq!(c[0].points.len(), 18);
        assert_eq!(c[1].points.len(), 10);
    }

    #[test]
    fn diagonal_pixels_join_into_one_shape() {
        let (m, w, h) = mask(&["#.", ".#"]);
        let c = trace(&m, w, h);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].area, 2);
        assert_eq!(c[0].points.len(), 8);
    }

    #[test]
    fn touches_the_border() {
        let (m, w, h) = mask(&["##", "##"]);
        let c = trace(&m, w, h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].area, 4);
    }

    #[test]
    fn areas_add_up_to_the_pixel_count() {
        let (m, w, h) = mask(&["..####....#", ".#....#..##", ".#.##.#....", ".#....#.#.#", "..####...#."]);
        let c = trace(&m, w, h);
        let total: i64 = c.iter().map(|c| c.area).sum();
        assert_eq!(total, m.iter().filter(|&&b| b).count() as i64);
    }
}
