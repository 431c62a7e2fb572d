//! Native tests: the SVG parses, and rendered back (resvg) it matches the input.

use crate::vectorize::{otsu, vectorize, Mode, Params};
use crate::VectorTrace;
use image::{Rgba, RgbaImage};
use stagecraft_sdk::prelude::*;

/// Renders `svg` at its own size; returns straight-alpha RGBA pixels.
fn render(svg: &str, w: u32, h: u32) -> Vec<[u8; 4]> {
    let tree = resvg::usvg::Tree::from_str(svg, &resvg::usvg::Options::default()).expect("the SVG parses");
    assert_eq!(tree.size().width(), w as f32);
    assert_eq!(tree.size().height(), h as f32);
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h).unwrap();
    resvg::render(&tree, resvg::tiny_skia::Transform::identity(), &mut pixmap.as_mut());
    pixmap
        .pixels()
        .iter()
        .map(|p| {
            let c = p.demultiply();
            [c.red(), c.green(), c.blue(), c.alpha()]
        })
        .collect()
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64;
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count() as f64;
    inter / union
}

/// White background; a black disc, a black square frame (a hole inside)
/// and a thin diagonal bar.
fn shapes() -> RgbaImage {
    RgbaImage::from_fn(160, 110, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let disc = (fx - 45.0).powi(2) + (fy - 55.0).powi(2) < 32.0f32.powi(2);
        let frame =
            (90..140).contains(&x) && (20..70).contains(&y) && !((102..128).contains(&x) && (32..58).contains(&y));
        let bar = (fx - fy - 20.0).abs() < 3.0 && (80.0..150.0).contains(&fx) && fy > 75.0;
        if disc || frame || bar {
            Rgba([10, 10, 10, 255])
        } else {
            Rgba([250, 250, 250, 255])
        }
    })
}

fn input_mask(img: &RgbaImage) -> Vec<bool> {
    img.pixels().map(|p| p[0] < 128).collect()
}

#[test]
fn threshold_trace_renders_close_to_the_input() {
    let img = shapes();
    let t = vectorize(&img, &Params::default(), "shapes.png");
    let rendered: Vec<bool> = render(&t.svg, 160, 110).iter().map(|p| p[3] >= 128).collect();
    let score = iou(&rendered, &input_mask(&img));
    assert!(score > 0.97, "IoU {score}");
    assert!(t.otsu);
    let thr = t.threshold.unwrap();
    assert!((11..=250).contains(&thr), "{thr}");
    let layer = &t.layers[0];
    assert_eq!(layer.color, "#000000");
    assert_eq!(layer.contours, 4, "{layer:?}"); // disc, frame, its hole, bar
    assert_eq!(layer.holes, 1);
    assert!(t.svg.contains("fill-rule=\"evenodd\""));
    assert!(t.svg.contains(" C") || t.svg.contains("C"), "curves were fitted");
    assert!(t.svg.contains(r#"viewBox="0 0 160 110""#));
}

#[test]
fn polygons_at_zero_tolerance_are_pixel_exact() {
    let img = shapes();
    let p = Params { smooth: false, tolerance: 0.0, min_area: 0, ..Params::default() };
    let t = vectorize(&img, &p, "shapes.png");
    let rendered: Vec<bool> = render(&t.svg, 160, 110).iter().map(|p| p[3] >= 128).collect();
    assert_eq!(iou(&rendered, &input_mask(&img)), 1.0);
}

#[test]
fn simplification_reduces_nodes_and_stays_close() {
    let img = shapes();
    let tight = vectorize(&img, &Params { tolerance: 0.5, ..Params::default() }, "s");
    let loose = vectorize(&img, &Params { tolerance: 3.0, ..Params::default() }, "s");
    assert!(
        loose.layers[0].segments < tight.layers[0].segments,
        "{} vs {}",
        loose.layers[0].segments,
        tight.layers[0].segments
    );
    let rendered: Vec<bool> = render(&loose.svg, 160, 110).iter().map(|p| p[3] >= 128).collect();
    assert!(iou(&rendered, &input_mask(&img)) > 0.93);
    // A square frame stays square: its outer boundary keeps straight edges.
    let sq = RgbaImage::from_fn(40, 40, |x, y| {
        if (5..35).contains(&x) && (5..35).contains(&y) {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let t = vectorize(&sq, &Params::default(), "sq");
    assert!(t.svg.contains(r#"d="M5 5L35 5L35 35L5 35Z""#), "{}", t.svg);
}

#[test]
fn invert_and_explicit_threshold() {
    let img = shapes();
    let p = Params { threshold: Some(128), invert: true, color: Some("#1f4e9a".into()), ..Params::default() };
    let t = vectorize(&img, &p, "s");
    assert_eq!(t.threshold, Some(128));
    assert!(!t.otsu);
    assert_eq!(t.layers[0].color, "#1f4e9a");
    let rendered: Vec<bool> = render(&t.svg, 160, 110).iter().map(|p| p[3] >= 128).collect();
    let light: Vec<bool> = input_mask(&img).iter().map(|b| !b).collect();
    assert!(iou(&rendered, &light) > 0.97);
}

#[test]
fn colors_mode_layers_render_the_right_colours() {
    let img = RgbaImage::from_fn(120, 90, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        if (fx - 40.0).powi(2) + (fy - 45.0).powi(2) < 25.0f32.powi(2) {
            Rgba([30, 80, 200, 255])
        } else if (75..110).contains(&x) && (20..70).contains(&y) {
            Rgba([220, 40, 40, 255])
        } else {
            Rgba([255, 255, 255, 255])
        }
    });
    let p = Params { mode: Mode::Colors, colors: Some(3), ..Params::default() };
    let t = vectorize(&img, &p, "logo.png");
    let colors: Vec<&str> = t.layers.iter().map(|l| l.color.as_str()).collect();
    assert_eq!(colors, ["#ffffff", "#1e50c8", "#dc2828"]);
    let rendered = render(&t.svg, 120, 90);
    let matching = rendered
        .iter()
        .zip(img.pixels())
        .filter(|(r, i)| r[3] == 255 && (0..3).all(|c| (r[c] as i32 - i[c] as i32).abs() <= 8))
        .count();
    let share = matching as f64 / (120.0 * 90.0);
    assert!(share > 0.97, "{share}");
    // Stacked: the bottom layer covers everything, so no pixel is left see-through.
    assert!(rendered.iter().all(|p| p[3] == 255));
}

#[test]
fn transparent_pixels_are_background() {
    let img = RgbaImage::from_fn(30, 30, |x, y| {
        if (10..20).contains(&x) && (10..20).contains(&y) {
            Rgba([200, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let t = vectorize(&img, &Params { mode: Mode::Colors, colors: Some(2), ..Params::default() }, "t");
    assert_eq!(t.layers.len(), 1);
    assert_eq!(t.layers[0].pixels, 100);
    let t = vectorize(&img, &Params { threshold: Some(250), ..Params::default() }, "t");
    assert_eq!(t.layers[0].pixels, 100);
}

#[test]
fn otsu_splits_two_levels() {
    let mut h = [0u64; 256];
    h[40] = 500;
    h[200] = 300;
    let t = otsu(&h);
    assert!((40..200).contains(&t), "{t}");
}

#[test]
fn deterministic_output() {
    let img = shapes();
    let p = Params { mode: Mode::Colors, colors: Some(2), ..Params::default() };
    assert_eq!(vectorize(&img, &p, "a").svg, vectorize(&img, &p, "a").svg);
}

#[test]
fn title_is_escaped() {
    let t = vectorize(&shapes(), &Params::default(), "<script>&\"x\".png");
    assert!(t.svg.contains("<title>&lt;script&gt;&amp;&quot;x&quot;.png</title>"));
    render(&t.svg, 160, 110);
}

#[test]
fn params_validation() {
    assert!(serde_json::from_str::<Params>(r#"{"tolerence": 1}"#).is_err());
    let p: Params = serde_json::from_str(r#"{"mode": "threshold", "colors": 4}"#).unwrap();
    assert!(p.validate().is_err());
    let p: Params = serde_json::from_str(r#"{"mode": "colors", "threshold": 100}"#).unwrap();
    assert!(p.validate().is_err());
    let p: Params = serde_json::from_str(r#"{"mode": "colors", "colors": 17}"#).unwrap();
    assert!(p.validate().unwrap_err().contains("between 2 and 16"));
    let p: Params = serde_json::from_str(r#"{"color": "blue"}"#).unwrap();
    assert!(p.validate().unwrap_err().contains("color \"blue\" is not a hex colour: use #rgb or #rrggbb"));
    let p: Params = serde_json::from_str(r#"{"color": "1E50c8"}"#).unwrap();
    assert!(p.validate().is_ok());
    let p: Params = serde_json::from_str(r#"{"tolerance": 50}"#).unwrap();
    assert!(p.validate().is_err());
    let p: Params =
        serde_json::from_str(r#"{"mode": "colors", "colors": 6, "tolerance": 2, "smooth": false}"#).unwrap();
    assert!(p.validate().is_ok());
}

#[test]
fn stage_run_outputs_svg_and_metadata() {
    let mut png = Vec::new();
    shapes().write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let out = VectorTrace::run(Input {
        artifacts: vec![Artifact { name: "shapes.png".into(), media_type: "image/png".into(), data: png }],
        params: Params::default(),
    })
    .unwrap();
    assert_eq!(out.artifacts.len(), 1);
    assert_eq!(out.artifacts[0].name, "shapes.svg");
    assert_eq!(out.artifacts[0].media_type, "image/svg+xml");
    assert_eq!(out.metadata["contours"], 4);
    let err = VectorTrace::run(Input { artifacts: vec![], params: Params::default() }).err().unwrap();
    assert!(matches!(err, StageError::InvalidInput(_)));
}
