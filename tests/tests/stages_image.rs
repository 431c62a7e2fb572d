//! End to end through the real host: the image stages `generate`,
//! `social_formats`, `transparent_png`, `distressed` and `video`, each with
//! a happy path checked on its decoded output and an invalid-input case,
//! plus a small chain (generate a logo, cut it out, wear it, animate it).

use image::{GenericImageView, Rgba, RgbaImage};
use serde_json::{json, Value};
use stagecraft_runtime::{Artifact, InvokeError, InvokeOptions, StageInput, StageOutput};

async fn invoke(stage: &str, artifacts: Vec<Artifact>, params: Value) -> Result<StageOutput, InvokeError> {
    stagecraft_tests::runtime().invoke(stage, StageInput::new(artifacts, params), InvokeOptions::default()).await
}

fn names(out: &StageOutput) -> Vec<&str> {
    out.artifacts.iter().map(|a| a.name.as_str()).collect()
}

fn named<'a>(out: &'a StageOutput, name: &str) -> &'a Artifact {
    out.artifacts.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no artifact {name} in {:?}", names(out)))
}

fn decode(a: &Artifact) -> image::DynamicImage {
    image::load_from_memory(&a.data).unwrap_or_else(|e| panic!("{} does not decode: {e}", a.name))
}

/// `invalid-input` whose message names `needle`.
fn assert_invalid(result: Result<StageOutput, InvokeError>, needle: &str) {
    match result {
        Err(InvokeError::InvalidInput(msg)) => assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}"),
        Err(other) => panic!("expected invalid input mentioning {needle:?}, got {other:?}"),
        Ok(out) => panic!("expected invalid input mentioning {needle:?}, got output {:?}", out.metadata),
    }
}

/// `invalid-input` for params the JSON Schema from `describe` already rules
/// out: the host may refuse them before the stage runs, in its own words.
fn assert_schema_invalid(result: Result<StageOutput, InvokeError>) {
    assert!(matches!(result, Err(InvokeError::InvalidInput(_))), "expected invalid input, got {result:?}");
}

fn png(img: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

const INK: [u8; 3] = [30, 60, 170];

/// A flat logo: an anti-aliased blue ring with a bar through it, on white.
fn flat_logo() -> RgbaImage {
    RgbaImage::from_fn(200, 140, |x, y| {
        let (fx, fy) = (x as f32 + 0.5 - 100.0, y as f32 + 0.5 - 70.0);
        let d = (fx * fx + fy * fy).sqrt();
        let ring = ((48.0 - d + 0.5).clamp(0.0, 1.0)) * ((d - 30.0 + 0.5).clamp(0.0, 1.0));
        let bar = if fx.abs() < 60.0 && fy.abs() < 6.0 { 1.0 } else { 0.0 };
        let c = f32::max(ring, bar);
        let mix = |k: usize| (INK[k] as f32 * c + 255.0 * (1.0 - c)).round() as u8;
        Rgba([mix(0), mix(1), mix(2), 255])
    })
}

fn flat_logo_artifact() -> Artifact {
    Artifact::new("logo.png", "image/png", png(&flat_logo()))
}

fn picture(name: &str, w: u32, h: u32) -> Artifact {
    Artifact::new(name, "image/png", stagecraft_tests::png(&stagecraft_tests::test_picture(w, h)))
}

// ---- generate -------------------------------------------------------------------

#[tokio::test]
async fn generate_renders_deterministic_product_shots() {
    let params = json!({"prompt": "a red perfume bottle", "seed": 7, "width": 320, "height": 240});
    let out = invoke("generate", vec![], params.clone()).await.unwrap();
    assert_eq!(names(&out), ["a-red-perfume-bottle-7.png"]);
    let a = &out.artifacts[0];
    assert_eq!(a.media_type, "image/png");
    let img = decode(a).to_rgb8();
    assert_eq!(img.dimensions(), (320, 240));
    // White backdrop at the corners; a red subject ("red" leads the palette); a grey shadow.
    assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(img.get_pixel(319, 0).0, [255, 255, 255]);
    let red = img.pixels().filter(|p| p[0] > 140 && p[1] < 90 && p[2] < 100).count();
    assert!(red > 2000, "red subject pixels: {red}");
    let grey = img.pixels().filter(|p| p[0] == p[1] && p[1] == p[2] && (60..240).contains(&p[0])).count();
    assert!(grey > 200, "shadow pixels: {grey}");
    assert_eq!(out.metadata["prompt"], "a red perfume bottle");
    assert_eq!(out.metadata["seed"], 7);
    assert_eq!(out.metadata["width"], 320);
    assert_eq!(out.metadata["height"], 240);
    assert_eq!(out.metadata["palette"][0], "#d72638");
    assert_eq!(out.metadata["images"][0]["subject"], "bottle");

    // Same prompt and seed: the same bytes; another seed: another picture.
    let again = invoke("generate", vec![], params).await.unwrap();
    assert_eq!(again.artifacts[0].data, a.data);
    let other =
        invoke("generate", vec![], json!({"prompt": "a red perfume bottle", "seed": 8, "width": 320, "height": 240}))
            .await
            .unwrap();
    assert_ne!(other.artifacts[0].data, a.data);
}

#[tokio::test]
async fn generate_makes_variations_logos_scenes_and_jpeg() {
    let out = invoke(
        "generate",
        vec![],
        json!({"prompt": "Blue Harbour coffee", "style": "logo", "background": "plain", "color": "#f0e6d2",
               "count": 3, "seed": 10, "width": 200, "height": 120}),
    )
    .await
    .unwrap();
    assert_eq!(names(&out), ["blue-harbour-coffee-10.png", "blue-harbour-coffee-11.png", "blue-harbour-coffee-12.png"]);
    for a in &out.artifacts {
        let img = decode(a).to_rgb8();
        assert_eq!(img.dimensions(), (200, 120));
        assert_eq!(img.get_pixel(0, 0).0, [0xf0, 0xe6, 0xd2], "{}: flat plain background", a.name);
        assert_eq!(img.get_pixel(199, 119).0, [0xf0, 0xe6, 0xd2]);
        // The mark sits in the middle.
        assert_ne!(img.get_pixel(100, 60).0, [0xf0, 0xe6, 0xd2], "{}", a.name);
    }
    assert_eq!(out.metadata["background_color"], "#f0e6d2");
    assert!(out.metadata["images"][0]["subject"].as_str().unwrap().starts_with("logo:"));

    let scene = invoke(
        "generate",
        vec![],
        json!({"prompt": "teal gift box", "background": "random", "format": "jpeg", "width": 160, "height": 160}),
    )
    .await
    .unwrap();
    let a = &scene.artifacts[0];
    assert_eq!((a.name.as_str(), a.media_type.as_str()), ("teal-gift-box-0.jpg", "image/jpeg"));
    let img = decode(a).to_rgb8();
    assert_eq!(img.dimensions(), (160, 160));
    // A painted scene: many distinct colours, unlike a flat backdrop.
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 500, "distinct colours: {}", distinct.len());
}

#[tokio::test]
async fn generate_refuses_bad_params() {
    assert_invalid(
        invoke("generate", vec![], json!({"prompt": "a car", "background": "white", "color": "#ff0000"})).await,
        "color",
    );
    assert_invalid(
        invoke("generate", vec![], json!({"prompt": "a car", "background": "plain", "color": "red"})).await,
        "color",
    );
    assert_invalid(invoke("generate", vec![], json!({"prompt": "   "})).await, "prompt");
    assert_schema_invalid(invoke("generate", vec![], json!({"prompt": "a car", "width": 8})).await);
    assert_schema_invalid(invoke("generate", vec![], json!({"seed": 1})).await);
    assert_schema_invalid(invoke("generate", vec![], json!({"prompt": "a car", "colour": "#ffffff"})).await);
}

// ---- social_formats ---------------------------------------------------------------

#[tokio::test]
async fn social_formats_produces_exact_sizes() {
    let input = picture("poster.png", 640, 400);
    let out = invoke(
        "social_formats",
        vec![input.clone()],
        json!({"formats": ["instagram_square", "story", "facebook", "twitter", "linkedin"]}),
    )
    .await
    .unwrap();
    let expected = [
        ("poster_instagram_square.png", 1080, 1080),
        ("poster_story.png", 1080, 1920),
        ("poster_facebook.png", 1200, 630),
        ("poster_twitter.png", 1600, 900),
        ("poster_linkedin.png", 1200, 627),
    ];
    assert_eq!(names(&out), expected.iter().map(|e| e.0).collect::<Vec<_>>());
    for (name, w, h) in expected {
        let a = named(&out, name);
        assert_eq!(a.media_type, "image/png");
        let img = decode(a);
        assert_eq!(img.dimensions(), (w, h), "{name}");
        // Fill: no bars, every pixel opaque.
        assert!(img.to_rgba8().pixels().all(|p| p[3] == 255), "{name} is opaque");
    }
    assert_eq!(out.metadata["mode"], "fill");
    assert_eq!(out.metadata["count"], 5);
    assert!(!out.metadata["warnings"].as_array().unwrap().is_empty(), "a 640 px source is upscaled: warned");

    // Fit: the landscape source letterboxed in the tall story, bars transparent.
    let out = invoke("social_formats", vec![input], json!({"formats": ["story"], "mode": "fit"})).await.unwrap();
    let img = decode(named(&out, "poster_story.png")).to_rgba8();
    assert_eq!(img.dimensions(), (1080, 1920));
    assert_eq!(img.get_pixel(540, 10)[3], 0, "transparent bar above");
    assert_eq!(img.get_pixel(540, 1910)[3], 0, "transparent bar below");
    assert_eq!(img.get_pixel(540, 960)[3], 255, "picture in the middle");
    assert_eq!(out.metadata["outputs"][0]["content"], json!([0, 622, 1080, 675]));
}

#[tokio::test]
async fn social_formats_refuses_missing_and_broken_images() {
    assert_invalid(invoke("social_formats", vec![], json!({})).await, "input artifact");
    let junk = Artifact::new("broken.png", "image/png", b"\x89PNG\r\n\x1a\nnot really".to_vec());
    assert_invalid(invoke("social_formats", vec![junk], json!({"formats": ["story"]})).await, "broken.png");
    assert_invalid(
        invoke("social_formats", vec![picture("p.png", 64, 64)], json!({"mode": "fill", "pad_color": "#000000"})).await,
        "pad_color",
    );
    assert_schema_invalid(
        invoke("social_formats", vec![picture("p.png", 64, 64)], json!({"formats": ["myspace"]})).await,
    );
}

// ---- transparent_png --------------------------------------------------------------

#[tokio::test]
async fn transparent_png_removes_a_flat_background() {
    let out = invoke("transparent_png", vec![flat_logo_artifact()], json!({"feather": 1.5})).await.unwrap();
    assert_eq!(names(&out), ["logo.png"]);
    let a = &out.artifacts[0];
    assert_eq!(a.media_type, "image/png");
    let img = decode(a);
    assert!(img.color().has_alpha());
    let img = img.to_rgba8();
    assert_eq!(img.dimensions(), (200, 140));
    // Background gone; the ring and bar opaque in their own colour.
    for (x, y) in [(0, 0), (199, 139), (10, 70), (100, 5)] {
        assert_eq!(img.get_pixel(x, y)[3], 0, "({x}, {y}) is background");
    }
    let ring = img.get_pixel(100 + 39, 70 - 20);
    assert_eq!(ring.0, [INK[0], INK[1], INK[2], 255]);
    // Enclosed white (inside the ring, off the bar) is kept by default.
    assert_eq!(img.get_pixel(100, 70 + 18).0, [255, 255, 255, 255]);
    // Soft edge pixels carry the ink colour (decontaminated), not white.
    let edge: Vec<_> = img.pixels().filter(|p| p[3] > 30 && p[3] < 225).collect();
    assert!(!edge.is_empty(), "a feathered edge");
    for p in edge {
        assert!(p[2] as i32 - p[0] as i32 > 60, "edge pixel {p:?} keeps the blue ink");
    }
    assert_eq!(out.metadata["background"], "#ffffff");
    let removed = out.metadata["removed_fraction"].as_f64().unwrap();
    assert!((0.55..0.85).contains(&removed), "removed_fraction {removed}");

    // enclosed + trim: the hole goes too, and the canvas shrinks to the ink.
    let out =
        invoke("transparent_png", vec![flat_logo_artifact()], json!({"enclosed": true, "trim": true, "padding": 2}))
            .await
            .unwrap();
    let img = decode(&out.artifacts[0]).to_rgba8();
    assert_eq!(img.dimensions(), (120 + 4, 96 + 4));
    assert_eq!(img.get_pixel(62, 50 + 18)[3], 0, "hole removed");
}

#[tokio::test]
async fn transparent_png_turns_a_cast_shadow_translucent() {
    let shot = invoke("generate", vec![], json!({"prompt": "green tea can", "seed": 5, "width": 200, "height": 200}))
        .await
        .unwrap();
    let out =
        invoke("transparent_png", shot.artifacts.clone(), json!({"shadow": "soft", "tolerance": 4})).await.unwrap();
    let img = decode(&out.artifacts[0]).to_rgba8();
    assert_eq!(img.get_pixel(0, 0)[3], 0);
    let shadow = img.pixels().filter(|p| p[0] == 0 && p[1] == 0 && p[2] == 0 && (8..200).contains(&p[3])).count();
    assert!(shadow > 200, "translucent shadow pixels: {shadow}");
    assert!(out.metadata["images"][0]["shadow_fraction"].as_f64().unwrap() > 0.005);
    assert_eq!(out.metadata["shadow"], "soft");
    // The can itself (green, opaque) is still there.
    let can = img.pixels().filter(|p| p[3] == 255 && p[1] as i32 > p[0] as i32 + 30).count();
    assert!(can > 1000, "opaque green pixels: {can}");
}

#[tokio::test]
async fn transparent_png_refuses_bad_input() {
    assert_invalid(invoke("transparent_png", vec![], json!({})).await, "input artifact");
    let flat = Artifact::new("flat.png", "image/png", png(&RgbaImage::from_pixel(32, 32, Rgba([9, 9, 9, 255]))));
    assert_invalid(invoke("transparent_png", vec![flat], json!({})).await, "tolerance");
    assert_invalid(
        invoke("transparent_png", vec![flat_logo_artifact()], json!({"background": "white"})).await,
        "background",
    );
    let text = Artifact::new("notes.txt", "text/plain", b"hello".to_vec());
    assert_invalid(invoke("transparent_png", vec![text], json!({})).await, "notes.txt");
    assert_schema_invalid(invoke("transparent_png", vec![flat_logo_artifact()], json!({"tolerance": 500})).await);
}

// ---- distressed -------------------------------------------------------------------

#[tokio::test]
async fn distressed_erodes_alpha_and_keeps_colour() {
    let cut = invoke("transparent_png", vec![flat_logo_artifact()], json!({})).await.unwrap();
    let clean = decode(&cut.artifacts[0]).to_rgba8();
    let params = json!({"intensity": 0.6, "seed": 3});
    let out = invoke("distressed", cut.artifacts.clone(), params.clone()).await.unwrap();
    assert_eq!(names(&out), ["logo.png"]);
    let worn = decode(&out.artifacts[0]).to_rgba8();
    assert_eq!(worn.dimensions(), clean.dimensions());
    let (mut lowered, mut kept) = (0, 0);
    for (a, b) in clean.pixels().zip(worn.pixels()) {
        assert!(b[3] <= a[3], "alpha never grows");
        if a[3] == 255 {
            assert_eq!(&a.0[..3], &b.0[..3], "colour kept");
            if b[3] < 200 {
                lowered += 1;
            } else {
                kept += 1;
            }
        }
    }
    assert!(lowered > 100 && kept > 100, "worn {lowered}, intact {kept}");
    let removed = out.metadata["alpha_removed"].as_f64().unwrap();
    assert!(removed > 0.02 && removed < 0.7, "alpha_removed {removed}");
    assert_eq!(out.metadata["seed"], 3);

    // Seeded: same seed, same bytes; another seed, another texture.
    let again = invoke("distressed", cut.artifacts.clone(), params).await.unwrap();
    assert_eq!(again.artifacts[0].data, out.artifacts[0].data);
    let other = invoke("distressed", cut.artifacts.clone(), json!({"intensity": 0.6, "seed": 4})).await.unwrap();
    assert_ne!(other.artifacts[0].data, out.artifacts[0].data);
}

#[tokio::test]
async fn distressed_refuses_bad_input() {
    assert_invalid(invoke("distressed", vec![], json!({})).await, "input artifact");
    let junk = Artifact::new("scan.jpg", "image/jpeg", vec![0xff, 0xd8, 0xff, 0x00, 0x01]);
    assert_invalid(invoke("distressed", vec![junk], json!({})).await, "scan.jpg");
    assert_schema_invalid(invoke("distressed", vec![flat_logo_artifact()], json!({"intensity": 2})).await);
}

// ---- video ------------------------------------------------------------------------

/// What a GIF holds, read by walking its blocks.
#[derive(Debug)]
struct GifInfo {
    width: u16,
    height: u16,
    delays: Vec<u16>,
    looping: bool,
}

fn read_gif(d: &[u8]) -> GifInfo {
    assert!(d.starts_with(b"GIF89a") || d.starts_with(b"GIF87a"), "GIF header");
    let le = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
    let (width, height) = (le(6), le(8));
    let mut i = 13;
    if d[10] & 0x80 != 0 {
        i += 3 << ((d[10] & 7) + 1);
    }
    let skip_blocks = |mut j: usize| {
        while d[j] != 0 {
            j += 1 + d[j] as usize;
        }
        j + 1
    };
    let (mut delays, mut looping, mut delay) = (Vec::new(), false, 0);
    loop {
        match d[i] {
            0x21 => {
                match d[i + 1] {
                    0xf9 => delay = le(i + 4),
                    0xff => looping |= &d[i + 3..i + 14] == b"NETSCAPE2.0",
                    _ => {}
                }
                i = skip_blocks(i + 2);
            }
            0x2c => {
                let packed = d[i + 9];
                i += 10;
                if packed & 0x80 != 0 {
                    i += 3 << ((packed & 7) + 1);
                }
                i = skip_blocks(i + 1); // LZW minimum code size, then data
                delays.push(delay);
            }
            0x3b => break,
            other => panic!("unexpected GIF block {other:#x} at {i}"),
        }
    }
    GifInfo { width, height, delays, looping }
}

fn solid(name: &str, w: u32, h: u32, c: [u8; 3]) -> Artifact {
    Artifact::new(name, "image/png", png(&RgbaImage::from_pixel(w, h, Rgba([c[0], c[1], c[2], 255]))))
}

#[tokio::test]
async fn video_turns_frames_into_an_animated_gif() {
    let frames = vec![
        solid("a.png", 96, 64, [220, 30, 30]),
        picture("b.png", 96, 64),
        // Another size: fitted inside the first frame's.
        solid("c.png", 50, 80, [30, 30, 220]),
    ];
    let out =
        invoke("video", frames, json!({"fps": 10, "hold": 0.5, "crossfade": 0.3, "loop": true, "max_colors": 64}))
            .await
            .unwrap();
    assert_eq!(names(&out), ["animation.gif"]);
    assert_eq!(out.artifacts[0].media_type, "image/gif");
    let gif = read_gif(&out.artifacts[0].data);
    assert_eq!((gif.width, gif.height), (96, 64));
    // 3 holds + 3 crossfades of 3 blended frames (the last one back to the start).
    assert_eq!(gif.delays.len(), 12);
    assert_eq!(gif.delays.iter().filter(|d| **d == 50).count(), 3);
    assert_eq!(gif.delays.iter().filter(|d| **d == 10).count(), 9);
    assert!(gif.looping);
    assert_eq!(out.metadata["frames"], 12);
    assert_eq!(out.metadata["source_frames"], 3);
    assert_eq!(out.metadata["duration_s"], 2.4);
    assert_eq!(out.metadata["width"], 96);
    assert!(out.metadata["colors"].as_u64().unwrap() <= 64);

    // Played once without fades: one GIF frame per image, no loop extension.
    let out = invoke(
        "video",
        vec![solid("a.png", 32, 32, [0, 0, 0]), solid("b.png", 32, 32, [255, 255, 255])],
        json!({"loop": false, "crossfade": 0, "hold": 1.5}),
    )
    .await
    .unwrap();
    let gif = read_gif(&out.artifacts[0].data);
    assert_eq!(gif.delays, [150, 150]);
    assert!(!gif.looping);
}

#[tokio::test]
async fn video_refuses_bad_input() {
    assert_invalid(invoke("video", vec![], json!({})).await, "input artifact");
    let junk = Artifact::new("frame2.png", "image/png", b"garbage".to_vec());
    assert_invalid(invoke("video", vec![solid("frame1.png", 16, 16, [1, 2, 3]), junk], json!({})).await, "frame2.png");
    assert_invalid(
        invoke("video", vec![solid("f.png", 16, 16, [1, 2, 3])], json!({"background": "black"})).await,
        "background",
    );
    assert_schema_invalid(invoke("video", vec![solid("f.png", 16, 16, [1, 2, 3])], json!({"fps": 0})).await);
}

// ---- a chain ------------------------------------------------------------------------

#[tokio::test]
async fn logo_chain_generate_cutout_distress_animate() {
    let logo = invoke(
        "generate",
        vec![],
        json!({"prompt": "Zebra Yard", "style": "logo", "seed": 2, "width": 160, "height": 160}),
    )
    .await
    .unwrap();
    let cut = invoke("transparent_png", logo.artifacts.clone(), json!({"trim": true, "padding": 4})).await.unwrap();
    assert_eq!(cut.metadata["background"], "#ffffff");
    let cut_img = decode(&cut.artifacts[0]).to_rgba8();
    assert!(cut_img.width() < 160 && cut_img.height() < 160, "trimmed to the mark: {:?}", cut_img.dimensions());
    assert_eq!(cut_img.get_pixel(0, 0)[3], 0);
    let worn = invoke("distressed", cut.artifacts.clone(), json!({"intensity": 0.4, "seed": 1})).await.unwrap();
    let mut frames = cut.artifacts.clone();
    frames[0].name = "clean.png".into();
    frames.extend(worn.artifacts.clone());
    let anim = invoke("video", frames, json!({"fps": 8, "hold": 0.5, "crossfade": 0.25, "background": "#ffffff"}))
        .await
        .unwrap();
    let gif = read_gif(&anim.artifacts[0].data);
    assert_eq!((gif.width as u32, gif.height as u32), cut_img.dimensions());
    assert_eq!(gif.delays.len(), 2 * (1 + 2));
}
