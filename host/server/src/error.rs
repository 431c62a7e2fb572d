//! The one error shape every route answers with:
//! `{"error": {"code": "...", "message": "...", "details": ...}}`, and the
//! mapping from runtime and scheduler errors to HTTP statuses (a caller's
//! mistake is a 4xx, never a 500).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stagecraft_runtime::InvokeError;

/// An error answered to the caller.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None, retry_after: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn queue_full(max: usize, retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("the queue is full ({max} tasks waiting); retry later"),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// A runtime error as the caller should see it.
    pub fn from_invoke(e: &InvokeError) -> Self {
        Self::from_code(e.code(), e.to_string())
    }

    /// From an [`InvokeError::code`] and its message.
    pub fn from_code(code: &'static str, message: String) -> Self {
        let status = INVOKE_STATUS.iter().find(|(c, _)| *c == code).map_or(StatusCode::INTERNAL_SERVER_ERROR, |s| s.1);
        Self::new(status, code, message)
    }

    /// From an [`InvokeError::code`] that came back as text (a worker's
    /// answer to an invocation it ran): the same error as a local one; a
    /// code this host does not know is `failed`.
    pub fn from_remote_code(code: &str, message: String) -> Self {
        let code = INVOKE_STATUS.iter().find(|(c, _)| *c == code).map_or("failed", |s| s.0);
        Self::from_code(code, message)
    }
}

/// Every [`InvokeError::code`] and the status it answers.
const INVOKE_STATUS: [(&str, StatusCode); 10] = [
    ("unknown_stage", StatusCode::NOT_FOUND),
    ("invalid_input", StatusCode::BAD_REQUEST),
    ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
    ("timeout", StatusCode::GATEWAY_TIMEOUT),
    ("memory_limit", StatusCode::UNPROCESSABLE_ENTITY),
    ("failed", StatusCode::UNPROCESSABLE_ENTITY),
    ("trap", StatusCode::UNPROCESSABLE_ENTITY),
    ("panic", StatusCode::UNPROCESSABLE_ENTITY),
    ("quota_exceeded", StatusCode::UNPROCESSABLE_ENTITY),
    ("host_error", StatusCode::INTERNAL_SERVER_ERROR),
];

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
