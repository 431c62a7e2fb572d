//! `report_csv`: a CSV of a pipeline run.
//!
//! With `steps` (the run summary): `report.csv` has one row per step, and
//! `artifacts.csv` lists the input artifacts when there are any. Without
//! `steps`: `report.csv` lists the input artifacts (name, media type, size,
//! image dimensions). RFC 4180 quoting by the `csv` crate.

use stagecraft_reporting::{self as reporting, ArtifactRow, ReportParams, Step};
use stagecraft_sdk::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delimiter {
    /// `,` (RFC 4180)
    #[default]
    Comma,
    /// `;` (spreadsheets in locales with a decimal comma)
    Semicolon,
    /// tab (TSV)
    Tab,
}

impl Delimiter {
    fn byte(self) -> u8 {
        match self {
            Delimiter::Comma => b',',
            Delimiter::Semicolon => b';',
            Delimiter::Tab => b'\t',
        }
    }
}

reporting::report_params! {
    /// Parameters of `report_csv`.
    #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Params {
        title: "Report title (goes into the metadata; CSV has no place for it).",
        /// Field separator.
        #[serde(default)]
        pub delimiter: Delimiter,
        /// Prefix text cells that start with `=`, `+`, `-`, `@` (or tab/CR) with
        /// `'`, so a spreadsheet does not run them as formulas (CSV injection).
        #[serde(default = "yes")]
        pub sanitize_formulas: bool,
        /// Start the file with a UTF-8 byte order mark (helps Excel detect UTF-8).
        #[serde(default)]
        pub bom: bool,
    }
}

fn yes() -> bool {
    true
}

pub const STEP_HEADER: [&str; 12] = [
    "step",
    "stage",
    "version",
    "status",
    "attempts",
    "duration_ms",
    "started_at",
    "error",
    "params",
    "artifact_count",
    "artifact_bytes",
    "artifacts",
];

pub const ARTIFACT_HEADER: [&str; 6] = ["name", "media_type", "bytes", "width", "height", "step"];

fn cell(text: &str, sanitize: bool) -> String {
    if sanitize && text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v}"),
        None => String::new(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn writer(params: &Params) -> csv::Writer<Vec<u8>> {
    let mut buf = Vec::new();
    if params.bom {
        buf.extend_from_slice("\u{feff}".as_bytes());
    }
    csv::WriterBuilder::new().delimiter(params.delimiter.byte()).terminator(csv::Terminator::CRLF).from_writer(buf)
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, StageError> {
    w.into_inner().map_err(|e| StageError::failed(format!("csv: {e}")))
}

fn csv_err(e: csv::Error) -> StageError {
    StageError::failed(format!("csv: {e}"))
}

/// One row per step.
pub fn steps_csv(steps: &[Step], params: &Params) -> Result<Vec<u8>, StageError> {
    let s = params.sanitize_formulas;
    let mut w = writer(params);
    w.write_record(STEP_HEADER).map_err(csv_err)?;
    for step in steps {
        let bytes: u64 = step.artifacts.iter().filter_map(|a| a.bytes).sum();
        w.write_record([
            cell(&step.name, s),
            cell(&step.stage, s),
            cell(step.version.as_deref().unwrap_or(""), s),
            cell(reporting::status_of(step), s),
            opt(step.attempts),
            num(step.duration_ms),
            cell(step.started_at.as_deref().unwrap_or(""), s),
            cell(step.error.as_deref().unwrap_or(""), s),
            cell(&reporting::params_json(step), s),
            step.artifacts.len().to_string(),
            bytes.to_string(),
            cell(&reporting::artifact_list(step).join("; "), s),
        ])
        .map_err(csv_err)?;
    }
    finish(w)
}

/// One row per artifact.
pub fn artifacts_csv(rows: &[ArtifactRow], params: &Params) -> Result<Vec<u8>, StageError> {
    let s = params.sanitize_formulas;
    let mut w = writer(params);
    w.write_record(ARTIFACT_HEADER).map_err(csv_err)?;
    for r in rows {
        w.write_record([
            cell(&r.name, s),
            cell(&r.media_type, s),
            r.bytes.to_string(),
            opt(r.width),
            opt(r.height),
            cell(r.step.as_deref().unwrap_or(""), s),
        ])
        .map_err(csv_err)?;
    }
    finish(w)
}

pub struct ReportCsv;

impl Stage for ReportCsv {
    type Params = Params;
    const NAME: &'static str = "report_csv";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Writes a CSV of a pipeline run: one row per step (stage, version, status, attempts, duration, \
         params as JSON, artifacts) from the run summary in `steps`, or, without steps, one row per input artifact (media type, size, image dimensions)";
    const ACCEPTS: &'static [&'static str] = &["*/*"];
    const PRODUCES: &'static [&'static str] = &["text/csv"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let params = input.params;
        params.check(&input.artifacts).map_err(StageError::invalid_input)?;
        let (rows, summary) = params.rows_and_summary(&input.artifacts);
        let media = "text/csv; charset=utf-8";
        let mut output = Output::new();
        match &params.steps {
            Some(steps) => {
                output = output.artifact("report.csv", media, steps_csv(steps, &params)?);
                if !input.artifacts.is_empty() {
                    output = output.artifact("artifacts.csv", media, artifacts_csv(&rows, &params)?);
                }
            }
            None => output = output.artifact("report.csv", media, artifacts_csv(&rows, &params)?),
        }
        let files: Vec<&str> = output.artifacts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>();
        let files = json!(files);
        let rows_written = params.steps.as_ref().map_or(rows.len(), |s| s.len());
        Ok(output
            .meta("title", params.meta_title())
            .meta("kind", if params.steps.is_some() { "steps" } else { "artifacts" })
            .meta("rows", rows_written)
            .meta("files", files)
            .meta("summary", summary))
    }
}

#[cfg(target_arch = "wasm32")]
export_stage!(ReportCsv);

#[cfg(test)]
mod tests {
    use super::*;
    use stagecraft_reporting::sample;

    fn params(steps: Option<Vec<Step>>) -> Params {
        serde_json::from_value(json!({})).map(|p: Params| Params { steps, ..p }).unwrap()
    }

    fn read(data: &[u8], delim: u8) -> Vec<Vec<String>> {
        let mut r = csv::ReaderBuilder::new().delimiter(delim).has_headers(false).from_reader(data);
        r.records().map(|rec| rec.unwrap().iter().map(String::from).collect()).collect()
    }

    #[test]
    fn step_rows_round_trip_through_a_csv_reader() {
        let out =
            ReportCsv::run(Input { artifacts: sample::artifacts(), params: params(Some(sample::steps())) }).unwrap();
        assert_eq!(out.artifacts[0].name, "report.csv");
        assert_eq!(out.artifacts[1].name, "artifacts.csv");
        let rows = read(&out.artifacts[0].data, b',');
        assert_eq!(rows[0], STEP_HEADER);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1][0], "generate");
        assert_eq!(rows[1][5], "1520.5");
        // Params JSON with quotes and commas survives quoting.
        let p: serde_json::Value = serde_json::from_str(&rows[1][8]).unwrap();
        assert_eq!(p["prompt"], "a fox, \"flat\" logo");
        assert_eq!(rows[1][11], "fox.png (image/png, 2.0 KiB)");
        assert_eq!(rows[2][0], "separate <colours>");
        assert_eq!(rows[2][3], "failed");
        assert_eq!(rows[2][4], "3");
        assert_eq!(rows[2][5], "250");
        assert_eq!(rows[2][7], "unavailable: device busy");
        assert_eq!(rows[3][3], "skipped");
        assert_eq!(rows[3][5], "");
        let arts = read(&out.artifacts[1].data, b',');
        assert_eq!(arts[0], ARTIFACT_HEADER);
        assert_eq!(
            arts[1],
            ["fox.png", "image/png", &sample::artifacts()[0].data.len().to_string(), "64", "48", "generate"]
        );
        assert_eq!(arts[2][0], "notes <b>.txt");
        assert_eq!(out.metadata["summary"]["steps"], 3);
        assert_eq!(out.metadata["rows"], 3);
    }

    #[test]
    fn artifacts_only_with_semicolons_and_formula_guard() {
        let mut p = params(None);
        p.delimiter = Delimiter::Semicolon;
        let mut inputs = sample::artifacts();
        inputs.push(Artifact {
            name: "=HYPERLINK(\"x\");1".into(),
            media_type: "text/plain".into(),
            data: vec![1, 2, 3],
        });
        let out = ReportCsv::run(Input { artifacts: inputs, params: p }).unwrap();
        assert_eq!(out.artifacts.len(), 1);
        let rows = read(&out.artifacts[0].data, b';');
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1][3], "64");
        assert_eq!(rows[3][0], "'=HYPERLINK(\"x\");1");
        assert_eq!(rows[3][2], "3");
        assert_eq!(out.metadata["kind"], "artifacts");
    }

    #[test]
    fn invalid_inputs() {
        let err = ReportCsv::run(Input { artifacts: vec![], params: params(None) }).err().unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("nothing to report")));
        let mut steps = sample::steps();
        steps[0].stage = String::new();
        let err = ReportCsv::run(Input { artifacts: vec![], params: params(Some(steps)) }).err().unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("stage is empty")));
        assert!(serde_json::from_value::<Params>(json!({"step": []})).is_err());
        // Steps need a name and a stage.
        assert!(serde_json::from_value::<Params>(json!({"steps": [{"name": "x"}]})).is_err());
    }

    #[test]
    fn bom_and_tabs() {
        let mut p = params(Some(sample::steps()));
        p.bom = true;
        p.delimiter = Delimiter::Tab;
        let out = ReportCsv::run(Input { artifacts: vec![], params: p }).unwrap();
        let data = &out.artifacts[0].data;
        assert!(data.starts_with("\u{feff}step\tstage".as_bytes()));
        assert_eq!(out.artifacts.len(), 1);
    }
}
