//! Tiled 2x upscaling through a model: splits a planar float image into
//! tiles with a context margin, runs a caller-supplied 2x function on
//! batches of equal-sized tiles, and stitches the tiles' centres back.
//!
//! Kept free of the host: the model call is a closure, so native unit
//! tests check the tiling against the same function run on the whole
//! image. Pixels outside the image are the nearest edge pixel (replicate),
//! so the result does not depend on the tile size as long as the margin
//! covers the model's receptive field.

/// A planar float image: `channels` planes of `height` rows of `width`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub channels: usize,
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Planes {
    pub fn new(channels: usize, width: usize, height: usize) -> Self {
        Self { channels, width, height, data: vec![0.0; channels * width * height] }
    }

    /// The sample at (x, y) of channel c, with coordinates clamped to the image.
    fn clamped(&self, c: usize, x: isize, y: isize) -> f32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// One tile: the core region it is responsible for, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Cores of at most `tile` x `tile` covering a `width` x `height` image
/// exactly once, row by row. Edge tiles are smaller.
pub fn plan(width: usize, height: usize, tile: usize) -> Vec<Tile> {
    assert!(tile > 0, "tile size must be positive");
    let mut tiles = Vec::new();
    for y in (0..height).step_by(tile) {
        for x in (0..width).step_by(tile) {
            tiles.push(Tile { x, y, width: tile.min(width - x), height: tile.min(height - y) });
        }
    }
    tiles
}

/// What a batch call gets: `n` tiles of `channels` x `height` x `width`, NCHW.
pub struct Batch<'a> {
    pub n: usize,
    pub channels: usize,
    pub width: usize,
    pub height: usize,
    pub data: &'a [f32],
}

/// Upscales `image` 2x: tiles of `tile` source pixels with `margin` pixels
/// of context on each side, at most `max_batch` tiles of one shape per call
/// of `run`, which must return `n x channels x 2h x 2w` values. `progress`
/// gets the share of tiles done.
pub fn upscale2x<E>(
    image: &Planes,
    tile: usize,
    margin: usize,
    max_batch: usize,
    mut run: impl FnMut(&Batch) -> Result<Vec<f32>, E>,
    mut progress: impl FnMut(f32),
) -> Result<Planes, TileError<E>> {
    let (c, w2, h2) = (image.channels, image.width * 2, image.height * 2);
    let mut out = Planes::new(c, w2, h2);
    let tiles = plan(image.width, image.height, tile);
    // Equal shapes batch together; at most three other shapes exist (edges).
    let mut groups: Vec<((usize, usize), Vec<Tile>)> = Vec::new();
    for t in &tiles {
        match groups.iter_mut().find(|(shape, _)| *shape == (t.width, t.height)) {
            Some((_, g)) => g.push(*t),
            None => groups.push(((t.width, t.height), vec![*t])),
        }
    }
    let mut done = 0;
    for ((cw, ch), group) in &groups {
        let (bw, bh) = (cw + 2 * margin, ch + 2 * margin);
        for chunk in group.chunks(max_batch.max(1)) {
            let mut input = Vec::with_capacity(chunk.len() * c * bw * bh);
            for t in chunk {
                for ch_i in 0..c {
                    for y in 0..bh {
                        let sy = t.y as isize + y as isize - margin as isize;
                        for x in 0..bw {
                            input.push(image.clamped(ch_i, t.x as isize + x as isize - margin as isize, sy));
                        }
                    }
                }
            }
            let batch = Batch { n: chunk.len(), channels: c, width: bw, height: bh, data: &input };
            let result = run(&batch).map_err(TileError::Model)?;
            let expected = chunk.len() * c * 4 * bw * bh;
            if result.len() != expected {
                return Err(TileError::Shape(format!(
                    "{} tiles of {c}x{bh}x{bw} gave {} values, expected {expected} (2x each side)",
                    chunk.len(),
                    result.len()
                )));
            }
            let (ow, oh) = (2 * bw, 2 * bh);
            for (k, t) in chunk.iter().enumerate() {
                for ch_i in 0..c {
                    let plane = &result[(k * c + ch_i) * oh * ow..][..oh * ow];
                    for y in 0..2 * t.height {
                        let src = &plane[(2 * margin + y) * ow + 2 * margin..][..2 * t.width];
                        let dst_start = (ch_i * h2 + 2 * t.y + y) * w2 + 2 * t.x;
                        out.data[dst_start..dst_start + 2 * t.width].copy_from_slice(src);
                    }
                }
            }
            done += chunk.len();
            progress(done as f32 / tiles.len() as f32);
        }
    }
    Ok(out)
}

/// Why a tiled upscale failed.
#[derive(Debug, PartialEq)]
pub enum TileError<E> {
    /// The model call failed.
    Model(E),
    /// The model answered with the wrong number of values.
    Shape(String),
}

/// Interleaved 8-bit pixels (`stride` bytes each, the first `channels` used)
/// to planes in [0, 1].
pub fn planes_from_u8(pixels: &[u8], width: usize, height: usize, stride: usize, channels: usize) -> Planes {
    let mut p = Planes::new(channels, width, height);
    for c in 0..channels {
        for (i, px) in pixels.chunks_exact(stride).enumerate() {
            p.data[c * width * height + i] = px[c] as f32 / 255.0;
        }
    }
    p
}

/// Planes back to interleaved 8-bit pixels, clamped and rounded.
pub fn planes_to_u8(p: &Planes) -> Vec<u8> {
    let n = p.width * p.height;
    let mut out = vec![0u8; n * p.channels];
    for c in 0..p.channels {
        for i in 0..n {
            out[i * p.channels + c] = (p.data[c * n + i].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_pixel_once() {
        for (w, h, t) in [(1, 1, 128), (128, 128, 128), (300, 129, 128), (7, 50, 16)] {
            let mut hits = vec![0u8; w * h];
            for tile in plan(w, h, t) {
                assert!(tile.width <= t && tile.height <= t && tile.width > 0 && tile.height > 0);
                for y in tile.y..tile.y + tile.height {
                    for x in tile.x..tile.x + tile.width {
                        hits[y * w + x] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&n| n == 1), "{w}x{h} tiles of {t}");
        }
    }

    /// A stand-in with a 5x5 receptive field: a 3x3 box blur twice, then
    /// each pixel repeated 2x2. Local like a conv net, checkable exactly.
    fn blur_then_double(b: &Batch) -> Result<Vec<f32>, String> {
        let (w, h) = (b.width, b.height);
        let blur = |src: &[f32]| {
            let mut out = vec![0.0; w * h];
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0;
                    for dy in -1isize..=1 {
                        for dx in -1isize..=1 {
                            let (xx, yy) = (x as isize + dx, y as isize + dy);
                            if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                                s += src[yy as usize * w + xx as usize];
                            }
                        }
                    }
                    out[y * w + x] = s / 9.0;
                }
            }
            out
        };
        let mut out = Vec::new();
        for plane in b.data.chunks_exact(w * h) {
            let p = blur(&blur(plane));
            for y in 0..2 * h {
                for x in 0..2 * w {
                    out.push(p[(y / 2) * w + x / 2]);
                }
            }
        }
        Ok(out)
    }

    fn picture(c: usize, w: usize, h: usize) -> Planes {
        let mut p = Planes::new(c, w, h);
        for (i, v) in p.data.iter_mut().enumerate() {
            *v = ((i * 7919) % 251) as f32 / 250.0;
        }
        p
    }

    #[test]
    fn tiled_equals_whole_image_when_the_margin_covers_the_receptive_field() {
        let image = picture(3, 70, 45);
        let (whole, mut calls) = (upscale2x(&image, 1000, 4, 1, blur_then_double, |_| {}).unwrap(), 0);
        assert_eq!((whole.width, whole.height, whole.channels), (140, 90, 3));
        let mut shares = Vec::new();
        let tiled = upscale2x(
            &image,
            16,
            4,
            3,
            |b| {
                calls += 1;
                assert!(b.n <= 3 && b.width <= 24 && b.height <= 24);
                blur_then_double(b)
            },
            |f| shares.push(f),
        )
        .unwrap();
        // 5 x 3 tiles: shapes 16x16 (8), 6x16 (2), 16x13 (4), 6x13 (1) -> 3 + 1 + 2 + 1 calls.
        assert_eq!(calls, 7);
        assert_eq!(shares.last().copied(), Some(1.0));
        let worst = whole.data.iter().zip(&tiled.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "tiled differs from whole by {worst}");
    }

    #[test]
    fn too_small_a_margin_shows_seams() {
        let image = picture(1, 40, 40);
        let whole = upscale2x(&image, 1000, 4, 1, blur_then_double, |_| {}).unwrap();
        let tiled = upscale2x(&image, 10, 0, 4, blur_then_double, |_| {}).unwrap();
        assert_ne!(whole, tiled);
    }

    #[test]
    fn a_wrong_output_size_is_an_error() {
        let image = picture(3, 20, 20);
        let err = upscale2x(&image, 8, 2, 2, |b| Ok::<_, String>(vec![0.0; b.data.len()]), |_| {}).unwrap_err();
        assert!(matches!(err, TileError::Shape(ref m) if m.contains("expected")), "{err:?}");
        let err = upscale2x(&image, 8, 2, 2, |_| Err::<Vec<f32>, _>("busy".to_owned()), |_| {}).unwrap_err();
        assert_eq!(err, TileError::Model("busy".to_owned()));
    }

    #[test]
    fn u8_round_trip() {
        let rgba: Vec<u8> = (0..4 * 6).map(|i| (i * 11) as u8).collect();
        let p = planes_from_u8(&rgba, 3, 2, 4, 3);
        assert_eq!((p.channels, p.width, p.height), (3, 3, 2));
        let back = planes_to_u8(&p);
        let rgb: Vec<u8> = rgba.chunks_exact(4).flat_map(|px| px[..3].to_vec()).collect();
        assert_eq!(back, rgb);
    }
}
