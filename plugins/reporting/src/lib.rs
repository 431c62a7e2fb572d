//! The run model shared by the `report_csv`, `report_html` and `report_xlsx`
//! stages.
//!
//! A report step receives artifacts (any media types) and params that may
//! carry the run summary: `run` (the pipeline run) and `steps` (one entry
//! per executed step, with its artifacts). The host can feed its run summary
//! straight in: the step and run records ignore fields they do not know, so
//! a newer host may add to them without breaking older report stages. When
//! `steps` is absent, a report lists the input artifacts.
//!
//! Pure Rust, no host imports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stagecraft_sdk::Artifact;
use std::collections::BTreeMap;

/// One executed pipeline step, as in the host's run summary. Unknown fields
/// are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Step {
    /// Step name within the pipeline.
    pub name: String,
    /// Stage the step invoked.
    pub stage: String,
    /// Version of the stage that ran.
    #[serde(default)]
    pub version: Option<String>,
    /// Outcome: `succeeded`, `failed`, `skipped`, `cached`, `cancelled`,
    /// `running` or `pending` (other words are shown as given).
    #[serde(default)]
    pub status: Option<String>,
    /// Attempts made, retries included.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Wall-clock duration of the step in milliseconds (all attempts).
    #[serde(default)]
    pub duration_ms: Option<f64>,
    /// When the step started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Error message of the last failed attempt.
    #[serde(default)]
    pub error: Option<String>,
    /// The params the step ran with.
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    /// Artifacts the step produced.
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
}

/// An artifact named in the run summary (its bytes may or may not be among
/// the report's input artifacts). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct ArtifactRef {
    pub name: String,
    /// IANA media type, e.g. `image/png`.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// The pipeline run as a whole. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct RunInfo {
    /// Run or job id.
    #[serde(default)]
    pub id: Option<String>,
    /// Pipeline name.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Overall outcome of the run.
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 3339 start time.
    #[serde(default)]
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Wall-clock duration of the whole run in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<f64>,
}

/// Checks what the JSON types cannot: non-empty step names, sensible numbers.
pub fn validate(run: Option<&RunInfo>, steps: Option<&[Step]>) -> Result<(), String> {
    if let Some(d) = run.and_then(|r| r.duration_ms) {
        if !(d.is_finite() && d >= 0.0) {
            return Err(format!("run.duration_ms must be a non-negative number, got {d}"));
        }
    }
    for (i, s) in steps.unwrap_or_default().iter().enumerate() {
        if s.name.trim().is_empty() {
            return Err(format!("steps[{i}].name is empty"));
        }
        if s.stage.trim().is_empty() {
            return Err(format!("steps[{i}] ({}): stage is empty", s.name));
        }
        if let Some(d) = s.duration_ms {
            if !(d.is_finite() && d >= 0.0) {
                return Err(format!("steps[{i}] ({}): duration_ms must be a non-negative number, got {d}", s.name));
            }
        }
        for (k, a) in s.artifacts.iter().enumerate() {
            if a.name.trim().is_empty() {
                return Err(format!("steps[{i}] ({}): artifacts[{k}].name is empty", s.name));
            }
        }
    }
    Ok(())
}

/// Title of a report whose params give none.
pub const DEFAULT_TITLE: &str = "Pipeline run report";

/// Declares a report stage's params struct: the header every report stage
/// shares (`title`, `run`, `steps`, in that order, with the same schema and
/// descriptions), then the stage's own fields; and implements
/// [`ReportParams`] for it. Only the title's description is the stage's
/// own, since where the title goes differs (a page heading, document
/// properties, metadata only):
///
/// ```
/// use serde::Deserialize;
/// stagecraft_reporting::report_params! {
///     /// Parameters of `report_txt`.
///     #[derive(Debug, Deserialize, schemars::JsonSchema)]
///     #[serde(deny_unknown_fields)]
///     pub struct Params {
///         title: "Report title (the first line of the file).",
///         /// Line width.
///         #[serde(default)]
///         pub width: u32,
///     }
/// }
/// let p: Params = serde_json::from_str(r#"{"title": "Run 7", "width": 72}"#).unwrap();
/// assert_eq!(p.title.as_deref(), Some("Run 7"));
/// ```
#[macro_export]
macro_rules! report_params {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            title: $title_doc:literal,
            $($fields:tt)*
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            #[doc = $title_doc]
            #[serde(default)]
            pub title: Option<String>,
            /// The pipeline run the steps belong to.
            #[serde(default)]
            pub run: Option<$crate::RunInfo>,
            /// The run's steps (the host's run summary). Absent: the report lists the input artifacts.
            #[serde(default)]
            pub steps: Option<Vec<$crate::Step>>,
            $($fields)*
        }

        impl $crate::ReportParams for $name {
            fn title(&self) -> Option<&str> {
                self.title.as_deref()
            }
            fn run(&self) -> Option<&$crate::RunInfo> {
                self.run.as_ref()
            }
            fn steps(&self) -> Option<&[$crate::Step]> {
                self.steps.as_deref()
            }
        }
    };
}

/// The shared header of a report stage's params (see [`report_params!`]),
/// and what every report stage does with it.
pub trait ReportParams {
    /// The title as given.
    fn title(&self) -> Option<&str>;
    /// The pipeline run, if given.
    fn run(&self) -> Option<&RunInfo>;
    /// The run's steps, if given.
    fn steps(&self) -> Option<&[Step]>;

    /// Checks the header ([`validate`]) and that there is something to
    /// report: steps, or input artifacts to list.
    fn check(&self, artifacts: &[Artifact]) -> Result<(), String> {
        validate(self.run(), self.steps())?;
        if self.steps().is_none() && artifacts.is_empty() {
            return Err("nothing to report: pass the run summary in params.steps, or input artifacts to list".into());
        }
        Ok(())
    }

    /// The title to show in the report: the given one unless blank, else
    /// [`DEFAULT_TITLE`].
    fn display_title(&self) -> String {
        self.title().filter(|t| !t.trim().is_empty()).unwrap_or(DEFAULT_TITLE).to_owned()
    }

    /// The title for the output's metadata: as given, else [`DEFAULT_TITLE`].
    fn meta_title(&self) -> &str {
        self.title().unwrap_or(DEFAULT_TITLE)
    }

    /// The artifact rows ([`artifact_rows`]) and the totals ([`summarize`])
    /// of the run with these input artifacts.
    fn rows_and_summary<'a>(&self, artifacts: &'a [Artifact]) -> (Vec<ArtifactRow<'a>>, Summary) {
        let rows = artifact_rows(artifacts, self.steps());
        let summary = summarize(self.run(), self.steps(), &rows);
        (rows, summary)
    }
}

/// Image formats a report can show inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Gif,
    Webp,
    Svg,
}

impl ImageKind {
    pub fn media_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Gif => "image/gif",
            ImageKind::Webp => "image/webp",
            ImageKind::Svg => "image/svg+xml",
        }
    }

    /// Sniffs the format from the bytes (SVG also from the media type).
    pub fn sniff(data: &[u8], media_type: &str) -> Option<ImageKind> {
        if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(ImageKind::Jpeg)
        } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
            Some(ImageKind::Gif)
        } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
            Some(ImageKind::Webp)
        } else if media_type.eq_ignore_ascii_case("image/svg+xml") && looks_like_svg(data) {
            Some(ImageKind::Svg)
        } else {
            None
        }
    }
}

fn looks_like_svg(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    String::from_utf8_lossy(head).contains("<svg")
}

fn le16(b: &[u8]) -> u32 {
    b[0] as u32 | (b[1] as u32) << 8
}
fn le24(b: &[u8]) -> u32 {
    b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16
}

fn be16(b: &[u8]) -> u32 {
    (b[0] as u32) << 8 | b[1] as u32
}

/// JPEG dimensions from the first start-of-frame segment.
fn jpeg_dimensions(data: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2; // after SOI
    while i + 4 <= data.len() {
        if data[i] != 0xff {
            return None;
        }
        let marker = data[i + 1];
        if marker == 0xff {
            i += 1; // fill byte
            continue;
        }
        if matches!(marker, 0x01 | 0xd0..=0xd9) {
            i += 2; // standalone markers carry no length
            continue;
        }
        let len = be16(&data[i + 2..]) as usize;
        let is_sof = matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
        if is_sof && i + 9 <= data.len() {
            return Some((be16(&data[i + 7..]), be16(&data[i + 5..])));
        }
        i += 2 + len;
    }
    None
}

/// Pixel dimensions of an image artifact, read from its header only.
pub fn dimensions(data: &[u8], kind: ImageKind) -> Option<(u32, u32)> {
    match kind {
        ImageKind::Png if data.len() >= 24 && &data[12..16] == b"IHDR" => Some((
            u32::from_be_bytes([data[16], data[17], data[18], data[19]]),
            u32::from_be_bytes([data[20], data[21], data[22], data[23]]),
        )),
        ImageKind::Jpeg => jpeg_dimensions(data),
        ImageKind::Gif if data.len() >= 10 => Some((le16(&data[6..8]), le16(&data[8..10]))),
        ImageKind::Webp if data.len() >= 30 => match &data[12..16] {
            b"VP8X" => Some((le24(&data[24..27]) + 1, le24(&data[27..30]) + 1)),
            b"VP8L" => {
                let b = &data[21..25];
                let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8 " => Some((le16(&data[26..28]) & 0x3fff, le16(&data[28..30]) & 0x3fff)),
            _ => None,
        },
        _ => None,
    }
}

/// One artifact row of a report: an input artifact (with its bytes), or
/// one that only the run summary names.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRow<'a> {
    pub name: String,
    pub media_type: String,
    pub bytes: u64,
    /// Image format when the bytes are here and are an image.
    pub image: Option<ImageKind>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The step that produced it, when the run summary says.
    pub step: Option<String>,
    /// The bytes, for input artifacts.
    pub data: Option<&'a [u8]>,
}

/// Rows for the input artifacts (in order), then for artifacts the steps
/// name that are not among the inputs.
pub fn artifact_rows<'a>(inputs: &'a [Artifact], steps: Option<&[Step]>) -> Vec<ArtifactRow<'a>> {
    let steps = steps.unwrap_or_default();
    let producer =
        |name: &str| steps.iter().find(|s| s.artifacts.iter().any(|a| a.name == name)).map(|s| s.name.clone());
    let mut rows: Vec<ArtifactRow<'a>> = inputs
        .iter()
        .map(|a| {
            let image = ImageKind::sniff(&a.data, &a.media_type);
            let dims = image.and_then(|k| dimensions(&a.data, k));
            ArtifactRow {
                name: a.name.clone(),
                media_type: a.media_type.clone(),
                bytes: a.data.len() as u64,
                image,
                width: dims.map(|d| d.0),
                height: dims.map(|d| d.1),
                step: producer(&a.name),
                data: Some(&a.data),
            }
        })
        .collect();
    for s in steps {
        for a in &s.artifacts {
            if rows.iter().any(|r| r.name == a.name) {
                continue;
            }
            rows.push(ArtifactRow {
                name: a.name.clone(),
                media_type: a.media_type.clone().unwrap_or_default(),
                bytes: a.bytes.unwrap_or(0),
                image: None,
                width: None,
                height: None,
                step: Some(s.name.clone()),
                data: None,
            });
        }
    }
    rows
}

/// Totals over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub steps: usize,
    /// Steps per status (`unknown` when a step has none).
    pub by_status: BTreeMap<String, usize>,
    /// The run's duration when given, else the sum of the step durations.
    pub duration_ms: Option<f64>,
    pub attempts: u64,
    /// Steps that needed more than one attempt.
    pub retried_steps: usize,
    /// The longest step (name, milliseconds).
    pub slowest: Option<(String, f64)>,
    pub artifacts: usize,
    pub artifact_bytes: u64,
}

pub fn summarize(run: Option<&RunInfo>, steps: Option<&[Step]>, rows: &[ArtifactRow]) -> Summary {
    let steps = steps.unwrap_or_default();
    let mut by_status = BTreeMap::new();
    for s in steps {
        *by_status.entry(status_of(s).to_string()).or_insert(0) += 1;
    }
    let durations: Vec<f64> = steps.iter().filter_map(|s| s.duration_ms).collect();
    let duration_ms =
        run.and_then(|r| r.duration_ms).or(if durations.is_empty() { None } else { Some(durations.iter().sum()) });
    let slowest = steps.iter().filter_map(|s| s.duration_ms.map(|d| (s.name.clone(), d))).fold(
        None,
        |best: Option<(String, f64)>, x| match best {
            Some(b) if b.1 >= x.1 => Some(b),
            _ => Some(x),
        },
    );
    Summary {
        steps: steps.len(),
        by_status,
        duration_ms,
        attempts: steps.iter().map(|s| s.attempts.unwrap_or(1) as u64).sum(),
        retried_steps: steps.iter().filter(|s| s.attempts.unwrap_or(1) > 1).count(),
        slowest,
        artifacts: rows.len(),
        artifact_bytes: rows.iter().map(|r| r.bytes).sum(),
    }
}

/// A step's status, `unknown` when absent.
pub fn status_of(s: &Step) -> &str {
    s.status.as_deref().filter(|x| !x.trim().is_empty()).unwrap_or("unknown")
}

/// Coarse class of a status, for colouring: `ok`, `fail`, `skip` or `other`.
pub fn status_class(status: &str) -> &'static str {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" | "success" | "ok" | "done" | "completed" | "cached" => "ok",
        "failed" | "failure" | "error" | "timed_out" | "timeout" | "cancelled" | "canceled" => "fail",
        "skipped" => "skip",
        _ => "other",
    }
}

/// `1.5 KiB`, `2.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `850 ms`, `1.25 s`, `2 min 5 s`.
pub fn human_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{} ms", (ms * 10.0).round() / 10.0)
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// Params as compact JSON text (empty when absent).
pub fn params_json(s: &Step) -> String {
    s.params.as_ref().map(|p| p.to_string()).unwrap_or_default()
}

/// `name (media/type, 1.2 KiB)` lines for a step's artifacts.
pub fn artifact_list(s: &Step) -> Vec<String> {
    s.artifacts
        .iter()
        .map(|a| {
            let mut parts = Vec::new();
            if let Some(m) = a.media_type.as_deref().filter(|m| !m.is_empty()) {
                parts.push(m.to_string());
            }
            if let Some(b) = a.bytes {
                parts.push(human_bytes(b));
            }
            if parts.is_empty() {
                a.name.clone()
            } else {
                format!("{} ({})", a.name, parts.join(", "))
            }
        })
        .collect()
}

/// Sample run data for the report stages' tests (feature `sample`).
#[cfg(feature = "sample")]
#[doc(hidden)]
pub mod sample {
    use super::*;

    pub fn steps() -> Vec<Step> {
        serde_json::from_value(serde_json::json!([
            {"name": "generate", "stage": "generate", "version": "0.1.0", "status": "succeeded", "attempts": 1,
             "duration_ms": 1520.5, "params": {"prompt": "a fox, \"flat\" logo", "seed": 7},
             "artifacts": [{"name": "fox.png", "media_type": "image/png", "bytes": 2048}]},
            {"name": "separate <colours>", "stage": "color_separations", "version": "0.1.0", "status": "failed", "attempts": 3,
             "duration_ms": 250, "error": "unavailable: device busy", "params": {"colors": 3},
             "artifacts": [], "queue_ms": 12},
            {"name": "report", "stage": "report_csv", "status": "skipped"}
        ]))
        .expect("sample steps parse")
    }

    pub fn run() -> RunInfo {
        RunInfo {
            id: Some("run-42".into()),
            pipeline: Some("logo".into()),
            status: Some("failed".into()),
            duration_ms: Some(1900.0),
            ..RunInfo::default()
        }
    }

    pub fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128, 255])
        });
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("png encodes");
        out
    }

    pub fn artifacts() -> Vec<Artifact> {
        vec![
            Artifact { name: "fox.png".into(), media_type: "image/png".into(), data: png(64, 48) },
            Artifact {
                name: "notes <b>.txt".into(),
                media_type: "text/plain".into(),
                data: b"hello, \"world\"\n<script>alert(1)</script>".to_vec(),
            },
        ]
    }
}

#[cfg(all(test, feature = "sample"))]
mod tests {
    use super::*;

    #[test]
    fn steps_accept_unknown_fields_and_sparse_records() {
        let steps = sample::steps();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].attempts, Some(3));
        assert_eq!(steps[2].duration_ms, None);
        assert!(validate(None, Some(&steps)).is_ok());
        let mut bad = steps.clone();
        bad[0].duration_ms = Some(-1.0);
        assert!(validate(None, Some(&bad)).unwrap_err().contains("duration_ms"));
        bad[0].name = " ".into();
        assert!(validate(None, Some(&bad)).unwrap_err().contains("name is empty"));
    }

    #[test]
    fn rows_join_inputs_and_step_artifacts() {
        let inputs = sample::artifacts();
        let steps = sample::steps();
        let rows = artifact_rows(&inputs, Some(&steps));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].step.as_deref(), Some("generate"));
        assert_eq!(rows[0].image, Some(ImageKind::Png));
        assert_eq!((rows[0].width, rows[0].height), (Some(64), Some(48)));
        assert_eq!(rows[1].image, None);
        let rows = artifact_rows(&[], Some(&steps));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].bytes, 2048);
        assert!(rows[0].data.is_none());
    }

    #[test]
    fn summary_totals() {
        let steps = sample::steps();
        let s = summarize(None, Some(&steps), &[]);
        assert_eq!(s.steps, 3);
        assert_eq!(s.by_status["failed"], 1);
        assert_eq!(s.duration_ms, Some(1770.5));
        assert_eq!(s.attempts, 5);
        assert_eq!(s.retried_steps, 1);
        assert_eq!(s.slowest, Some(("generate".into(), 1520.5)));
        let s = summarize(Some(&sample::run()), Some(&steps), &[]);
        assert_eq!(s.duration_ms, Some(1900.0));
    }

    #[test]
    fn header_dimensions() {
        let gif = b"GIF89a\x20\x00\x10\x00rest";
        assert_eq!(dimensions(gif, ImageKind::sniff(gif, "image/gif").unwrap()), Some((32, 16)));
        let png = sample::png(7, 5);
        assert_eq!(dimensions(&png, ImageKind::Png), Some((7, 5)));
        let mut jpeg = Vec::new();
        image::RgbImage::new(33, 17).write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        assert_eq!(dimensions(&jpeg, ImageKind::sniff(&jpeg, "image/jpeg").unwrap()), Some((33, 17)));
        assert_eq!(dimensions(&[0xff, 0xd8, 0xff, 0xe0, 0, 2], ImageKind::Jpeg), None);
        assert_eq!(
            ImageKind::sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
            Some(ImageKind::Svg)
        );
        assert_eq!(ImageKind::sniff(b"<svg/>", "text/plain"), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_ms(850.0), "850 ms");
        assert_eq!(human_ms(1520.5), "1.52 s");
        assert_eq!(human_ms(125_000.0), "2 min 5 s");
        assert_eq!(artifact_list(&sample::steps()[0]), vec!["fox.png (image/png, 2.0 KiB)"]);
    }
}

#[cfg(test)]
mod params_header_tests {
    use super::*;

    report_params! {
        /// A report stage's params, for the tests.
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct Params {
            title: "Title (test).",
            /// A field of the stage's own.
            #[serde(default)]
            pub extra: u32,
        }
    }

    fn params(v: serde_json::Value) -> Result<Params, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn the_header_comes_first_and_unknown_fields_are_refused() {
        let p = params(serde_json::json!({"title": "T", "run": {"id": "r"}, "steps": [], "extra": 3})).unwrap();
        assert_eq!(
            (p.title(), p.run().and_then(|r| r.id.as_deref()), p.steps().map(<[Step]>::len)),
            (Some("T"), Some("r"), Some(0))
        );
        assert_eq!(p.extra, 3);
        let err = params(serde_json::json!({"titel": "T"})).unwrap_err();
        assert!(err.contains("unknown field `titel`") && err.contains("`title`"), "{err}");
        let schema = serde_json::to_value(schemars::schema_for!(Params)).unwrap();
        let names: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(schema["properties"]["title"]["description"], "Title (test).");
        assert!(schema["properties"]["steps"]["description"].as_str().unwrap().contains("Absent"));
    }

    #[test]
    fn titles_default_and_nothing_to_report_is_refused() {
        let p = params(serde_json::json!({"title": "  "})).unwrap();
        assert_eq!(p.display_title(), DEFAULT_TITLE);
        assert_eq!(p.meta_title(), "  ");
        let p = params(serde_json::json!({})).unwrap();
        assert_eq!((p.display_title().as_str(), p.meta_title()), (DEFAULT_TITLE, DEFAULT_TITLE));
        assert!(p.check(&[]).unwrap_err().starts_with("nothing to report"));
        let p = params(serde_json::json!({"steps": []})).unwrap();
        assert!(p.check(&[]).is_ok());
        let p = params(serde_json::json!({"steps": [{"name": " ", "stage": "x"}]})).unwrap();
        assert_eq!(p.check(&[]).unwrap_err(), "steps[0].name is empty");
    }
}
