//! `stagecraft bench stages`: every bundled stage on a reference input, in
//! the sandbox: component size, median time of a call (fresh instance,
//! decode, work, encode) and megapixels per second. With `--native BIN`
//! (the `stage-bench-native` runner from `plugins/native-bench`, built by
//! `scripts/bench-stages`), the stages that have a native build run the
//! same crate natively on the same bytes, side by side, to show what the
//! sandbox costs.

use super::bench::{median, ms};
use crate::host::HostArgs;
use anyhow::Context;
use serde_json::{json, Value};
use stagecraft_runtime::{Artifact, InvokeOptions, StageInput};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct StagesBenchArgs {
    /// Calls per stage after one warm-up call (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The reference inputs (`product.jpg`, `logo.png`, `cells.png`).
    #[arg(long, default_value = "examples/inputs")]
    pub inputs: PathBuf,
    /// Side of the square product and logo references, in pixels.
    #[arg(long, default_value_t = 1024)]
    pub size: u32,
    /// The native runner (`target/plugins-native/release/stage-bench-native`).
    #[arg(long)]
    pub native: Option<PathBuf>,
}

/// One row: a stage, what it is given, and how many megapixels that is.
struct Case {
    stage: &'static str,
    what: String,
    inputs: Vec<Artifact>,
    params: Value,
    megapixels: Option<f64>,
}

/// The reference images, decoded once and re-encoded at the bench size.
struct References {
    product_jpg: Vec<u8>,
    logo_png: Vec<u8>,
    cells_png: Vec<u8>,
    cells_mp: f64,
    size: u32,
}

impl References {
    fn load(dir: &Path, size: u32) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            image::open(&path).with_context(|| format!("reading reference input {}", path.display()))
        };
        let resized = |img: image::DynamicImage| img.resize_exact(size, size, image::imageops::FilterType::Lanczos3);
        let encode = |img: &image::DynamicImage, format: image::ImageFormat| -> anyhow::Result<Vec<u8>> {
            let mut out = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut out), format)?;
            Ok(out)
        };
        let product = resized(read("product.jpg")?).into_rgb8().into();
        let logo = resized(read("logo.png")?).into_rgb8().into();
        let cells_png = std::fs::read(dir.join("cells.png")).context("reading cells.png")?;
        let cells = image::load_from_memory(&cells_png)?;
        Ok(Self {
            product_jpg: encode(&product, image::ImageFormat::Jpeg)?,
            logo_png: encode(&logo, image::ImageFormat::Png)?,
            cells_mp: cells.width() as f64 * cells.height() as f64 / 1e6,
            cells_png,
            size,
        })
    }

    fn product(&self) -> Artifact {
        Artifact::new("product.jpg", "image/jpeg", self.product_jpg.clone())
    }
    fn logo(&self) -> Artifact {
        Artifact::new("logo.png", "image/png", self.logo_png.clone())
    }
    fn mp(&self) -> f64 {
        self.size as f64 * self.size as f64 / 1e6
    }
}

fn cases(r: &References) -> Vec<Case> {
    let s = r.size;
    let product = format!("product {s}x{s} JPEG");
    let logo = format!("logo {s}x{s} PNG");
    let case = |stage, what: &str, inputs, params, megapixels| Case {
        stage,
        what: what.to_owned(),
        inputs,
        params,
        megapixels,
    };
    vec![
        case("noop", "nothing", vec![], json!({}), None),
        case(
            "generate",
            &format!("prompt -> {s}x{s} PNG"),
            vec![],
            json!({"prompt": "a red sneaker", "seed": 7, "width": s, "height": s}),
            Some(r.mp()),
        ),
        case("upscale", &format!("{product}, 2x"), vec![r.product()], json!({"factor": 2}), Some(r.mp())),
        case(
            "social_formats",
            &format!("{product}, 5 sizes"),
            vec![r.product()],
            json!({"formats": ["instagram_square", "story", "facebook", "twitter", "linkedin"]}),
            Some(r.mp()),
        ),
        case("transparent_png", &logo, vec![r.logo()], json!({}), Some(r.mp())),
        case("distressed", &logo, vec![r.logo()], json!({"seed": 3}), Some(r.mp())),
        case("color_separations", &format!("{logo}, 4 colours"), vec![r.logo()], json!({"colors": 4}), Some(r.mp())),
        case("vector_trace", &logo, vec![r.logo()], json!({}), Some(r.mp())),
        case(
            "video",
            &format!("{product} + {logo} -> GIF"),
            vec![r.product(), r.logo()],
            json!({"fps": 10, "hold": 0.5, "crossfade": 0.3, "width": 384}),
            Some(2.0 * r.mp()),
        ),
        case(
            "segment_cells",
            "cells.png",
            vec![Artifact::new("cells.png", "image/png", r.cells_png.clone())],
            json!({}),
            Some(r.cells_mp),
        ),
        case("report_csv", "2 images", vec![r.product(), r.logo()], json!({"title": "bench"}), None),
        case("report_html", "2 images", vec![r.product(), r.logo()], json!({"title": "bench"}), None),
        case("report_xlsx", "2 images", vec![r.product(), r.logo()], json!({"title": "bench"}), None),
    ]
}

/// Stages the native runner has (see `plugins/native-bench`).
const NATIVE: &[&str] = &["upscale", "color_separations"];

pub async fn run(host: &HostArgs, args: StagesBenchArgs) -> anyhow::Result<()> {
    let runtime = host.runtime()?;
    let refs = References::load(&args.inputs, args.size)?;
    let scratch = tempfile::tempdir().context("a scratch folder for the native runner's inputs")?;
    let runs = args.runs.max(1);
    println!("stagecraft bench stages (median of {runs} calls after a warm-up; each call is a fresh instance)\n");
    println!("| stage | component (KiB) | input | median (ms) | MP/s | native median (ms) | sandbox / native |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    let mut skipped = Vec::new();
    for case in cases(&refs) {
        if runtime.stage(case.stage).is_none() {
            skipped.push(format!("{} (not in {})", case.stage, host.plugins.display()));
            continue;
        }
        let size =
            std::fs::metadata(host.first_plugin_dir().join(format!("{}.wasm", case.stage))).map(|m| m.len()).ok();
        let mut samples = Vec::with_capacity(runs);
        for i in 0..=runs {
            let input = StageInput::new(case.inputs.clone(), case.params.clone());
            let started = Instant::now();
            let out = runtime
                .invoke(case.stage, input, InvokeOptions::default())
                .await
                .with_context(|| format!("{} on {}", case.stage, case.what))?;
            if i > 0 {
                samples.push(started.elapsed());
            }
            std::hint::black_box(out);
        }
        let median = median(&mut samples);
        let native = match (&args.native, NATIVE.contains(&case.stage)) {
            (Some(bin), true) => Some(native_median(bin, &case, runs, scratch.path())?),
            _ => None,
        };
        println!(
            "| {} | {} | {} | {:.1} | {} | {} | {} |",
            case.stage,
            size.map_or("-".into(), |b| format!("{:.0}", b as f64 / 1024.0)),
            case.what,
            ms(median),
            case.megapixels.map_or("-".into(), |mp| format!("{:.1}", mp / median.as_secs_f64())),
            native.map_or("-".into(), |n| format!("{:.1}", ms(n))),
            native.map_or("-".into(), |n| format!("{:.2}x", median.as_secs_f64() / n.as_secs_f64())),
        );
    }
    if !skipped.is_empty() {
        println!("\nnot measured: {}", skipped.join(", "));
    }
    println!(
        "generate_http is not in the table: it waits on a remote service (its tests run it against a loopback server)."
    );
    if args.native.is_none() {
        println!("native column: run scripts/bench-stages (or pass --native target/plugins-native/release/stage-bench-native)");
    }
    println!("MP/s: input megapixels (for generate, output) per second of the median call.");
    Ok(())
}

/// Runs the native build of `case.stage` on the same bytes and params.
fn native_median(bin: &Path, case: &Case, runs: usize, scratch: &Path) -> anyhow::Result<Duration> {
    let mut files = Vec::new();
    for a in &case.inputs {
        let path = scratch.join(&a.name);
        std::fs::write(&path, &a.data).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    let output = std::process::Command::new(bin)
        .arg(case.stage)
        .arg(case.params.to_string())
        .arg(runs.to_string())
        .args(&files)
        .output()
        .with_context(|| format!("running the native runner {}", bin.display()))?;
    if !output.status.success() {
        anyhow::bail!("{} {} failed: {}", bin.display(), case.stage, String::from_utf8_lossy(&output.stderr));
    }
    let answer: Value = serde_json::from_slice(&output.stdout).context("the native runner's answer")?;
    let secs = answer["median_s"].as_f64().context("median_s in the native runner's answer")?;
    Ok(Duration::from_secs_f64(secs))
}
