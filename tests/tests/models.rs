//! The shipped models (`models/sr2x`, `models/cell_fg`, made by
//! `scripts/make-models.py`) end to end: the `upscale` stage with
//! `method: model` and the `segment_cells` stage with `model: cell_fg`,
//! through the host's model repository (tract) and its imports.

use image::{imageops::FilterType, DynamicImage, ImageBuffer, Luma, RgbImage, RgbaImage};
use serde_json::{json, Value};
use stagecraft_accel::metrics::match_labels;
use stagecraft_accel::synth::{generate, SynthImage, SynthOptions};
use stagecraft_inference::Models;
use stagecraft_runtime::{Artifact, InvokeError, InvokeOptions, Runtime, StageInput, StageOutput};
use std::sync::OnceLock;

/// One runtime with the repository's `models/` folder and the bundled stages.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let (models, report) = Models::open(stagecraft_tests::repo_root().join("models")).expect("models/ opens");
        assert!(report.failed.is_empty(), "shipped models failed to load: {:?}", report.failed);
        for name in ["sr2x", "cell_fg"] {
            assert!(report.loaded.iter().any(|l| l == name), "{name} not loaded: {report:?}");
        }
        let mut config = stagecraft_tests::test_config();
        config.models = Some(models);
        let runtime = Runtime::new(config).expect("runtime starts");
        let loaded = runtime.load_dir(stagecraft_tests::plugins_dir());
        assert!(loaded.failed.is_empty(), "bundled stages failed to load: {:?}", loaded.failed);
        runtime
    })
}

async fn invoke(stage: &str, artifacts: Vec<Artifact>, params: Value) -> Result<StageOutput, InvokeError> {
    runtime().invoke(stage, StageInput::new(artifacts, params), InvokeOptions::default()).await
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// A held-out picture (not in the training set): anti-aliased discs, bars
/// and thin strokes on a gradient, rendered 4x and box-averaged.
fn shapes(w: u32, h: u32) -> RgbImage {
    let ss = 4;
    let inside = |x: f32, y: f32| -> Option<[f32; 3]> {
        let disc = |cx: f32, cy: f32, r: f32| (x - cx).powi(2) + (y - cy).powi(2) < r * r;
        if disc(0.3 * w as f32, 0.35 * h as f32, 0.18 * h as f32) {
            return Some([0.9, 0.2, 0.15]);
        }
        if (x - 0.65 * w as f32).abs() < 0.12 * w as f32 && (y + 0.4 * x - 0.8 * h as f32).abs() < 0.2 * h as f32 {
            return Some([0.1, 0.3, 0.8]);
        }
        // Thin diagonal strokes, 1.5 px wide, every 9 px.
        if y > 0.7 * h as f32 && ((x + 0.6 * y) % 9.0) < 1.5 {
            return Some([0.05, 0.05, 0.05]);
        }
        if disc(0.8 * w as f32, 0.2 * h as f32, 0.08 * h as f32) {
            return Some([0.95, 0.9, 0.3]);
        }
        None
    };
    RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0.0f32; 3];
        for sy in 0..ss {
            for sx in 0..ss {
                let (fx, fy) = (x as f32 + (sx as f32 + 0.5) / ss as f32, y as f32 + (sy as f32 + 0.5) / ss as f32);
                let c = inside(fx, fy).unwrap_or([0.3 + 0.5 * fx / w as f32, 0.6, 0.7 - 0.4 * fy / h as f32]);
                for k in 0..3 {
                    acc[k] += c[k];
                }
            }
        }
        image::Rgb(acc.map(|v| (v / (ss * ss) as f32 * 255.0).round() as u8))
    })
}

/// The degradation the model was trained for: the mean of each 2x2 block.
fn box_down2(img: &RgbImage) -> RgbImage {
    RgbImage::from_fn(img.width() / 2, img.height() / 2, |x, y| {
        let mut acc = [0u32; 3];
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let p = img.get_pixel(2 * x + dx, 2 * y + dy).0;
            for k in 0..3 {
                acc[k] += p[k] as u32;
            }
        }
        image::Rgb(acc.map(|v| ((v + 2) / 4) as u8))
    })
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

fn decoded(out: &StageOutput) -> DynamicImage {
    assert_eq!(out.artifacts.len(), 1, "{:?}", out.artifacts.iter().map(|a| &a.name).collect::<Vec<_>>());
    image::load_from_memory(&out.artifacts[0].data).expect("output decodes")
}

#[tokio::test]
async fn sr2x_is_closer_to_the_truth_than_bilinear_and_lanczos() {
    let truth = shapes(200, 152);
    let small = box_down2(&truth);
    let input = || vec![Artifact::new("small.png", "image/png", png(&DynamicImage::ImageRgb8(small.clone())))];
    // A 48-pixel tile makes 3 x 2 tiles, so the seams are part of what is measured.
    let out =
        invoke("upscale", input(), json!({"method": "model", "factor": 2, "tile": 48})).await.expect("model upscale");
    assert_eq!(out.metadata["filter"], json!("model:sr2x"));
    assert!(out.metadata.get("warning").is_none(), "{}", out.metadata);
    let model = decoded(&out).to_rgb8();
    assert_eq!(model.dimensions(), (200, 152));

    let lanczos = decoded(&invoke("upscale", input(), json!({"factor": 2})).await.expect("lanczos upscale")).to_rgb8();
    let bilinear = image::imageops::resize(&small, 200, 152, FilterType::Triangle);
    let (m, l, b) = (psnr(&model, &truth), psnr(&lanczos, &truth), psnr(&bilinear, &truth));
    eprintln!("PSNR vs the high-res truth: sr2x {m:.2} dB, lanczos3 {l:.2} dB, bilinear {b:.2} dB");
    assert!(m > b + 1.0, "sr2x {m:.2} dB is not clearly above bilinear {b:.2} dB");
    assert!(m > l, "sr2x {m:.2} dB is below lanczos3 {l:.2} dB");

    // One big tile gives the same picture: the margin hides the seams.
    let whole = invoke("upscale", input(), json!({"method": "model", "factor": 2, "tile": 512})).await.unwrap();
    let whole = decoded(&whole).to_rgb8();
    let worst = whole.as_raw().iter().zip(model.as_raw()).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
    assert!(worst <= 1, "tiled and untiled differ by {worst} levels");
}

#[tokio::test]
async fn factors_three_and_four_and_alpha() {
    let rgba = RgbaImage::from_fn(50, 30, |x, y| {
        image::Rgba([(x * 5) as u8, (y * 8) as u8, 128, if x < 25 { 255 } else { 0 }])
    });
    let art = Artifact::new("logo.png", "image/png", png(&DynamicImage::ImageRgba8(rgba)));
    for (factor, size) in [(4, (200, 120)), (3, (150, 90))] {
        let out = invoke("upscale", vec![art.clone()], json!({"method": "model", "factor": factor})).await.unwrap();
        let img = decoded(&out);
        assert_eq!((img.width(), img.height()), size, "factor {factor}");
        assert!(img.color().has_alpha(), "factor {factor} lost alpha");
        let a = img.to_rgba8();
        // Alpha follows the source's left-opaque, right-clear split.
        assert_eq!(a.get_pixel(5, size.1 / 2).0[3], 255);
        assert_eq!(a.get_pixel(size.0 - 5, size.1 / 2).0[3], 0);
        assert_eq!(out.metadata["images"][0]["width"], json!(size.0));
    }
}

#[tokio::test]
async fn an_unknown_model_fails_clearly_or_falls_back_to_lanczos() {
    let art = Artifact::new("p.png", "image/png", png(&DynamicImage::ImageRgb8(shapes(40, 30))));
    let err = invoke("upscale", vec![art.clone()], json!({"method": "model", "model": "no_such_model"}))
        .await
        .expect_err("an unknown model fails");
    let text = format!("{err:#}");
    assert!(matches!(err, InvokeError::InvalidInput(_)), "{text}");
    assert!(text.contains("no_such_model") && text.contains("fallback_to_lanczos"), "{text}");

    let out =
        invoke("upscale", vec![art], json!({"method": "model", "model": "no_such_model", "fallback_to_lanczos": true}))
            .await
            .expect("falls back");
    assert_eq!(out.metadata["filter"], json!("lanczos3"));
    assert!(out.metadata["warning"].as_str().unwrap().contains("no_such_model"), "{}", out.metadata);
    assert_eq!((decoded(&out).width(), decoded(&out).height()), (80, 60));
}

fn gray_png(s: &SynthImage) -> Vec<u8> {
    let data = s.image.samples.iter().map(|&v| v as u8).collect();
    png(&DynamicImage::ImageLuma8(ImageBuffer::<Luma<u8>, _>::from_raw(s.image.width, s.image.height, data).unwrap()))
}

/// The model's floor on the synthetic set (synth.rs's default options,
/// which the shipped model was not trained on but whose ranges it covers):
/// measured here 0.995 with the model `scripts/make-models.py` writes now
/// (0.975 on its own default-options table), Otsu 0.922.
const CELL_FG_AP_FLOOR: f64 = 0.95;

#[tokio::test]
async fn cell_fg_segments_synthetic_cells_to_the_ap_floor() {
    let images: Vec<SynthImage> = (0..3).map(|k| generate(&SynthOptions::default(), 9000 + k)).collect();
    let artifacts: Vec<Artifact> =
        images.iter().enumerate().map(|(k, s)| Artifact::new(format!("c{k}.png"), "image/png", gray_png(s))).collect();
    let mut means = Vec::new();
    for params in [json!({"model": "cell_fg"}), json!({})] {
        let out = invoke("segment_cells", artifacts.clone(), params.clone()).await.expect("segment_cells runs");
        let mut aps = Vec::new();
        for (k, s) in images.iter().enumerate() {
            let a = out.artifacts.iter().find(|a| a.name == format!("c{k}_labels.png")).unwrap();
            let labels: Vec<u32> =
                image::load_from_memory(&a.data).unwrap().to_luma16().into_raw().into_iter().map(u32::from).collect();
            aps.push(match_labels(&s.truth, &labels, 0.5).average_precision());
        }
        let mean = aps.iter().sum::<f64>() / aps.len() as f64;
        eprintln!("segment_cells {params}: AP@0.5 per image {aps:.3?}, mean {mean:.3}");
        means.push(mean);
    }
    assert!(means[0] >= CELL_FG_AP_FLOOR, "cell_fg mean AP@0.5 {:.3} below {CELL_FG_AP_FLOOR}", means[0]);
    // On these images (inside its training ranges) the model beats Otsu; on
    // noisier ones it does not, which is why Otsu is the default (models/README.md).
    assert!(means[0] > means[1], "cell_fg {:.3} not above Otsu {:.3} on the default set", means[0], means[1]);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each path against its baseline through the same host, in one run:
/// `cargo test --release -p stagecraft-tests --test models -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints a table"]
async fn bench_models_against_their_baselines() {
    const ROUNDS: usize = 5;
    let truth = shapes(1024, 1024);
    let small = Artifact::new("s.png", "image/png", png(&DynamicImage::ImageRgb8(box_down2(&truth))));
    let cells = generate(&SynthOptions::default(), 77);
    let cell_art = Artifact::new("c.png", "image/png", gray_png(&cells));
    let cases: Vec<(&str, &str, Artifact, Value)> = vec![
        ("upscale 512->1024", "lanczos3", small.clone(), json!({"factor": 2})),
        ("upscale 512->1024", "sr2x (tile 128)", small.clone(), json!({"factor": 2, "method": "model"})),
        ("segment 512x512", "Otsu", cell_art.clone(), json!({})),
        ("segment 512x512", "cell_fg", cell_art.clone(), json!({"model": "cell_fg"})),
    ];
    println!("| task | method | median (ms) | vs baseline | quality |");
    println!("|---|---|---:|---:|---|");
    let mut baseline = 0.0;
    for (k, (task, method, art, params)) in cases.into_iter().enumerate() {
        let stage = if task.starts_with("upscale") { "upscale" } else { "segment_cells" };
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..ROUNDS {
            let started = std::time::Instant::now();
            last = Some(invoke(stage, vec![art.clone()], params.clone()).await.expect("bench call"));
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let out = last.unwrap();
        let quality = if stage == "upscale" {
            format!("PSNR {:.2} dB", psnr(&decoded(&out).to_rgb8(), &truth))
        } else {
            let a = out.artifacts.iter().find(|a| a.name == "c_labels.png").unwrap();
            let labels: Vec<u32> =
                image::load_from_memory(&a.data).unwrap().to_luma16().into_raw().into_iter().map(u32::from).collect();
            format!("AP@0.5 {:.3}", match_labels(&cells.truth, &labels, 0.5).average_precision())
        };
        let m = median(times);
        if k % 2 == 0 {
            baseline = m;
        }
        println!("| {task} | {method} | {m:.1} | {:.2}x | {quality} |", m / baseline);
    }
}
