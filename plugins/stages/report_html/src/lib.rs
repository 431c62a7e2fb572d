//! `report_html`: one self-contained HTML page of a pipeline run.
//!
//! Inline CSS, images embedded as `data:` URIs (thumbnails scaled by CSS),
//! a summary, the step table with duration bars, params and errors, and the
//! artifacts. Every piece of text is escaped, and a Content-Security-Policy
//! forbids scripts and any network access, so a report built from hostile
//! names is still inert.

use base64::Engine;
use stagecraft_reporting::{self as reporting, ArtifactRow, ReportParams, Summary};
use stagecraft_sdk::prelude::*;
use std::fmt::Write;

reporting::report_params! {
    /// Parameters of `report_html`.
    #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Params {
        title: "Page title (default \"Pipeline run report\").",
        /// Largest side of an image thumbnail in CSS pixels (32 to 1024).
        #[serde(default = "default_thumb")]
        #[schemars(range(min = 32, max = 1024))]
        pub thumbnail_px: u32,
        /// Images larger than this many bytes are listed but not embedded.
        #[serde(default = "default_max_embed")]
        pub max_embed_bytes: u64,
        /// Text artifacts (text/*, JSON, CSV, XML, YAML) show their first this
        /// many bytes (0 turns previews off; at most 65536).
        #[serde(default = "default_preview")]
        #[schemars(range(max = 65536))]
        pub text_preview_bytes: u32,
    }
}

fn default_thumb() -> u32 {
    200
}
fn default_max_embed() -> u64 {
    10 * 1024 * 1024
}
fn default_preview() -> u32 {
    2048
}

impl Params {
    /// Checks the stage's own params, then the shared header (and that
    /// there is something to report).
    fn validate(&self, artifacts: &[Artifact]) -> Result<(), String> {
        if !(32..=1024).contains(&self.thumbnail_px) {
            return Err(format!("thumbnail_px must be between 32 and 1024, got {}", self.thumbnail_px));
        }
        if self.text_preview_bytes > 65536 {
            return Err(format!("text_preview_bytes must be at most 65536, got {}", self.text_preview_bytes));
        }
        self.check(artifacts)
    }
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn is_text(media_type: &str) -> bool {
    let m = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    m.starts_with("text/")
        || matches!(
            m.as_str(),
            "application/json" | "application/xml" | "application/yaml" | "application/x-yaml" | "application/csv"
        )
        || m.ends_with("+json")
        || m.ends_with("+xml")
}

const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --ok:#12805c; --fail:#c4320a; --skip:#8a6d00; --other:#475467; --accent:#3b5bdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 1200px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 12px; }
.sub { color: var(--muted); margin: 0; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin-top: 20px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; margin-top: 2px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
th, td { text-align: left; padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #fbfcfd; font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
tr:last-child td { border-bottom: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.ver { color: var(--muted); font-size: 12px; margin-left: 4px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; color: #fff; background: var(--other); }
.badge.ok { background: var(--ok); } .badge.fail { background: var(--fail); } .badge.skip { background: var(--skip); }
.dur { display: flex; align-items: center; gap: 8px; min-width: 180px; }
.bar { flex: 1; height: 8px; background: #eef0f4; border-radius: 4px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--accent); }
.dur .t { min-width: 72px; text-align: right; font-variant-numeric: tabular-nums; }
ul.arts { margin: 0; padding-left: 16px; }
details summary { cursor: pointer; color: var(--accent); }
pre { margin: 6px 0 0; padding: 8px 10px; background: #f4f5f7; border-radius: 6px; overflow: auto; max-height: 320px; white-space: pre-wrap; word-break: break-word; }
pre.err { background: #fff1ec; color: #7a2106; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(calc(var(--thumb) + 24px), 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 10px; }
.thumb { display: flex; align-items: center; justify-content: center; height: var(--thumb); border-radius: 6px;
  background-color: #fff; background-image: linear-gradient(45deg, #eceef2 25%, transparent 25%), linear-gradient(-45deg, #eceef2 25%, transparent 25%),
  linear-gradient(45deg, transparent 75%, #eceef2 75%), linear-gradient(-45deg, transparent 75%, #eceef2 75%);
  background-size: 16px 16px; background-position: 0 0, 0 8px, 8px -8px, -8px 0; }
.thumb img { max-width: 100%; max-height: var(--thumb); object-fit: contain; }
.thumb.none { background: #f4f5f7; color: var(--muted); font-size: 12px; }
figcaption { margin-top: 8px; font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
figcaption b { color: var(--fg); }
figure pre { max-height: var(--thumb); font-size: 11px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"#;

struct Page<'a> {
    params: &'a Params,
    title: String,
    rows: Vec<ArtifactRow<'a>>,
    summary: Summary,
    embedded: usize,
    not_embedded: Vec<String>,
}

impl Page<'_> {
    fn header(&self, h: &mut String) {
        let _ = write!(h, "<header><h1>{}</h1>", esc(&self.title));
        let mut bits = Vec::new();
        if let Some(run) = &self.params.run {
            if let Some(p) = &run.pipeline {
                bits.push(format!("pipeline <b>{}</b>", esc(p)));
            }
            if let Some(id) = &run.id {
                bits.push(format!("run <code>{}</code>", esc(id)));
            }
            if let Some(s) = &run.status {
                bits.push(format!(r#"<span class="badge {}">{}</span>"#, reporting::status_class(s), esc(s)));
            }
            if let Some(t) = &run.started_at {
                bits.push(format!("started {}", esc(t)));
            }
            if let Some(t) = &run.finished_at {
                bits.push(format!("finished {}", esc(t)));
            }
        }
        if !bits.is_empty() {
            let _ = write!(h, r#"<p class="sub">{}</p>"#, bits.join(" · "));
        }
        h.push_str("</header>\n");
    }

    fn cards(&self, h: &mut String) {
        let s = &self.summary;
        let mut cards: Vec<(String, String)> = Vec::new();
        if self.params.steps.is_some() {
            cards.push(("Steps".into(), s.steps.to_string()));
            for (status, n) in &s.by_status {
                cards.push((esc(status), n.to_string()));
            }
            if let Some(d) = s.duration_ms {
                cards.push(("Duration".into(), esc(&reporting::human_ms(d))));
            }
            cards.push((
                "Attempts".into(),
                format!(
                    "{}{}",
                    s.attempts,
                    if s.retried_steps > 0 {
                        format!(" <small>({} retried)</small>", s.retried_steps)
                    } else {
                        String::new()
                    }
                ),
            ));
            if let Some((name, ms)) = &s.slowest {
                cards.push((
                    "Slowest".into(),
                    format!("{} <small>{}</small>", esc(name), esc(&reporting::human_ms(*ms))),
                ));
            }
        }
        cards.push((
            "Artifacts".into(),
            format!("{} <small>{}</small>", s.artifacts, esc(&reporting::human_bytes(s.artifact_bytes))),
        ));
        h.push_str(r#"<section class="cards">"#);
        for (k, v) in cards {
            let _ = write!(h, r#"<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>"#);
        }
        h.push_str("</section>\n");
    }

    fn steps(&self, h: &mut String) {
        let Some(steps) = &self.params.steps else { return };
        h.push_str("<section><h2>Steps</h2>\n");
        if steps.is_empty() {
            h.push_str(r#"<p class="sub">The run has no steps.</p></section>"#);
            return;
        }
        let max = steps.iter().filter_map(|s| s.duration_ms).fold(0.0f64, f64::max);
        h.push_str(r#"<table class="steps"><thead><tr><th class="num">#</th><th>Step</th><th>Stage</th><th>Status</th><th class="num">Attempts</th><th>Duration</th><th>Artifacts</th></tr></thead><tbody>"#);
        for (i, s) in steps.iter().enumerate() {
            let status = reporting::status_of(s);
            let _ = write!(h, r#"<tr><td class="num">{}</td><td><b>{}</b>"#, i + 1, esc(&s.name));
            if let Some(t) = &s.started_at {
                let _ = write!(h, r#"<div class="ver">{}</div>"#, esc(t));
            }
            if let Some(e) = &s.error {
                let _ = write!(h, r#"<pre class="err">{}</pre>"#, esc(e));
            }
            if let Some(p) = &s.params {
                let pretty = serde_json::to_string_pretty(p).unwrap_or_default();
                let _ = write!(h, "<details><summary>params</summary><pre>{}</pre></details>", esc(&pretty));
            }
            let _ = write!(h, "</td><td>{}", esc(&s.stage));
            if let Some(v) = &s.version {
                let _ = write!(h, r#"<span class="ver">{}</span>"#, esc(v));
            }
            let _ = write!(
                h,
                r#"</td><td><span class="badge {}">{}</span></td><td class="num">{}</td><td>"#,
                reporting::status_class(status),
                esc(status),
                s.attempts.map(|a| a.to_string()).unwrap_or_default()
            );
            if let Some(d) = s.duration_ms {
                let pct = if max > 0.0 { d / max * 100.0 } else { 0.0 };
                let _ = write!(
                    h,
                    r#"<div class="dur"><div class="bar"><span style="width:{pct:.1}%"></span></div><span class="t">{}</span></div>"#,
                    esc(&reporting::human_ms(d))
                );
            }
            h.push_str("</td><td>");
            let arts = reporting::artifact_list(s);
            if !arts.is_empty() {
                h.push_str(r#"<ul class="arts">"#);
                for a in arts {
                    let _ = write!(h, "<li>{}</li>", esc(&a));
                }
                h.push_str("</ul>");
            }
            h.push_str("</td></tr>\n");
        }
        h.push_str("</tbody></table></section>\n");
    }

    fn artifacts(&mut self, h: &mut String) {
        if self.rows.is_empty() {
            return;
        }
        let _ = write!(
            h,
            r#"<section><h2>Artifacts</h2><div class="gallery" style="--thumb:{}px">"#,
            self.params.thumbnail_px
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let rows = std::mem::take(&mut self.rows);
        for r in &rows {
            h.push_str("<figure>");
            match (r.data, r.image) {
                (Some(data), Some(kind)) if data.len() as u64 <= self.params.max_embed_bytes => {
                    let _ = write!(
                        h,
                        r#"<div class="thumb"><img src="data:{};base64,{}" alt="{}" title="{}"></div>"#,
                        kind.media_type(),
                        b64.encode(data),
                        esc(&r.name),
                        esc(&r.name)
                    );
                    self.embedded += 1;
                }
                (Some(_), Some(_)) => {
                    h.push_str(r#"<div class="thumb none">too large to embed</div>"#);
                    self.not_embedded.push(r.name.clone());
                }
                (Some(data), None) if self.params.text_preview_bytes > 0 && is_text(&r.media_type) => {
                    let cut = &data[..data.len().min(self.params.text_preview_bytes as usize)];
                    let mut text = String::from_utf8_lossy(cut).into_owned();
                    if cut.len() < data.len() {
                        text.push_str(" …");
                    }
                    let _ = write!(h, "<pre>{}</pre>", esc(&text));
                }
                (Some(_), None) => h.push_str(r#"<div class="thumb none">no preview</div>"#),
                (None, _) => h.push_str(r#"<div class="thumb none">not attached</div>"#),
            }
            let mut caption = vec![
                esc(if r.media_type.is_empty() { "unknown type" } else { &r.media_type }),
                esc(&reporting::human_bytes(r.bytes)),
            ];
            if let (Some(w), Some(hh)) = (r.width, r.height) {
                caption.push(format!("{w}×{hh}"));
            }
            if let Some(s) = &r.step {
                caption.push(format!("from <i>{}</i>", esc(s)));
            }
            let _ = write!(h, "<figcaption><b>{}</b><br>{}</figcaption></figure>\n", esc(&r.name), caption.join(" · "));
        }
        self.rows = rows;
        h.push_str("</div></section>\n");
    }
}

/// Renders the page; returns the HTML and (embedded, not embedded) counts.
pub fn render(artifacts: &[Artifact], params: &Params) -> (String, usize, Vec<String>) {
    let (rows, summary) = params.rows_and_summary(artifacts);
    let title = params.display_title();
    let mut page = Page { params, title, rows, summary, embedded: 0, not_embedded: Vec::new() };
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n");
    let _ = write!(h, "<title>{}</title>\n<style>{}</style></head>\n<body><main>\n", esc(&page.title), CSS);
    page.header(&mut h);
    page.cards(&mut h);
    page.steps(&mut h);
    page.artifacts(&mut h);
    let _ = write!(
        h,
        "<footer>Written by stagecraft report_html {}.</footer>\n</main></body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    (h, page.embedded, page.not_embedded)
}

pub struct ReportHtml;

impl Stage for ReportHtml {
    type Params = Params;
    const NAME: &'static str = "report_html";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Writes one self-contained HTML page of a pipeline run: summary cards, a table of steps with status, \
         attempts, duration bars, params and errors, and the artifacts with images embedded as data: URIs (thumbnails scaled by CSS)";
    const ACCEPTS: &'static [&'static str] = &["*/*"];
    const PRODUCES: &'static [&'static str] = &["text/html"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let params = input.params;
        params.validate(&input.artifacts).map_err(StageError::invalid_input)?;
        let (html, embedded, not_embedded) = render(&input.artifacts, &params);
        let steps = params.steps.as_ref().map_or(0, |s| s.len());
        Ok(Output::new()
            .artifact("report.html", "text/html; charset=utf-8", html.into_bytes())
            .meta("title", params.meta_title())
            .meta("steps", steps)
            .meta("artifacts", input.artifacts.len())
            .meta("images_embedded", embedded)
            .meta("images_not_embedded", not_embedded))
    }
}

#[cfg(target_arch = "wasm32")]
export_stage!(ReportHtml);

#[cfg(test)]
mod tests {
    use super::*;
    use stagecraft_reporting::sample;

    fn params(v: serde_json::Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    fn html_of(out: &Output) -> String {
        String::from_utf8(out.artifacts[0].data.clone()).unwrap()
    }

    #[test]
    fn escapes_every_text_and_blocks_scripts() {
        let mut steps = sample::steps();
        steps[0].name = "<script>alert('x')</script>".into();
        steps[1].error = Some("</pre><script>bad()</script>".into());
        let p = params(json!({"title": "Run <b>&</b>", "steps": steps, "run": sample::run()}));
        let mut inputs = sample::artifacts();
        inputs[0].name = "\"><img src=x onerror=alert(1)>.png".into();
        let out = ReportHtml::run(Input { artifacts: inputs, params: p }).unwrap();
        let html = html_of(&out);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;bad()"));
        assert!(html.contains("<title>Run &lt;b&gt;&amp;&lt;/b&gt;</title>"));
        assert!(!html.contains("onerror=alert(1)>"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.png"));
        // The text artifact's preview is escaped too.
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Content-Security-Policy"));
    }

    #[test]
    fn self_contained_with_embedded_thumbnails_and_timings() {
        let p = params(json!({"steps": sample::steps(), "run": sample::run(), "thumbnail_px": 120}));
        let out = ReportHtml::run(Input { artifacts: sample::artifacts(), params: p }).unwrap();
        let html = html_of(&out);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<img src=\"data:image/png;base64,iVBORw0KGgo"));
        assert!(html.contains("--thumb:120px"));
        assert!(html.contains("1.52 s"));
        assert!(html.contains("width:100.0%"), "the slowest step fills its bar");
        assert!(html.contains("badge fail"));
        assert!(html.contains("<details><summary>params</summary>"));
        // No external references: nothing to fetch.
        for needle in ["http://", "https://", "src=\"/", "href="] {
            assert!(!html.contains(needle), "{needle}");
        }
        assert_eq!(out.metadata["images_embedded"], 1);
        assert_eq!(out.metadata["steps"], 3);
    }

    #[test]
    fn artifacts_only_and_size_cap() {
        let p = params(json!({"max_embed_bytes": 10}));
        let out = ReportHtml::run(Input { artifacts: sample::artifacts(), params: p }).unwrap();
        let html = html_of(&out);
        assert!(!html.contains("data:image/png"));
        assert!(html.contains("too large to embed"));
        assert!(!html.contains("<h2>Steps</h2>"));
        assert_eq!(out.metadata["images_not_embedded"], json!(["fox.png"]));
    }

    #[test]
    fn invalid_inputs() {
        let err = ReportHtml::run(Input { artifacts: vec![], params: params(json!({})) }).err().unwrap();
        assert!(matches!(err, StageError::InvalidInput(_)));
        let err = ReportHtml::run(Input { artifacts: vec![], params: params(json!({"steps": [], "thumbnail_px": 5})) })
            .err()
            .unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("thumbnail_px")));
        assert!(serde_json::from_value::<Params>(json!({"thumbnails": 5})).is_err());
    }
}
