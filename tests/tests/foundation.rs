//! The foundation, end to end: the bundled `upscale` stage against a native
//! Lanczos3 reference, bad input, and plugins that attack the host — after
//! each of which the host must still serve the next call.

use image::GenericImageView;
use stagecraft_runtime::{Artifact, InvokeError, InvokeOptions, Runtime, StageInput};
use stagecraft_tests::{png, runtime, test_config, test_picture};
use std::time::{Duration, Instant};

async fn assert_still_serves(rt: &Runtime) {
    let out = rt
        .invoke(
            "noop",
            StageInput::new(vec![Artifact::new("a.txt", "text/plain", b"hi".to_vec())], serde_json::json!({})),
            InvokeOptions::default(),
        )
        .await
        .expect("the host serves the next call");
    assert_eq!(out.artifacts[0].data, b"hi");
}

fn native_lanczos3(src: &image::RgbImage, w: u32, h: u32) -> image::RgbImage {
    use fast_image_resize::{
        images::{Image, ImageRef},
        FilterType, ResizeAlg, ResizeOptions, Resizer,
    };
    let src = ImageRef::new(src.width(), src.height(), src.as_raw(), fast_image_resize::PixelType::U8x3).unwrap();
    let mut dst = Image::new(w, h, fast_image_resize::PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)))
        .unwrap();
    image::RgbImage::from_raw(w, h, dst.into_vec()).unwrap()
}

#[tokio::test]
async fn upscale_matches_native_lanczos3() {
    let rt = runtime();
    let source = test_picture(96, 64);
    for (params, (w, h)) in [
        (serde_json::json!({ "factor": 2 }), (192, 128)),
        (serde_json::json!({ "factor": 3 }), (288, 192)),
        (serde_json::json!({ "width": 150 }), (150, 100)),
        (serde_json::json!({ "width": 200, "height": 90 }), (200, 90)),
    ] {
        let out = rt
            .invoke(
                "upscale",
                StageInput::new(vec![Artifact::new("pic.png", "image/png", png(&source))], params.clone()),
                InvokeOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("upscale {params}: {e}"));
        assert_eq!(out.artifacts.len(), 1);
        assert_eq!(out.artifacts[0].media_type, "image/png");
        let got = image::load_from_memory(&out.artifacts[0].data).unwrap();
        assert_eq!(got.dimensions(), (w, h), "size for {params}");
        let want = native_lanczos3(&source, w, h);
        let got = got.to_rgb8();
        let (mut sum, mut max) = (0u64, 0u8);
        for (a, b) in got.as_raw().iter().zip(want.as_raw()) {
            let d = a.abs_diff(*b);
            sum += d as u64;
            max = max.max(d);
        }
        let mean = sum as f64 / got.as_raw().len() as f64;
        assert!(mean < 0.5 && max <= 2, "{params}: mean abs diff {mean:.3}, max {max} against native Lanczos3");
        assert_eq!(out.metadata["filter"], "lanczos3");
    }
}

#[tokio::test]
async fn upscale_jpeg_in_jpeg_out() {
    let rt = runtime();
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(test_picture(40, 30))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let out = rt
        .invoke(
            "upscale",
            StageInput::new(vec![Artifact::new("p.jpg", "image/jpeg", jpeg)], serde_json::json!({ "factor": 4 })),
            InvokeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.artifacts[0].media_type, "image/jpeg");
    assert_eq!(image::guess_format(&out.artifacts[0].data).unwrap(), image::ImageFormat::Jpeg);
    assert_eq!(image::load_from_memory(&out.artifacts[0].data).unwrap().dimensions(), (160, 120));
}

#[tokio::test]
async fn corrupt_png_is_invalid_input() {
    let rt = runtime();
    let mut bytes = png(&test_picture(32, 32));
    bytes.truncate(60);
    let err = rt
        .invoke(
            "upscale",
            StageInput::new(vec![Artifact::new("broken.png", "image/png", bytes)], serde_json::json!({ "factor": 2 })),
            InvokeOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, InvokeError::InvalidInput(ref m) if m.contains("broken.png")), "got {err}");
    assert!(!err.is_retryable());
    assert_still_serves(&rt).await;
}

#[tokio::test]
async fn bad_params_are_invalid_input() {
    let rt = runtime();
    let input = || vec![Artifact::new("p.png", "image/png", png(&test_picture(8, 8)))];
    for params in
        [serde_json::json!({ "factor": 7 }), serde_json::json!({ "factr": 2 }), serde_json::json!({ "factor": "two" })]
    {
        let err =
            rt.invoke("upscale", StageInput::new(input(), params.clone()), InvokeOptions::default()).await.unwrap_err();
        assert!(matches!(err, InvokeError::InvalidInput(_)), "{params}: got {err}");
    }
    let err = rt
        .invoke("upscale", StageInput::new(vec![], serde_json::json!({})), InvokeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, InvokeError::InvalidInput(_)), "no input: got {err}");
}

#[tokio::test]
async fn unknown_stage_is_reported() {
    let err = runtime().invoke("no-such-stage", StageInput::default(), InvokeOptions::default()).await.unwrap_err();
    assert!(matches!(err, InvokeError::UnknownStage(ref s) if s == "no-such-stage"));
}

#[tokio::test]
async fn endless_loop_hits_the_deadline() {
    let rt = runtime();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err =
        rt.invoke("spin", StageInput::default(), InvokeOptions::default().with_timeout(timeout)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, InvokeError::Timeout(t) if t == timeout), "got {err}");
    assert!(err.is_retryable());
    // Not a timing assertion on speed: only that it did wait for the deadline.
    assert!(took >= timeout, "returned before the deadline ({took:?})");
    assert_still_serves(&rt).await;
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let rt = runtime();
    let limit = 64 << 20;
    let err = rt.invoke("hog", StageInput::default(), InvokeOptions::default().with_memory(limit)).await.unwrap_err();
    match err {
        InvokeError::MemoryLimit { requested, limit: l } => {
            assert_eq!(l, limit);
            assert!(requested > limit);
        }
        other => panic!("expected a memory-limit error, got {other}"),
    }
    assert_still_serves(&rt).await;
}

#[tokio::test]
async fn sandbox_refuses_the_host_filesystem() {
    let rt = runtime();
    let out = rt.invoke("escape", StageInput::default(), InvokeOptions::default()).await.expect("escape runs");
    let attempts = out.metadata["attempts"].as_object().expect("attempts reported");
    assert!(attempts.len() >= 6, "{attempts:?}");
    for (what, verdict) in attempts {
        assert!(verdict.as_str().unwrap().starts_with("refused"), "{what}: {verdict}");
    }
    assert_eq!(out.metadata["scratch"], "works", "the scratch dir is writable");
    // A second call gets a fresh, empty scratch dir: nothing leaks between invocations.
    let again = rt.invoke("escape", StageInput::default(), InvokeOptions::default()).await.unwrap();
    assert_eq!(again.metadata["scratch"], "works");
    assert_still_serves(&rt).await;
}

#[tokio::test]
async fn many_concurrent_invocations() {
    let rt = runtime();
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let out = rt
                .invoke(
                    "noop",
                    StageInput::new(
                        vec![Artifact::new("x", "application/octet-stream", vec![i; 100])],
                        serde_json::Value::Null,
                    ),
                    InvokeOptions::default(),
                )
                .await
                .unwrap();
            assert_eq!(out.artifacts[0].data, vec![i; 100]);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_folder_with_bad_components_still_loads_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(stagecraft_tests::plugins_dir().join("noop.wasm"), dir.path().join("noop.wasm")).unwrap();
    std::fs::write(dir.path().join("garbage.wasm"), b"definitely not wasm").unwrap();
    // A valid core module, but not a component implementing the stage world.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let rt = Runtime::new(test_config()).unwrap();
    let report = rt.load_dir(dir.path());
    assert_eq!(report.loaded.len(), 1);
    assert_eq!(report.loaded[0].info.name, "noop");
    assert_eq!(report.failed.len(), 2);
    for f in &report.failed {
        assert!(f.reason.contains("component"), "{}: {}", f.path.display(), f.reason);
    }
    assert!(rt.stage("noop").is_some());
}

#[tokio::test]
async fn component_without_the_stage_export_is_refused_with_the_reason() {
    // A component that exports nothing: valid, but not a stage.
    let empty_component = wat_component();
    let rt = Runtime::new(test_config()).unwrap();
    let err = rt.install_bytes(&empty_component, "empty.wasm").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("does not export the stagecraft:stage/stage"), "{msg}");
}

/// The smallest valid component: preamble only (version 0x0d, layer 1).
fn wat_component() -> Vec<u8> {
    b"\0asm\x0d\0\x01\0".to_vec()
}

#[tokio::test]
async fn installing_the_same_bytes_twice_is_not_a_new_version() {
    let rt = Runtime::new(test_config()).unwrap();
    let noop = std::fs::read(stagecraft_tests::plugins_dir().join("noop.wasm")).unwrap();
    let first = rt.install_bytes(&noop, "noop v1").unwrap();
    // Same bytes again: no new version.
    let same = rt.install_bytes(&noop, "noop again").unwrap();
    assert_eq!(first.digest, same.digest);
    assert!(rt.rollback("noop").is_err(), "nothing to roll back to");
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.cache_dir = Some(dir.path().to_owned());
    let wasm = stagecraft_tests::plugins_dir().join("noop.wasm");
    Runtime::new(config.clone()).unwrap().install_file(&wasm).unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "one compiled artifact: {entries:?}");
    let modified = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    // A second runtime (a second start) loads it without compiling again.
    Runtime::new(config).unwrap().install_file(&wasm).unwrap();
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), modified, "not rewritten");
}

#[tokio::test]
async fn the_plugin_template_builds_and_runs() {
    let rt = runtime();
    let out = rt
        .invoke(
            "brighten",
            StageInput::new(
                vec![Artifact::new("p.png", "image/png", png(&test_picture(16, 16)))],
                serde_json::json!({ "amount": 30 }),
            ),
            InvokeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.artifacts[0].name, "p_bright.png");
    let before = test_picture(16, 16);
    let after = image::load_from_memory(&out.artifacts[0].data).unwrap().to_rgb8();
    assert_eq!(after.get_pixel(0, 0)[0], before.get_pixel(0, 0)[0].saturating_add(30));
}
