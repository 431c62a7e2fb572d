//! The operator console at `GET /`: one page, its script and its style,
//! embedded in the binary (nothing to build or install on the user's side;
//! no front-end library: the page is small and plain DOM keeps it
//! auditable), and the live status it draws, as server-sent events.
//!
//! Safe by default: a strict Content-Security-Policy (scripts and styles
//! only from this origin, nothing inline, no framing), the admin token kept
//! in the browser's session storage and sent as a header (never in a URL),
//! and artifacts never rendered as documents from this origin (see
//! `routes::stages::artifact`).

use crate::App;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

/// The console's policy: its own script and style only, images from this
/// origin (artifact thumbnails) and `data:` (the page's own), fetches and
/// event streams to this origin, no plugins, frames or form posts away.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                      connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// How often the live status is sent.
const STATUS_EVERY: Duration = Duration::from_secs(1);

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The binary is the version: a new one brings new assets.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: the page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /console/{file}`: the page's script and style.
pub async fn file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => asset("text/css; charset=utf-8", STYLE),
        _ => crate::error::ApiError::not_found("not_found", format!("no console file '{file}'")).into_response(),
    }
}

/// Everything the overview draws, at one instant: the scheduler's queue
/// and per-stage slots, the runtime's CPU slots and parked instances, job
/// counts, running totals (the page turns them into rates), the device and
/// its breaker, and the models with their engines and batch counters.
pub fn snapshot(app: &App) -> Value {
    let mut status = crate::routes::admin::queue_status(app);
    let jobs: serde_json::Map<String, Value> =
        app.jobs.store.counts().unwrap_or_default().into_iter().map(|(state, n)| (state, json!(n))).collect();
    let segmenter = stagecraft_accel::segmenter::Segmenter::global();
    let breaker = match segmenter.breaker_state() {
        stagecraft_accel::breaker::State::Closed { failures } => json!({ "state": "closed", "failures": failures }),
        stagecraft_accel::breaker::State::Open { until } => json!({
            "state": "open",
            "reopens_in_s": until.saturating_duration_since(std::time::Instant::now()).as_secs_f64(),
        }),
        stagecraft_accel::breaker::State::HalfOpen => json!({ "state": "half_open" }),
    };
    let device = match segmenter.device() {
        Ok(d) => json!({ "device": d.device.to_string(), "summary": d.summary }),
        Err(e) => json!({ "device": null, "summary": e }),
    };
    let gpu_memory = segmenter.gpu_memory().map(|(used, total)| json!({ "used_bytes": used, "total_bytes": total }));
    let models = app.runtime.models().map(|m| json!(m.list())).unwrap_or_else(|| json!([]));
    if let Value::Object(map) = &mut status {
        map.insert("jobs".into(), Value::Object(jobs));
        map.insert("totals".into(), json!(app.metrics.totals()));
        map.insert("device".into(), json!({ "segmentation": device, "breaker": breaker, "gpu_memory": gpu_memory }));
        map.insert("models".into(), models);
        map.insert("at".into(), json!(crate::store::now()));
    }
    status
}

/// `GET /v1/status/stream`: [`snapshot`] as a `status` event every second
/// until the client goes or the server stops (one connection per open
/// page: the page never polls).
pub async fn status_stream(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::unfold((app, true), |(app, first)| async move {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(STATUS_EVERY) => {}
                _ = app.stopping.cancelled() => return None,
            }
        }
        let data = snapshot(&app).to_string();
        Some((Ok(Event::default().event("status").data(data)), (app, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
