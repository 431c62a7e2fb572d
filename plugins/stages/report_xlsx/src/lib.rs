//! `report_xlsx`: an Excel workbook of a pipeline run, written with
//! `rust_xlsxwriter` (pure Rust).
//!
//! Sheets: **Steps** (one row per step: stage, version, status, attempts,
//! duration, start, error, params as JSON text, artifacts; a totals row with
//! live SUM formulas), **Artifacts** (name, media type, size, dimensions,
//! producing step, and a thumbnail embedded for each image) and **Summary**.
//! Output is deterministic: the document date is the run's start (or
//! 1980-01-01) rather than the clock.

use image::GenericImageView;
use rust_xlsxwriter::{
    Color, DocProperties, ExcelDateTime, Format, FormatAlign, FormatBorder, Formula, Image, Workbook, Worksheet,
    XlsxError,
};
use stagecraft_reporting::{self as reporting, ArtifactRow, ImageKind, ReportParams, Step};
use stagecraft_sdk::prelude::*;

reporting::report_params! {
    /// Parameters of `report_xlsx`.
    #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Params {
        title: "Workbook title (document properties and the Summary sheet).",
        /// Largest side of an image thumbnail in the Artifacts sheet, in pixels
        /// (16 to 512).
        #[serde(default = "default_thumb")]
        #[schemars(range(min = 16, max = 512))]
        pub thumbnail_px: u32,
    }
}

fn default_thumb() -> u32 {
    96
}

pub const STEP_HEADER: [&str; 11] = [
    "#",
    "Step",
    "Stage",
    "Version",
    "Status",
    "Attempts",
    "Duration (ms)",
    "Started",
    "Error",
    "Params (JSON)",
    "Artifacts",
];
pub const ARTIFACT_HEADER: [&str; 8] = ["Name", "Media type", "Bytes", "Size", "Width", "Height", "Step", "Thumbnail"];

/// Excel's limit on the text in one cell.
const CELL_MAX: usize = 32_767;

fn clip(s: &str) -> String {
    if s.len() <= CELL_MAX {
        return s.to_string();
    }
    let mut end = CELL_MAX - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

struct Styles {
    header: Format,
    text: Format,
    wrap: Format,
    mono: Format,
    int: Format,
    ms: Format,
    ok: Format,
    fail: Format,
    other: Format,
    total_label: Format,
    total_int: Format,
    total_ms: Format,
    key: Format,
    title: Format,
}

impl Styles {
    fn new() -> Self {
        let base = Format::new().set_align(FormatAlign::Top);
        let total = Format::new().set_bold().set_border_top(FormatBorder::Thin);
        Styles {
            header: Format::new()
                .set_bold()
                .set_font_color(Color::White)
                .set_background_color(Color::RGB(0x2F3B52))
                .set_border_bottom(FormatBorder::Medium)
                .set_align(FormatAlign::VerticalCenter),
            text: base.clone(),
            wrap: base.clone().set_text_wrap(),
            mono: base.clone().set_text_wrap().set_font_name("Consolas").set_font_size(9),
            int: base.clone().set_num_format("#,##0"),
            ms: base.clone().set_num_format("#,##0.0"),
            ok: base.clone().set_bold().set_font_color(Color::RGB(0x12805C)),
            fail: base.clone().set_bold().set_font_color(Color::RGB(0xC4320A)),
            other: base.clone().set_bold().set_font_color(Color::RGB(0x475467)),
            total_label: total.clone(),
            total_int: total.clone().set_num_format("#,##0"),
            total_ms: total.set_num_format("#,##0.0"),
            key: Format::new().set_bold(),
            title: Format::new().set_bold().set_font_size(14),
        }
    }
}

fn xerr(e: XlsxError) -> StageError {
    StageError::failed(format!("xlsx: {e}"))
}

fn header(ws: &mut Worksheet, cols: &[&str], st: &Styles) -> Result<(), XlsxError> {
    for (c, h) in cols.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *h, &st.header)?;
    }
    ws.set_row_height(0, 20)?;
    ws.set_freeze_panes(1, 0)?;
    Ok(())
}

/// Width in characters that fits the longest line of the column, clamped.
fn fit_width(texts: impl Iterator<Item = String>, min: usize, max: usize) -> f64 {
    texts.map(|t| t.lines().map(|l| l.chars().count()).max().unwrap_or(0)).max().unwrap_or(0).clamp(min, max) as f64
        + 2.0
}

fn steps_sheet(ws: &mut Worksheet, steps: Option<&[Step]>, st: &Styles) -> Result<(), XlsxError> {
    ws.set_name("Steps")?;
    header(ws, &STEP_HEADER, st)?;
    let Some(steps) = steps else {
        ws.write_string(1, 1, "No steps were given; the Artifacts sheet lists the input artifacts.")?;
        ws.set_column_width(1, 70)?;
        return Ok(());
    };
    for (i, s) in steps.iter().enumerate() {
        let r = i as u32 + 1;
        let status = reporting::status_of(s);
        let status_fmt = match reporting::status_class(status) {
            "ok" => &st.ok,
            "fail" => &st.fail,
            _ => &st.other,
        };
        ws.write_number_with_format(r, 0, (i + 1) as f64, &st.int)?;
        ws.write_string_with_format(r, 1, clip(&s.name), &st.text)?;
        ws.write_string_with_format(r, 2, clip(&s.stage), &st.text)?;
        if let Some(v) = &s.version {
            ws.write_string_with_format(r, 3, clip(v), &st.text)?;
        }
        ws.write_string_with_format(r, 4, clip(status), status_fmt)?;
        if let Some(a) = s.attempts {
            ws.write_number_with_format(r, 5, a as f64, &st.int)?;
        }
        if let Some(d) = s.duration_ms {
            ws.write_number_with_format(r, 6, d, &st.ms)?;
        }
        if let Some(t) = &s.started_at {
            ws.write_string_with_format(r, 7, clip(t), &st.text)?;
        }
        if let Some(e) = &s.error {
            ws.write_string_with_format(r, 8, clip(e), &st.wrap)?;
        }
        let params = reporting::params_json(s);
        if !params.is_empty() {
            ws.write_string_with_format(r, 9, clip(&params), &st.mono)?;
        }
        let arts = reporting::artifact_list(s).join("\n");
        if !arts.is_empty() {
            ws.write_string_with_format(r, 10, clip(&arts), &st.wrap)?;
        }
    }
    let last = steps.len() as u32;
    if !steps.is_empty() {
        let t = last + 1;
        ws.write_string_with_format(t, 1, "Total", &st.total_label)?;
        for c in [0u16, 2, 3, 4, 7, 8, 9, 10] {
            ws.write_blank(t, c, &st.total_label)?;
        }
        let attempts: u64 = steps.iter().map(|s| s.attempts.unwrap_or(0) as u64).sum();
        let ms: f64 = steps.iter().filter_map(|s| s.duration_ms).sum();
        ws.write_formula_with_format(
            t,
            5,
            Formula::new(format!("=SUM(F2:F{})", last + 1)).set_result(attempts.to_string()),
            &st.total_int,
        )?;
        ws.write_formula_with_format(
            t,
            6,
            Formula::new(format!("=SUM(G2:G{})", last + 1)).set_result(ms.to_string()),
            &st.total_ms,
        )?;
        ws.autofilter(0, 0, last, STEP_HEADER.len() as u16 - 1)?;
    }
    // Column widths from the content.
    let col = |f: &dyn Fn(&Step) -> String| steps.iter().map(f).collect::<Vec<_>>();
    ws.set_column_width(0, 5)?;
    ws.set_column_width(1, fit_width(col(&|s| s.name.clone()).into_iter().chain(["Step".into()]), 8, 40))?;
    ws.set_column_width(2, fit_width(col(&|s| s.stage.clone()).into_iter(), 8, 30))?;
    ws.set_column_width(3, 9)?;
    ws.set_column_width(4, 11)?;
    ws.set_column_width(5, 10)?;
    ws.set_column_width(6, 14)?;
    ws.set_column_width(7, fit_width(col(&|s| s.started_at.clone().unwrap_or_default()).into_iter(), 8, 26))?;
    ws.set_column_width(8, fit_width(col(&|s| s.error.clone().unwrap_or_default()).into_iter(), 8, 40))?;
    ws.set_column_width(9, fit_width(col(&reporting::params_json).into_iter(), 14, 50))?;
    ws.set_column_width(10, fit_width(col(&|s| reporting::artifact_list(s).join("\n")).into_iter(), 10, 45))?;
    Ok(())
}

/// A PNG thumbnail that fits `2 * px` (sharp on high-density screens) for
/// PNG/JPEG; GIFs go in as they are when small. None for other formats.
fn thumbnail(data: &[u8], kind: ImageKind, px: u32) -> Option<Vec<u8>> {
    match kind {
        ImageKind::Png | ImageKind::Jpeg => {
            let img = image::load_from_memory(data).ok()?;
            let (w, h) = img.dimensions();
            let max = 2 * px;
            let img = if w > max || h > max { img.thumbnail(max, max) } else { img };
            let mut out = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).ok()?;
            Some(out)
        }
        ImageKind::Gif if data.len() <= 2 * 1024 * 1024 => Some(data.to_vec()),
        _ => None,
    }
}

fn artifacts_sheet(ws: &mut Worksheet, rows: &[ArtifactRow], thumb_px: u32, st: &Styles) -> Result<usize, XlsxError> {
    ws.set_name("Artifacts")?;
    header(ws, &ARTIFACT_HEADER, st)?;
    let mut thumbs = 0;
    for (i, a) in rows.iter().enumerate() {
        let r = i as u32 + 1;
        ws.write_string_with_format(r, 0, clip(&a.name), &st.text)?;
        ws.write_string_with_format(r, 1, clip(&a.media_type), &st.text)?;
        ws.write_number_with_format(r, 2, a.bytes as f64, &st.int)?;
        ws.write_string_with_format(r, 3, reporting::human_bytes(a.bytes), &st.text)?;
        if let (Some(w), Some(h)) = (a.width, a.height) {
            ws.write_number_with_format(r, 4, w as f64, &st.int)?;
            ws.write_number_with_format(r, 5, h as f64, &st.int)?;
        }
        if let Some(s) = &a.step {
            ws.write_string_with_format(r, 6, clip(s), &st.text)?;
        }
        let png = a.data.zip(a.image).and_then(|(d, k)| thumbnail(d, k, thumb_px));
        if let Some(png) = png {
            match Image::new_from_buffer(&png) {
                Ok(img) => {
                    let img =
                        img.set_scale_to_size(thumb_px as f64, thumb_px as f64, true).set_alt_text(a.name.clone());
                    ws.set_row_height_pixels(r, thumb_px + 8)?;
                    ws.insert_image_with_offset(r, 7, &img, 4, 4)?;
                    thumbs += 1;
                }
                Err(_) => {
                    ws.write_string_with_format(r, 7, "(no preview)", &st.other)?;
                }
            }
        } else if a.data.is_none() {
            ws.write_string_with_format(r, 7, "(not attached)", &st.other)?;
        }
    }
    if !rows.is_empty() {
        ws.autofilter(0, 0, rows.len() as u32, ARTIFACT_HEADER.len() as u16 - 2)?;
    }
    ws.set_column_width(0, fit_width(rows.iter().map(|r| r.name.clone()).chain(["Name".into()]), 10, 50))?;
    ws.set_column_width(1, fit_width(rows.iter().map(|r| r.media_type.clone()), 12, 40))?;
    ws.set_column_width(2, 12)?;
    ws.set_column_width(3, 10)?;
    ws.set_column_width(4, 8)?;
    ws.set_column_width(5, 8)?;
    ws.set_column_width(6, fit_width(rows.iter().map(|r| r.step.clone().unwrap_or_default()), 8, 30))?;
    ws.set_column_width_pixels(7, thumb_px.max(70) + 8)?;
    Ok(thumbs)
}

fn summary_sheet(
    ws: &mut Worksheet,
    title: &str,
    params: &Params,
    summary: &reporting::Summary,
    st: &Styles,
) -> Result<(), XlsxError> {
    ws.set_name("Summary")?;
    ws.write_string_with_format(0, 0, clip(title), &st.title)?;
    let run = params.run.clone().unwrap_or_default();
    let mut kv: Vec<(&str, String)> = vec![
        ("Pipeline", run.pipeline.unwrap_or_default()),
        ("Run", run.id.unwrap_or_default()),
        ("Status", run.status.unwrap_or_default()),
        ("Started", run.started_at.unwrap_or_default()),
        ("Finished", run.finished_at.unwrap_or_default()),
    ];
    kv.retain(|(_, v)| !v.is_empty());
    let mut r = 2u32;
    for (k, v) in kv {
        ws.write_string_with_format(r, 0, k, &st.key)?;
        ws.write_string(r, 1, clip(&v))?;
        r += 1;
    }
    let mut nums: Vec<(String, f64)> = Vec::new();
    if params.steps.is_some() {
        nums.push(("Steps".into(), summary.steps as f64));
        for (status, n) in &summary.by_status {
            nums.push((format!("Steps {status}"), *n as f64));
        }
        nums.push(("Attempts".into(), summary.attempts as f64));
        nums.push(("Steps retried".into(), summary.retried_steps as f64));
        if let Some(d) = summary.duration_ms {
            nums.push(("Duration (ms)".into(), d));
        }
    }
    nums.push(("Artifacts".into(), summary.artifacts as f64));
    nums.push(("Artifact bytes".into(), summary.artifact_bytes as f64));
    for (k, v) in nums {
        ws.write_string_with_format(r, 0, clip(&k), &st.key)?;
        ws.write_number_with_format(r, 1, v, if v.fract() == 0.0 { &st.int } else { &st.ms })?;
        r += 1;
    }
    ws.set_column_width(0, 22)?;
    ws.set_column_width(1, 40)?;
    Ok(())
}

/// Builds the workbook; returns its bytes and the number of thumbnails.
pub fn workbook(artifacts: &[Artifact], params: &Params) -> Result<(Vec<u8>, usize), StageError> {
    let title = params.display_title();
    let (rows, summary) = params.rows_and_summary(artifacts);
    let st = Styles::new();
    let mut wb = Workbook::new();
    let created = params
        .run
        .as_ref()
        .and_then(|r| r.started_at.as_deref())
        .and_then(|t| ExcelDateTime::parse_from_str(t.get(..19).unwrap_or(t)).ok())
        .unwrap_or_else(|| ExcelDateTime::from_ymd(1980, 1, 1).expect("a valid date"));
    let props = DocProperties::new()
        .set_title(clip(&title))
        .set_author("stagecraft report_xlsx")
        .set_creation_datetime(&created);
    wb.set_properties(&props);
    steps_sheet(wb.add_worksheet(), params.steps.as_deref(), &st).map_err(xerr)?;
    let thumbs = artifacts_sheet(wb.add_worksheet(), &rows, params.thumbnail_px, &st).map_err(xerr)?;
    summary_sheet(wb.add_worksheet(), &title, params, &summary, &st).map_err(xerr)?;
    let bytes = wb.save_to_buffer().map_err(xerr)?;
    Ok((bytes, thumbs))
}

pub struct ReportXlsx;

pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

impl Stage for ReportXlsx {
    type Params = Params;
    const NAME: &'static str = "report_xlsx";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Writes an Excel workbook of a pipeline run: a Steps sheet (status, attempts, durations with totals, \
         params as JSON text, artifacts), an Artifacts sheet with image thumbnails embedded, and a Summary sheet";
    const ACCEPTS: &'static [&'static str] = &["*/*"];
    const PRODUCES: &'static [&'static str] = &[XLSX];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let params = input.params;
        if !(16..=512).contains(&params.thumbnail_px) {
            return Err(StageError::invalid_input(format!(
                "thumbnail_px must be between 16 and 512, got {}",
                params.thumbnail_px
            )));
        }
        params.check(&input.artifacts).map_err(StageError::invalid_input)?;
        let (bytes, thumbs) = workbook(&input.artifacts, &params)?;
        Ok(Output::new()
            .artifact("report.xlsx", XLSX, bytes)
            .meta("title", params.meta_title())
            .meta("sheets", ["Steps", "Artifacts", "Summary"])
            .meta("steps", params.steps.as_ref().map_or(0, |s| s.len()))
            .meta("artifacts", input.artifacts.len())
            .meta("thumbnails", thumbs))
    }
}

#[cfg(target_arch = "wasm32")]
export_stage!(ReportXlsx);

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::{Data, Reader, Xlsx};
    use stagecraft_reporting::sample;

    fn open(bytes: &[u8]) -> Xlsx<std::io::Cursor<Vec<u8>>> {
        Xlsx::new(std::io::Cursor::new(bytes.to_vec())).expect("a readable xlsx")
    }

    fn params(v: serde_json::Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn workbook_reads_back_with_the_right_cells() {
        let p = params(json!({"title": "Logo run", "run": sample::run(), "steps": sample::steps()}));
        let out = ReportXlsx::run(Input { artifacts: sample::artifacts(), params: p }).unwrap();
        assert_eq!(out.artifacts[0].name, "report.xlsx");
        assert_eq!(out.artifacts[0].media_type, XLSX);
        let mut x = open(&out.artifacts[0].data);
        assert_eq!(x.sheet_names(), ["Steps", "Artifacts", "Summary"]);

        let steps = x.worksheet_range("Steps").unwrap();
        let header: Vec<String> = (0..11).map(|c| steps.get_value((0, c)).unwrap().to_string()).collect();
        assert_eq!(header, STEP_HEADER);
        assert_eq!(steps.get_value((1, 1)), Some(&Data::String("generate".into())));
        assert_eq!(steps.get_value((1, 4)), Some(&Data::String("succeeded".into())));
        assert_eq!(steps.get_value((1, 6)), Some(&Data::Float(1520.5)));
        assert_eq!(steps.get_value((2, 1)), Some(&Data::String("separate <colours>".into())));
        assert_eq!(steps.get_value((2, 5)), Some(&Data::Float(3.0)));
        assert_eq!(steps.get_value((2, 8)), Some(&Data::String("unavailable: device busy".into())));
        let params_cell = steps.get_value((1, 9)).unwrap().to_string();
        let v: serde_json::Value = serde_json::from_str(&params_cell).unwrap();
        assert_eq!(v["prompt"], "a fox, \"flat\" logo");
        assert_eq!(steps.get_value((1, 10)), Some(&Data::String("fox.png (image/png, 2.0 KiB)".into())));
        // Totals row: cached formula results.
        assert_eq!(steps.get_value((4, 1)), Some(&Data::String("Total".into())));
        assert_eq!(steps.get_value((4, 6)).and_then(|d| d.to_string().parse::<f64>().ok()), Some(1770.5));
        let formulas = x.worksheet_formula("Steps").unwrap();
        assert_eq!(formulas.get_value((4, 6)).map(String::as_str), Some("SUM(G2:G4)"));

        let arts = x.worksheet_range("Artifacts").unwrap();
        assert_eq!(arts.get_value((0, 7)), Some(&Data::String("Thumbnail".into())));
        assert_eq!(arts.get_value((1, 0)), Some(&Data::String("fox.png".into())));
        assert_eq!(arts.get_value((1, 4)), Some(&Data::Float(64.0)));
        assert_eq!(arts.get_value((1, 5)), Some(&Data::Float(48.0)));
        assert_eq!(arts.get_value((1, 6)), Some(&Data::String("generate".into())));
        assert_eq!(arts.get_value((2, 0)), Some(&Data::String("notes <b>.txt".into())));
        // One thumbnail embedded (the PNG), and it is a PNG of the image.
        let pictures = x.pictures().unwrap_or_default();
        assert_eq!(pictures.len(), 1);
        assert_eq!(pictures[0].0, "png");
        let thumb = image::load_from_memory(&pictures[0].1).unwrap();
        assert_eq!(thumb.dimensions(), (64, 48));
        assert_eq!(out.metadata["thumbnails"], 1);

        let summary = x.worksheet_range("Summary").unwrap();
        assert_eq!(summary.get_value((0, 0)), Some(&Data::String("Logo run".into())));
    }

    #[test]
    fn large_images_are_scaled_down_and_output_is_deterministic() {
        let inputs =
            vec![Artifact { name: "big.png".into(), media_type: "image/png".into(), data: sample::png(900, 300) }];
        let p = params(json!({"thumbnail_px": 50}));
        let a = ReportXlsx::run(Input { artifacts: inputs.clone(), params: p.clone() }).unwrap();
        let b = ReportXlsx::run(Input { artifacts: inputs, params: p }).unwrap();
        assert_eq!(a.artifacts[0].data, b.artifacts[0].data);
        let mut x = open(&a.artifacts[0].data);
        let pics = x.pictures().unwrap();
        let thumb = image::load_from_memory(&pics[0].1).unwrap();
        assert_eq!(thumb.dimensions(), (100, 33));
        let steps = x.worksheet_range("Steps").unwrap();
        assert!(steps.get_value((1, 1)).unwrap().to_string().starts_with("No steps"));
    }

    #[test]
    fn invalid_inputs() {
        let err = ReportXlsx::run(Input { artifacts: vec![], params: params(json!({})) }).err().unwrap();
        assert!(matches!(err, StageError::InvalidInput(_)));
        let err =
            ReportXlsx::run(Input { artifacts: vec![], params: params(json!({"steps": [], "thumbnail_px": 4096})) })
                .err()
                .unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("thumbnail_px")));
        assert!(serde_json::from_value::<Params>(json!({"steps": [], "sheet": "x"})).is_err());
    }
}
