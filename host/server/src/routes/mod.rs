//! The routes, one module per area, and the request-body helpers they
//! share (raw bodies and multipart forms, with limit errors as 413), and the
//! checks of caller input that must hold before anything recurses over it:
//! params ([`parse_params`]) and pipeline sources ([`check_pipeline_source`]).

pub mod admin;
pub mod jobs;
pub mod stages;
pub mod unread_body;

use crate::error::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use stagecraft_pipeline::limits::{human_bytes, json_depth};
use stagecraft_runtime::Artifact;

/// The body limit of the route a request went to, as a request extension
/// (the router adds it next to each `DefaultBodyLimit`), so that a 413 can
/// name the limit.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

fn rejection(status: StatusCode, text: String, limit: Option<BodyLimit>) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            let text = match limit {
                Some(BodyLimit(n)) => {
                    format!("the request body is larger than this route's limit of {}", human_bytes(n))
                }
                None => text,
            };
            ApiError::new(status, "payload_too_large", text)
        }
        s if s.is_client_error() => ApiError::new(s, "bad_request", text),
        s => ApiError::new(s, "internal", text),
    }
}

/// The request's media type (without parameters), if any.
pub fn content_type(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// The whole body (bounded by the route's body limit: 413 past it).
pub async fn body_bytes(request: Request) -> ApiResult<Bytes> {
    let limit = request.extensions().get::<BodyLimit>().copied();
    Bytes::from_request(request, &()).await.map_err(|r| rejection(r.status(), r.body_text(), limit))
}

/// A multipart form: text fields by name, and file parts as artifacts.
pub struct Form {
    pub fields: Vec<(String, String)>,
    pub files: Vec<Artifact>,
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads a multipart form; parts with a file name (or a non-text content
/// type) are artifacts, the others text fields.
pub async fn multipart(request: Request) -> ApiResult<Form> {
    let limit = request.extensions().get::<BodyLimit>().copied();
    let mut form =
        Multipart::from_request(request, &()).await.map_err(|r| rejection(r.status(), r.body_text(), limit))?;
    let mut out = Form { fields: Vec::new(), files: Vec::new() };
    while let Some(field) = form.next_field().await.map_err(|e| rejection(e.status(), e.body_text(), limit))? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let media_type = field.content_type().map(str::to_owned);
        let data = field.bytes().await.map_err(|e| rejection(e.status(), e.body_text(), limit))?;
        match file_name {
            Some(file_name) => {
                let media_type = media_type
                    .filter(|m| m != "application/octet-stream")
                    .unwrap_or_else(|| Artifact::media_type_for(&file_name).to_owned());
                out.files.push(Artifact::new(file_name, media_type, data.to_vec()));
            }
            None => {
                let text = String::from_utf8(data.to_vec()).map_err(|_| {
                    ApiError::bad_request("bad_request", format!("form field '{name}' is not UTF-8 text"))
                })?;
                out.fields.push((name, text));
            }
        }
    }
    Ok(out)
}

/// Largest params text accepted (query string or form field). 1 MiB: params
/// are settings (a prompt, a few numbers), never data; data travels as
/// artifacts.
pub const MAX_PARAMS_BYTES: usize = 1 << 20;

/// Deepest params accepted, counting the object itself: the same 64 levels a
/// pipeline may nest ([`stagecraft_pipeline::SourceLimits`]), well below
/// serde_json's own recursion limit of 128, and shallow enough for every
/// recursive walk of params (templates, schema checks, cloning, dropping).
pub const MAX_PARAMS_DEPTH: usize = 64;

/// Parses stage params: a JSON object, or absent (`{}`). Too big or too deep
/// params are a 400 `invalid_params` that names the limit.
pub fn parse_params(text: Option<&str>) -> ApiResult<serde_json::Value> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(serde_json::json!({})) };
    let invalid = |m: String| ApiError::bad_request("invalid_params", m);
    if text.len() > MAX_PARAMS_BYTES {
        return Err(invalid(format!(
            "params are {} long; the limit is {}",
            human_bytes(text.len()),
            human_bytes(MAX_PARAMS_BYTES)
        )));
    }
    let too_deep = || invalid(format!("params are nested deeper than {MAX_PARAMS_DEPTH} levels (the limit)"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json stops at 128 levels by itself; say it in our terms.
        if e.to_string().starts_with("recursion limit exceeded") {
            too_deep()
        } else {
            invalid(format!("params are not valid JSON: {e}"))
        }
    })?;
    if !value.is_object() {
        let shown = stagecraft_pipeline::limits::shorten(&value.to_string(), 80).into_owned();
        return Err(invalid(format!("params must be a JSON object, got {shown}")));
    }
    if json_depth(&value) > MAX_PARAMS_DEPTH {
        return Err(too_deep());
    }
    Ok(value)
}

/// Checks a pipeline source against the server's [`crate::ServerConfig::pipeline_limits`]
/// before it is parsed: past a limit, the same 400 `invalid_pipeline` as
/// any other invalid pipeline, whose one diagnostic names the limit.
pub fn check_pipeline_source(app: &crate::App, source: &str, file: &str) -> ApiResult<()> {
    stagecraft_pipeline::limits::check(source, file, &app.config.pipeline_limits)
        .map_err(|diagnostics| invalid_pipeline(&diagnostics))
}

/// The answer to a pipeline that does not load: 400 `invalid_pipeline` with
/// every diagnostic in `details`.
pub fn invalid_pipeline(diagnostics: &stagecraft_pipeline::Diagnostics) -> ApiError {
    ApiError::bad_request(
        "invalid_pipeline",
        format!("the pipeline is not valid ({} problem(s)); nothing ran", diagnostics.len()),
    )
    .with_details(serde_json::json!({ "diagnostics": diagnostics, "text": diagnostics.to_string() }))
}
