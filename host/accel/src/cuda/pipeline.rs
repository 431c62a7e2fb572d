//! The whole segmentation pipeline on one CUDA stream, each step a kernel
//! of `kernels.cu` working on device buffers: the image goes up once, the
//! labels and per-cell sums come back once.
//!
//! What crosses in between is small and says so: the candidate-peak list
//! (the plateau and spacing rules of `peaks::select` are sequential and run
//! on the host, so seeds match the CPU's exactly; their markers go back
//! up), and a few scalars the host loop needs (the candidate count, the
//! largest distance, which flood levels are occupied, and one
//! "changed" flag per batch of flood or relabel steps).
//!
//! Agreement with the CPU path: blur, Otsu, mask, distance transform,
//! seeds, the numbering of unreached components, the relabelling and the
//! measurements follow the CPU's arithmetic step by step (NVRTC with
//! `--fmad=false`). The watershed differs by design: the CPU floods with a
//! FIFO bucket queue, the GPU level by level with synchronous steps, so
//! pixels equidistant from two seeds may go to the other seed. The CUDA
//! test measures that as AP/IoU agreement with the CPU labels.

use super::context::Gpu;
use crate::segment::watershed::{LEVELS_PER_PIXEL, MAX_BUCKETS};
use crate::segment::{blur, measure::Cell, peaks, Foreground, SegmentOptions, Segmentation};
use crate::GrayImage;
use cudarc::driver::{CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Device bytes one job may hold at its peak, for admission (an upper
/// bound: about 80 bytes a pixel, plus the EDT's per-row scratch).
pub fn estimate_bytes(width: u32, height: u32, foreground: &Foreground) -> u64 {
    let n = width as u64 * height as u64;
    let probability = if matches!(foreground, Foreground::Probability(_)) { 4 * n } else { 0 };
    80 * n + 4 * height as u64 + probability + (1 << 20)
}

/// Threads per block for per-pixel kernels.
const BLOCK: u32 = 256;
/// Threads per block for per-row and per-column kernels (few threads in
/// all, so small blocks spread them over more multiprocessors).
const LINE_BLOCK: u32 = 32;
/// Flood or relabel steps per host check of the "changed" flag.
const STEPS_PER_CHECK: usize = 2;

fn grid(count: usize, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((count as u64).div_ceil(block as u64).max(1) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The reduction kernels (`minmax`, `masked_max`, `exclusive_scan`) run as
/// one block of exactly 1024 threads.
const ONE_BLOCK: LaunchConfig = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
const ONE_THREAD: LaunchConfig = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };

/// Names a failed driver call by its step.
trait Step<T> {
    fn step(self, what: &str) -> Result<T, String>;
}

impl<T> Step<T> for Result<T, DriverError> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("CUDA {what}: {e}"))
    }
}

/// Launches `kernel` on `stream` with the listed arguments.
macro_rules! launch {
    ($engine:expr, $stream:expr, $kernel:literal, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        let f = $engine.kernel($kernel);
        let mut b = $stream.launch_builder(f);
        $( b.arg($arg); )*
        // SAFETY: the argument list matches the kernel's signature in
        // kernels.cu (types and order), and every buffer is at least as
        // long as the kernel indexes (sizes chosen below).
        unsafe { b.launch($cfg) }.map(|_| ()).step($kernel)
    }};
}

fn alloc<T: cudarc::driver::DeviceRepr>(
    stream: &Arc<CudaStream>,
    len: usize,
    what: &str,
) -> Result<CudaSlice<T>, String> {
    // SAFETY: every buffer allocated here is fully written by a kernel
    // before it is read (or zeroed where the kernel accumulates).
    unsafe { stream.alloc::<T>(len.max(1)) }.step(what)
}

fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    len: usize,
    what: &str,
) -> Result<CudaSlice<T>, String> {
    stream.alloc_zeros::<T>(len.max(1)).step(what)
}

fn read_u32(stream: &Arc<CudaStream>, buf: &CudaSlice<u32>, what: &str) -> Result<u32, String> {
    Ok(stream.clone_dtoh(buf).step(what)?[0])
}

/// Runs the pipeline for one image (already checked by the caller).
pub fn segment(
    engine: &Gpu,
    stream: &Arc<CudaStream>,
    image: &GrayImage,
    options: &SegmentOptions,
    foreground: Foreground,
) -> Result<Segmentation, String> {
    let (w, h) = (image.width as usize, image.height as usize);
    let n = w * h;
    let (nu, wi, hi) = (n as u32, w as i32, h as i32);
    let samples = stream.clone_htod(&image.samples).step("upload of the image")?;

    // Foreground mask (and Otsu's threshold).
    let mut mask = alloc::<u8>(stream, n, "mask")?;
    let mut threshold_d = None;
    match foreground {
        Foreground::Otsu => {
            let mut smooth = alloc::<f32>(stream, n, "image as f32")?;
            launch!(engine, stream, "to_f32", grid(n, BLOCK), [&samples, &mut smooth, &nu])?;
            if options.sigma > 0.0 {
                let k = blur::kernel(options.sigma);
                let r = (k.len() / 2) as i32;
                let k_d = stream.clone_htod(&k).step("upload of the gaussian kernel")?;
                let mut tmp = alloc::<f32>(stream, n, "blur buffer")?;
                launch!(engine, stream, "blur_rows", grid(n, BLOCK), [&smooth, &mut tmp, &k_d, &r, &wi, &hi])?;
                launch!(engine, stream, "blur_cols", grid(n, BLOCK), [&tmp, &mut smooth, &k_d, &r, &wi, &hi])?;
            }
            let mut minmax = alloc::<f32>(stream, 2, "min/max")?;
            launch!(engine, stream, "minmax", ONE_BLOCK, [&smooth, &nu, &mut minmax])?;
            let mut hist = zeros::<u32>(stream, 256, "histogram")?;
            launch!(engine, stream, "histogram", grid(n, BLOCK), [&smooth, &nu, &minmax, &mut hist])?;
            let mut t = alloc::<f32>(stream, 1, "threshold")?;
            launch!(engine, stream, "otsu_threshold", ONE_THREAD, [&hist, &minmax, &mut t])?;
            launch!(engine, stream, "mask_above", grid(n, BLOCK), [&smooth, &t, &nu, &mut mask])?;
            threshold_d = Some(t);
        }
        Foreground::Probability(p) => {
            let p_d = stream.clone_htod(p).step("upload of the probability map")?;
            launch!(engine, stream, "mask_probability", grid(n, BLOCK), [&p_d, &nu, &mut mask])?;
        }
    }

    // Exact Euclidean distance transform, in place in `dist`.
    let mut dist = alloc::<f32>(stream, n, "distance")?;
    launch!(engine, stream, "edt_columns", grid(w, LINE_BLOCK), [&mask, &mut dist, &wi, &hi])?;
    {
        let mut f = alloc::<f32>(stream, n, "EDT scratch f")?;
        let mut v = alloc::<i32>(stream, n, "EDT scratch v")?;
        let mut z = alloc::<f32>(stream, h * (w + 1), "EDT scratch z")?;
        launch!(engine, stream, "edt_rows", grid(h, LINE_BLOCK), [&mut dist, &mut f, &mut v, &mut z, &wi, &hi])?;
    }
    launch!(engine, stream, "edt_sqrt", grid(n, BLOCK), [&mut dist, &nu])?;

    // Seeds: candidates on the device, the plateau and spacing rules on the host.
    let r = options.min_distance.max(1) as i32;
    let mut labels = zeros::<u32>(stream, n, "labels")?;
    let seeds = {
        let mut cand = alloc::<u32>(stream, n, "peak candidates")?;
        let mut cand_d = alloc::<f32>(stream, n, "peak distances")?;
        let mut count = zeros::<u32>(stream, 1, "candidate count")?;
        launch!(
            engine,
            stream,
            "peak_candidates",
            grid(n, BLOCK),
            [&dist, &mask, &wi, &hi, &r, &mut cand, &mut cand_d, &mut count]
        )?;
        let c = (read_u32(stream, &count, "candidate count")? as usize).min(n);
        let (at, d) = if c == 0 {
            (Vec::new(), Vec::new())
        } else {
            (
                stream.clone_dtoh(&cand.slice(0..c)).step("candidates")?,
                stream.clone_dtoh(&cand_d.slice(0..c)).step("candidate distances")?,
            )
        };
        let mut pairs: Vec<(usize, f32)> = at.iter().map(|&i| i as usize).zip(d).collect();
        pairs.sort_unstable_by_key(|p| p.0);
        let index: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let of = |i: usize| pairs[index.binary_search(&i).expect("a candidate")].1;
        let kept: Vec<u32> =
            peaks::select(&index, of, w, h, options.min_distance).into_iter().map(|i| i as u32).collect();
        let seeds = kept.len() as u32;
        if seeds > 0 {
            let at_d = stream.clone_htod(&kept).step("upload of the markers")?;
            launch!(engine, stream, "scatter_markers", grid(kept.len(), BLOCK), [&at_d, &seeds, &nu, &mut labels])?;
        }
        seeds
    };

    // Watershed, level by level from the top, skipping empty levels.
    let mut changed = zeros::<u32>(stream, 1, "changed flag")?;
    {
        let mut dmax_d = alloc::<f32>(stream, 1, "largest distance")?;
        launch!(engine, stream, "masked_max", ONE_BLOCK, [&dist, &mask, &nu, &mut dmax_d])?;
        let dmax = stream.clone_dtoh(&dmax_d).step("largest distance")?[0];
        let per_pixel = LEVELS_PER_PIXEL.min(MAX_BUCKETS as f32 / dmax.max(1.0));
        let top = ((dmax.clamp(0.0, dmax) * per_pixel) as usize).min(MAX_BUCKETS);
        let top_u = top as u32;
        let mut present = zeros::<u32>(stream, top + 1, "level presence")?;
        launch!(
            engine,
            stream,
            "level_presence",
            grid(n, BLOCK),
            [&dist, &mask, &nu, &dmax, &per_pixel, &top_u, &mut present]
        )?;
        let present = stream.clone_dtoh(&present).step("level presence")?;
        let mut other = alloc::<u32>(stream, n, "flood buffer")?;
        for level in (0..=top).rev() {
            if present[level] == 0 {
                continue;
            }
            let level = level as u32;
            loop {
                stream.memset_zeros(&mut changed).step("flag reset")?;
                for _ in 0..STEPS_PER_CHECK / 2 {
                    launch!(
                        engine,
                        stream,
                        "flood_step",
                        grid(n, BLOCK),
                        [&dist, &mask, &labels, &mut other, &wi, &hi, &dmax, &per_pixel, &level, &mut changed]
                    )?;
                    launch!(
                        engine,
                        stream,
                        "flood_step",
                        grid(n, BLOCK),
                        [&dist, &mask, &other, &mut labels, &wi, &hi, &dmax, &per_pixel, &level, &mut changed]
                    )?;
                }
                if read_u32(stream, &changed, "flood flag")? == 0 {
                    break;
                }
            }
        }
    }

    // Foreground no seed reached: whole components, numbered after the seeds.
    let mut comp = alloc::<u32>(stream, n, "unreached components")?;
    {
        let mut any = zeros::<u32>(stream, 1, "unreached flag")?;
        launch!(engine, stream, "unreached_init", grid(n, BLOCK), [&mask, &labels, &nu, &mut comp, &mut any])?;
        if read_u32(stream, &any, "unreached flag")? != 0 {
            let mut other = alloc::<u32>(stream, n, "component buffer")?;
            loop {
                stream.memset_zeros(&mut changed).step("flag reset")?;
                for _ in 0..STEPS_PER_CHECK / 2 {
                    launch!(
                        engine,
                        stream,
                        "unreached_step",
                        grid(n, BLOCK),
                        [&comp, &mut other, &wi, &hi, &mut changed]
                    )?;
                    launch!(
                        engine,
                        stream,
                        "unreached_step",
                        grid(n, BLOCK),
                        [&other, &mut comp, &wi, &hi, &mut changed]
                    )?;
                }
                if read_u32(stream, &changed, "component flag")? == 0 {
                    break;
                }
            }
        }
    }

    // Drop small objects and number the rest 1..=N in label order.
    let space = seeds as usize + 1 + n;
    let space_u = space as u32;
    let mut area = zeros::<u32>(stream, space, "areas")?;
    launch!(engine, stream, "provisional_labels", grid(n, BLOCK), [&mut labels, &comp, &nu, &seeds, &mut area])?;
    drop(comp);
    let mut rank = alloc::<u32>(stream, space, "ranks")?;
    launch!(engine, stream, "keep_flags", grid(space, BLOCK), [&area, &space_u, &options.min_area, &mut rank])?;
    let mut total = alloc::<u32>(stream, 1, "object count")?;
    launch!(engine, stream, "exclusive_scan", ONE_BLOCK, [&mut rank, &space_u, &mut total])?;
    launch!(engine, stream, "relabel", grid(n, BLOCK), [&mut labels, &nu, &area, &rank, &options.min_area])?;
    let count = read_u32(stream, &total, "object count")?;

    // Measurements, by atomics.
    let (sums, boxes) = if count == 0 {
        (Vec::new(), Vec::new())
    } else {
        let c = count as usize;
        let mut sums = zeros::<u64>(stream, 4 * c, "cell sums")?;
        let mut boxes = alloc::<u32>(stream, 4 * c, "cell boxes")?;
        launch!(engine, stream, "measure_init", grid(c, BLOCK), [&mut boxes, &count])?;
        launch!(
            engine,
            stream,
            "measure",
            grid(n, BLOCK),
            [&labels, &samples, &wi, &hi, &count, &mut sums, &mut boxes]
        )?;
        (stream.clone_dtoh(&sums).step("cell sums")?, stream.clone_dtoh(&boxes).step("cell boxes")?)
    };
    let labels = stream.clone_dtoh(&labels).step("labels")?;
    let threshold = match threshold_d {
        Some(t) => Some(stream.clone_dtoh(&t).step("threshold")?[0]),
        None => None,
    };
    stream.synchronize().step("synchronize")?;
    let cells = (0..count as usize)
        .filter(|&k| sums[4 * k] > 0)
        .map(|k| {
            let (s, b) = (&sums[4 * k..4 * k + 4], &boxes[4 * k..4 * k + 4]);
            let area = s[0] as f64;
            Cell {
                id: k as u32 + 1,
                area: s[0] as u32,
                centroid_x: (s[1] as f64 / area) as f32,
                centroid_y: (s[2] as f64 / area) as f32,
                bbox_x: b[0],
                bbox_y: b[1],
                bbox_width: b[2] - b[0] + 1,
                bbox_height: b[3] - b[1] + 1,
                mean_intensity: (s[3] as f64 / area) as f32,
            }
        })
        .collect();
    Ok(Segmentation { width: image.width, height: image.height, labels, cells, threshold })
}
