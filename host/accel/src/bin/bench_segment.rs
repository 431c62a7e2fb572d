//! `bench-segment`: stagecraft's CPU and CUDA segmentation against
//! scikit-image's classical pipeline on the same synthetic images, side by
//! side.
//!
//! Writes N synthetic 512x512 images (8-bit PNG) and their ground truth
//! (16-bit label PNG) to a folder, times stagecraft's pipeline on one core
//! (a one-thread rayon pool) and on all cores, on the GPU when CUDA is
//! usable (one image at a time, then one host thread per stream), runs
//! `scripts/bench-skimage.py` (one thread) on the same files, scores all
//! with the same AP@0.5 code, and prints a table of medians over rounds.
//! Without CUDA the CUDA row says why (`--device cuda` makes that an error;
//! `--device cpu` leaves the GPU out).
//!
//! ```text
//! cargo run --release -p stagecraft-accel --bin bench-segment -- [--images 24] [--rounds 5] [--no-skimage] [--device auto|cpu|cuda]
//! ```

use anyhow::{bail, Context, Result};
use stagecraft_accel::metrics::match_labels;
use stagecraft_accel::segment::{segment, Foreground, SegmentOptions};
use stagecraft_accel::synth::{dataset, SynthOptions};
use stagecraft_accel::{cuda, Device, GrayImage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Args {
    images: usize,
    rounds: usize,
    seed: u64,
    skimage: bool,
    dir: Option<PathBuf>,
    options: SegmentOptions,
    device: Device,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        images: 24,
        rounds: 5,
        seed: 2024,
        skimage: true,
        dir: None,
        options: SegmentOptions::default(),
        device: Device::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--images" => a.images = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--dir" => a.dir = Some(value()?.into()),
            "--sigma" => a.options.sigma = value()?.parse()?,
            "--min-distance" => a.options.min_distance = value()?.parse()?,
            "--min-area" => a.options.min_area = value()?.parse()?,
            "--no-skimage" => a.skimage = false,
            "--device" => a.device = value()?.parse().map_err(anyhow::Error::msg)?,
            "-h" | "--help" => {
                println!("bench-segment [--images N] [--rounds R] [--seed S] [--dir DIR] [--sigma F] [--min-distance N] [--min-area N] [--no-skimage] [--device auto|cpu|cuda]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Mean per-image AP and the pooled AP (all matches summed).
fn score(truths: &[Vec<u32>], predictions: &[Vec<u32>]) -> (f64, f64) {
    let mut per_image = Vec::new();
    let (mut tp, mut all) = (0u64, 0u64);
    for (t, p) in truths.iter().zip(predictions) {
        let m = match_labels(t, p, 0.5);
        per_image.push(m.average_precision());
        tp += m.true_positives as u64;
        all += (m.true_positives + m.false_positives + m.false_negatives) as u64;
    }
    (per_image.iter().sum::<f64>() / per_image.len() as f64, tp as f64 / all.max(1) as f64)
}

fn write_png_u16(path: &Path, w: u32, h: u32, labels: &[u32]) -> Result<()> {
    let data: Vec<u16> = labels.iter().map(|&l| l.min(65535) as u16).collect();
    let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, data).context("label buffer")?;
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

fn read_png_labels(path: &Path) -> Result<Vec<u32>> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(img.to_luma16().into_raw().into_iter().map(u32::from).collect())
}

/// Times `rounds` passes over `images` on a pool of `threads`; returns the
/// median images/s and the labels of the last pass.
fn time_stagecraft(
    images: &[GrayImage],
    options: &SegmentOptions,
    threads: usize,
    rounds: usize,
) -> Result<(f64, Vec<Vec<u32>>)> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let mut rates = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let out: Vec<_> = pool.install(|| {
            images.par_iter().map(|im| segment(im, options, Foreground::Otsu)).collect::<Result<Vec<_>, _>>()
        })?;
        rates.push(images.len() as f64 / start.elapsed().as_secs_f64());
        labels = out.into_iter().map(|s| s.labels).collect();
    }
    Ok((median(rates), labels))
}

/// Times `rounds` passes over `images` on the CUDA engine with `threads`
/// host threads (each job takes a stream from the pool); returns the median
/// images/s and the labels of the last pass.
fn time_cuda(
    engine: &cuda::Gpu,
    images: &[GrayImage],
    options: &SegmentOptions,
    threads: usize,
    rounds: usize,
) -> Result<(f64, Vec<Vec<u32>>)> {
    // The first job pays for module loading and the memory pool's growth.
    engine.segment(&images[0], options, Foreground::Otsu).map_err(|e| anyhow::anyhow!("CUDA warm-up: {e:?}"))?;
    let mut rates = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rounds {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let start = Instant::now();
        let mut out: Vec<(usize, Vec<u32>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(im) = images.get(k) else { break };
                            let seg = engine
                                .segment(im, options, Foreground::Otsu)
                                .map_err(|e| anyhow::anyhow!("CUDA image {k}: {e:?}"))?;
                            mine.push((k, seg.labels));
                        }
                        Ok::<_, anyhow::Error>(mine)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("worker")).collect::<Result<Vec<_>>>().map(|v| v.concat())
        })?;
        rates.push(images.len() as f64 / start.elapsed().as_secs_f64());
        out.sort_by_key(|p| p.0);
        labels = out.into_iter().map(|p| p.1).collect();
    }
    Ok((median(rates), labels))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.device == Device::Cuda {
        if let Err(why) = cuda::engine() {
            bail!("--device cuda: CUDA is unavailable: {why}");
        }
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let synth = SynthOptions::default();
    eprintln!("generating {} synthetic {}x{} images (seed {})", args.images, synth.width, synth.height, args.seed);
    let data = dataset(&synth, args.images, args.seed);
    let images: Vec<GrayImage> = data.iter().map(|d| d.image.clone()).collect();
    let truths: Vec<Vec<u32>> = data.iter().map(|d| d.truth.clone()).collect();
    let cells: u32 = data.iter().map(|d| d.count).sum();

    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    for (k, d) in data.iter().enumerate() {
        let img =
            image::GrayImage::from_raw(synth.width, synth.height, d.image.samples.iter().map(|&v| v as u8).collect())
                .context("image buffer")?;
        img.save(dir.join(format!("img_{k:03}.png")))?;
        write_png_u16(&dir.join(format!("truth_{k:03}.png")), synth.width, synth.height, &d.truth)?;
    }

    let o = &args.options;
    eprintln!("stagecraft: 1 thread, then {cores} threads, {} rounds", args.rounds);
    let (one, labels) = time_stagecraft(&images, o, 1, args.rounds)?;
    let (all, _) = time_stagecraft(&images, o, cores, args.rounds)?;
    let (ap, ap_pooled) = score(&truths, &labels);

    let mut rows = vec![(
        "stagecraft (Rust, CPU)".to_string(),
        one,
        Some(all / cores as f64),
        format!("{ap:.3}"),
        format!("{ap_pooled:.3}"),
    )];

    // The CUDA path, when usable.
    let mut gpu_lines = Vec::new();
    let engine = match (args.device, cuda::engine()) {
        (Device::Cpu, _) => None,
        (_, Ok(engine)) => Some(engine),
        (Device::Cuda, Err(why)) => bail!("--device cuda: CUDA is unavailable: {why}"),
        (_, Err(why)) => {
            gpu_lines.push(format!("CUDA: not measured: {why}"));
            None
        }
    };
    if let Some(engine) = engine {
        eprintln!("CUDA: {}, 1 host thread, then {} (one per stream)", engine.summary, cuda::context::STREAMS);
        let (seq, gpu_labels) = time_cuda(engine, &images, o, 1, args.rounds)?;
        let (streams, _) = time_cuda(engine, &images, o, cuda::context::STREAMS, args.rounds)?;
        let (ap, ap_pooled) = score(&truths, &gpu_labels);
        let (agree, _) = score(&labels, &gpu_labels);
        rows.push(("stagecraft (CUDA)".to_string(), seq, None, format!("{ap:.3}"), format!("{ap_pooled:.3}")));
        gpu_lines.push(format!(
            "CUDA {}: {seq:.1} img/s one at a time, {streams:.1} img/s with {} in flight; {:.1}x one CPU core, {:.1}x all {cores} cores ({all:.1} img/s); GPU labels vs CPU labels AP@0.5 {agree:.3}",
            engine.summary,
            cuda::context::STREAMS,
            streams / one,
            streams / all,
        ));
    }

    if args.skimage {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench-skimage.py");
        eprintln!("scikit-image: {} (1 thread)", script.display());
        let out = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .args(["--images", &args.images.to_string(), "--rounds", &args.rounds.to_string()])
            .args(["--sigma", &o.sigma.to_string(), "--min-distance", &o.min_distance.to_string()])
            .args(["--min-area", &o.min_area.to_string()])
            .env("OMP_NUM_THREADS", "1")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .output()
            .context("running python3 scripts/bench-skimage.py")?;
        if !out.status.success() {
            bail!(
                "scripts/bench-skimage.py failed (pip install scikit-image?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("bench-skimage.py output")?;
        let rate = report["images_per_s_median"].as_f64().context("images_per_s_median")?;
        let version = report["skimage_version"].as_str().unwrap_or("?").to_string();
        let predictions = (0..args.images)
            .map(|k| read_png_labels(&dir.join(format!("skimage_{k:03}.png"))))
            .collect::<Result<Vec<_>>>()?;
        let (ap, ap_pooled) = score(&truths, &predictions);
        rows.push((format!("scikit-image {version}"), rate, None, format!("{ap:.3}"), format!("{ap_pooled:.3}")));
    }

    let device = args.device.resolve().map(|d| d.summary).unwrap_or_else(|e| e);
    println!();
    println!(
        "segmentation, {} synthetic {}x{} images ({} cells), sigma {} min-distance {} min-area {}; medians of {} rounds; device: {}",
        args.images, synth.width, synth.height, cells, o.sigma, o.min_distance, o.min_area, args.rounds, device
    );
    println!(
        "{:<26} {:>16} {:>22} {:>14} {:>14}",
        "pipeline",
        "img/s (1 core)",
        format!("img/s per core ({cores})"),
        "AP@0.5 mean",
        "AP@0.5 pooled"
    );
    for (name, one, per_core, ap, pooled) in &rows {
        let per_core = per_core
            .map_or(if name.contains("CUDA") { "- (GPU)".to_string() } else { "- (1 thread)".to_string() }, |v| {
                format!("{v:.1}")
            });
        println!("{name:<26} {one:>16.1} {per_core:>22} {ap:>14} {pooled:>14}");
    }
    if let Some(sk) = rows.iter().find(|r| r.0.starts_with("scikit-image")) {
        println!("speed-up per core (1 thread vs 1 thread): {:.1}x", rows[0].1 / sk.1);
    }
    for line in &gpu_lines {
        println!("{line}");
    }
    Ok(())
}
