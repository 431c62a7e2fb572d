//! End to end through the real host: the logo stages (`color_separations`,
//! `vector_trace`) and the report writers (`report_csv`, `report_html`,
//! `report_xlsx`), each with a happy path checked on its actual output and
//! an invalid-input case.

use image::{Rgba, RgbaImage};
use serde_json::{json, Value};
use stagecraft_runtime::{Artifact, InvokeError, InvokeOptions, StageInput, StageOutput};

const BLUE: [u8; 3] = [30, 80, 200];
const RED: [u8; 3] = [220, 40, 40];
const WHITE: [u8; 3] = [255, 255, 255];

/// A flat logo: white plate, a blue disc, a red square with a square hole.
fn logo() -> RgbaImage {
    RgbaImage::from_fn(160, 100, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let disc = (fx - 50.0).powi(2) + (fy - 50.0).powi(2) < 30.0f32.powi(2);
        let square =
            (95..145).contains(&x) && (25..75).contains(&y) && !((110..130).contains(&x) && (40..60).contains(&y));
        let [r, g, b] = if disc {
            BLUE
        } else if square {
            RED
        } else {
            WHITE
        };
        Rgba([r, g, b, 255])
    })
}

fn png(img: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn logo_artifact() -> Artifact {
    Artifact::new("logo.png", "image/png", png(&logo()))
}

async fn invoke(stage: &str, artifacts: Vec<Artifact>, params: Value) -> Result<StageOutput, InvokeError> {
    stagecraft_tests::runtime().invoke(stage, StageInput::new(artifacts, params), InvokeOptions::default()).await
}

fn named<'a>(out: &'a StageOutput, name: &str) -> &'a Artifact {
    out.artifacts.iter().find(|a| a.name == name).unwrap_or_else(|| {
        panic!("no artifact {name} in {:?}", out.artifacts.iter().map(|a| &a.name).collect::<Vec<_>>())
    })
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

#[tokio::test]
async fn color_separations_splits_a_logo_into_spot_colours() {
    let out = invoke("color_separations", vec![logo_artifact()], json!({"colors": 3, "seed": 7})).await.unwrap();
    let names: Vec<&str> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "logo-composite.png",
            "logo-sep-01-ffffff.png",
            "logo-sep-02-1e50c8.png",
            "logo-sep-03-dc2828.png",
            "logo-palette.json"
        ]
    );
    assert_eq!(out.metadata["colors"], 3);

    // The palette: exact logo colours, shares that add up, Lab values.
    let palette: Value = serde_json::from_slice(&named(&out, "logo-palette.json").data).unwrap();
    let colors = palette["colors"].as_array().unwrap();
    let hexes: Vec<&str> = colors.iter().map(|c| c["hex"].as_str().unwrap()).collect();
    assert_eq!(hexes, ["#ffffff", "#1e50c8", "#dc2828"]);
    let share: f64 = colors.iter().map(|c| c["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-3, "{share}");
    assert!((colors[0]["lab"][0].as_f64().unwrap() - 100.0).abs() < 0.1);

    // Each layer is one colour on transparency; stacked, they rebuild the
    // composite, which equals the (already flat) input.
    let composite = image::load_from_memory(&named(&out, "logo-composite.png").data).unwrap().to_rgba8();
    assert_eq!(composite, logo());
    let mut stacked = RgbaImage::new(160, 100);
    for (name, rgb) in
        [("logo-sep-01-ffffff.png", WHITE), ("logo-sep-02-1e50c8.png", BLUE), ("logo-sep-03-dc2828.png", RED)]
    {
        let layer = image::load_from_memory(&named(&out, name).data).unwrap().to_rgba8();
        for (dst, src) in stacked.pixels_mut().zip(layer.pixels()) {
            match src[3] {
                0 => {}
                255 => {
                    assert_eq!(&src.0[..3], &rgb, "{name}");
                    assert_eq!(dst[3], 0, "layers overlap");
                    *dst = *src;
                }
                a => panic!("{name}: partial alpha {a}"),
            }
        }
    }
    assert_eq!(stacked, composite);

    // Same input and seed, same bytes.
    let again = invoke("color_separations", vec![logo_artifact()], json!({"colors": 3, "seed": 7})).await.unwrap();
    assert_eq!(again.artifacts, out.artifacts);
}

#[tokio::test]
async fn color_separations_refuses_bad_input() {
    assert_schema_invalid(invoke("color_separations", vec![logo_artifact()], json!({"colors": 40})).await);
    assert_schema_invalid(invoke("color_separations", vec![logo_artifact()], json!({"colours": 3})).await);
    assert_invalid(
        invoke("color_separations", vec![Artifact::new("notes.txt", "text/plain", b"hello".to_vec())], json!({})).await,
        "notes.txt",
    );
}

#[tokio::test]
async fn vector_trace_outputs_svg_for_both_modes() {
    let out = invoke("vector_trace", vec![logo_artifact()], json!({"mode": "threshold"})).await.unwrap();
    assert_eq!(out.artifacts.len(), 1);
    let svg_art = &out.artifacts[0];
    assert_eq!(svg_art.name, "logo.svg");
    assert_eq!(svg_art.media_type, "image/svg+xml");
    let svg = String::from_utf8(svg_art.data.clone()).unwrap();
    assert!(svg.starts_with("<?xml"));
    assert!(svg.contains(r#"viewBox="0 0 160 100""#), "{svg}");
    assert!(svg.contains(r#"fill-rule="evenodd""#));
    assert!(svg.trim_end().ends_with("</svg>"));
    // Otsu separates the dark blue and red from white: the disc, the square
    // and its hole.
    assert_eq!(out.metadata["contours"], 3, "{}", out.metadata);
    assert!(out.metadata["threshold"].as_u64().is_some());
    // The disc is curves, the square is straight lines.
    assert!(svg.contains('C') && svg.contains('L'));

    let out = invoke("vector_trace", vec![logo_artifact()], json!({"mode": "colors", "colors": 3})).await.unwrap();
    let svg = String::from_utf8(out.artifacts[0].data.clone()).unwrap();
    let layers = out.metadata["layers"].as_array().unwrap();
    let colors: Vec<&str> = layers.iter().map(|l| l["color"].as_str().unwrap()).collect();
    assert_eq!(colors, ["#ffffff", "#1e50c8", "#dc2828"]);
    for c in colors {
        assert!(svg.contains(&format!(r#"fill="{c}""#)), "{c}");
    }
    assert_eq!(svg.matches("<path ").count(), 3);
}

#[tokio::test]
async fn vector_trace_refuses_bad_input() {
    assert_invalid(
        invoke("vector_trace", vec![logo_artifact()], json!({"mode": "colors", "threshold": 100})).await,
        "threshold",
    );
    assert_schema_invalid(invoke("vector_trace", vec![logo_artifact()], json!({"tolerance": 50})).await);
    assert_invalid(invoke("vector_trace", vec![], json!({})).await, "image");
}

/// A run summary as the host would feed a report step.
fn run_summary() -> Value {
    json!({
        "title": "Logo run <1>",
        "run": {"id": "run-7", "pipeline": "logo", "status": "succeeded", "duration_ms": 950},
        "steps": [
            {"name": "separate", "stage": "color_separations", "version": "0.1.0", "status": "succeeded", "attempts": 1,
             "duration_ms": 420.5, "params": {"colors": 3, "note": "a, \"quoted\" value"},
             "artifacts": [{"name": "logo-composite.png", "media_type": "image/png", "bytes": 900}]},
            {"name": "<script>alert(1)</script>", "stage": "vector_trace", "version": "0.1.0", "status": "failed", "attempts": 3,
             "duration_ms": 510, "error": "unavailable: busy",
             "artifacts": []}
        ]
    })
}

fn report_inputs() -> Vec<Artifact> {
    vec![logo_artifact(), Artifact::new("notes.txt", "text/plain", b"plain text, <b>not html</b>".to_vec())]
}

#[tokio::test]
async fn report_csv_lists_steps_and_artifacts() {
    let out = invoke("report_csv", report_inputs(), run_summary()).await.unwrap();
    let report = String::from_utf8(named(&out, "report.csv").data.clone()).unwrap();
    let lines: Vec<&str> = report.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "step,stage,version,status,attempts,duration_ms,started_at,error,params,artifact_count,artifact_bytes,artifacts");
    assert_eq!(lines.len(), 3, "{report}");
    assert!(lines[1].starts_with("separate,color_separations,0.1.0,succeeded,1,420.5,"), "{}", lines[1]);
    // Embedded quotes are doubled inside a quoted field.
    assert!(lines[1].contains(r#""{""colors"":3,""note"":""a, \""quoted\"" value""}""#), "{}", lines[1]);
    assert!(lines[2].starts_with("<script>alert(1)</script>,vector_trace,0.1.0,failed,3,510,"));

    let artifacts = String::from_utf8(named(&out, "artifacts.csv").data.clone()).unwrap();
    let lines: Vec<&str> = artifacts.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "name,media_type,bytes,width,height,step");
    assert!(lines[1].starts_with("logo.png,image/png,") && lines[1].ends_with(",160,100,"), "{}", lines[1]);
    assert!(lines[2].starts_with("notes.txt,text/plain,27,,,"), "{}", lines[2]);

    // Without steps: the input artifacts.
    let out = invoke("report_csv", report_inputs(), json!({})).await.unwrap();
    assert_eq!(out.artifacts.len(), 1);
    assert_eq!(out.metadata["kind"], "artifacts");
}

#[tokio::test]
async fn report_csv_refuses_bad_input() {
    assert_invalid(invoke("report_csv", vec![], json!({})).await, "nothing to report");
    assert_schema_invalid(invoke("report_csv", vec![], json!({"steps": [{"name": "x"}]})).await);
}

#[tokio::test]
async fn report_html_is_self_contained_and_escaped() {
    let out = invoke("report_html", report_inputs(), run_summary()).await.unwrap();
    let page = named(&out, "report.html");
    assert!(page.media_type.starts_with("text/html"));
    let html = String::from_utf8(page.data.clone()).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<img src=\"data:image/png;base64,iVBORw0KGgo"));
    assert!(!html.contains("<script"), "a step name became markup");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("<title>Logo run &lt;1&gt;</title>"));
    assert!(html.contains("plain text, &lt;b&gt;not html&lt;/b&gt;"));
    assert!(html.contains("420.5 ms") && html.contains("510 ms"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert_eq!(out.metadata["images_embedded"], 1);
}

#[tokio::test]
async fn report_html_refuses_bad_input() {
    assert_schema_invalid(invoke("report_html", report_inputs(), json!({"thumbnail_px": 4})).await);
    assert_invalid(
        invoke("report_html", vec![], json!({"steps": [{"name": " ", "stage": "noop"}]})).await,
        "name is empty",
    );
}

#[tokio::test]
async fn report_xlsx_writes_a_workbook_with_thumbnails() {
    let out = invoke("report_xlsx", report_inputs(), run_summary()).await.unwrap();
    let book = named(&out, "report.xlsx");
    assert_eq!(book.media_type, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
    let data = &book.data;
    assert!(data.starts_with(b"PK\x03\x04"), "a zip container");
    // Entry names are stored uncompressed: three sheets and one embedded image.
    let has = |needle: &str| data.windows(needle.len()).any(|w| w == needle.as_bytes());
    for part in [
        "xl/workbook.xml",
        "xl/worksheets/sheet1.xml",
        "xl/worksheets/sheet2.xml",
        "xl/worksheets/sheet3.xml",
        "xl/media/image1.png",
    ] {
        assert!(has(part), "{part}");
    }
    assert!(!has("xl/media/image2"));
    assert_eq!(out.metadata["sheets"], json!(["Steps", "Artifacts", "Summary"]));
    assert_eq!(out.metadata["thumbnails"], 1);
    assert_eq!(out.metadata["steps"], 2);
    // Deterministic: the same run gives the same bytes.
    let again = invoke("report_xlsx", report_inputs(), run_summary()).await.unwrap();
    assert_eq!(again.artifacts[0].data, out.artifacts[0].data);
}

#[tokio::test]
async fn report_xlsx_refuses_bad_input() {
    assert_invalid(invoke("report_xlsx", vec![], json!({})).await, "nothing to report");
    assert_invalid(
        invoke("report_xlsx", vec![], json!({"steps": [{"name": "a", "stage": "b", "duration_ms": -5}]})).await,
        "duration_ms",
    );
}

/// The logo stages' real outputs, reported: what a pipeline's last step sees.
#[tokio::test]
async fn reports_of_a_real_run() {
    let sep = invoke("color_separations", vec![logo_artifact()], json!({"colors": 3})).await.unwrap();
    let svg = invoke("vector_trace", vec![logo_artifact()], json!({})).await.unwrap();
    let step = |name: &str, out: &StageOutput| {
        json!({
            "name": name, "stage": out.stage, "version": out.version, "status": "succeeded", "attempts": 1,
            "artifacts": out.artifacts.iter().map(|a| json!({"name": a.name, "media_type": a.media_type, "bytes": a.data.len()})).collect::<Vec<_>>(),
        })
    };
    let params = json!({"steps": [step("separate", &sep), step("trace", &svg)]});
    let mut artifacts = sep.artifacts.clone();
    artifacts.extend(svg.artifacts.clone());
    let html = invoke("report_html", artifacts.clone(), params.clone()).await.unwrap();
    let page = String::from_utf8(html.artifacts[0].data.clone()).unwrap();
    // Four PNGs from the separation and the SVG trace are all shown inline.
    assert_eq!(html.metadata["images_embedded"], 5, "{}", html.metadata);
    assert!(page.contains("data:image/svg+xml;base64,"));
    assert!(page.contains("from <i>separate</i>") && page.contains("from <i>trace</i>"));
    let xlsx = invoke("report_xlsx", artifacts.clone(), params.clone()).await.unwrap();
    assert_eq!(xlsx.metadata["thumbnails"], 4, "PNG thumbnails; SVG has none");
    let csv = invoke("report_csv", artifacts, params).await.unwrap();
    let listing = String::from_utf8(named(&csv, "artifacts.csv").data.clone()).unwrap();
    assert!(listing.contains("logo.svg,image/svg+xml,"));
    assert!(listing.contains("logo-palette.json,application/json,"));
}
