//! The routes, one module per area, and the request-body helpers they
//! share (raw bodies and multipart forms, with limit errors as 413).

pub mod admin;
pub mod jobs;
pub mod stages;

use crate::error::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use stagecraft_runtime::Artifact;

fn rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(status, "payload_too_large", text),
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
    Bytes::from_request(request, &()).await.map_err(|r| rejection(r.status(), r.body_text()))
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
    let mut form = Multipart::from_request(request, &()).await.map_err(|r| rejection(r.status(), r.body_text()))?;
    let mut out = Form { fields: Vec::new(), files: Vec::new() };
    while let Some(field) = form.next_field().await.map_err(|e| rejection(e.status(), e.body_text()))? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let media_type = field.content_type().map(str::to_owned);
        let data = field.bytes().await.map_err(|e| rejection(e.status(), e.body_text()))?;
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

/// Parses stage params: a JSON object, or absent (`{}`).
pub fn parse_params(text: Option<&str>) -> ApiResult<serde_json::Value> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(serde_json::json!({})) };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request("invalid_params", format!("params are not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("invalid_params", format!("params must be a JSON object, got {value}")));
    }
    Ok(value)
}
