//! Stage routes: `POST /v1/stages/{name}/invoke` (through the scheduler,
//! so the queue limit applies), `GET /v1/stages` and
//! `GET /v1/artifacts/{digest}`, and `GET /v1/models` (the model
//! repository's counters).

use super::{body_bytes, content_type, multipart, parse_params};
use crate::error::{ApiError, ApiResult};
use crate::jobs::artifact_link;
use crate::App;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stagecraft_orchestrator::blobs::is_digest;
use stagecraft_orchestrator::runner::to_failure;
use stagecraft_runtime::{Artifact, InvokeOptions, StageInput, StageOutput};
use stagecraft_scheduler::{RetryPolicy, SubmitError, TaskError, TaskSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub async fn invoke(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> ApiResult<Response> {
    let version = app
        .runtime
        .stage(&name)
        .ok_or_else(|| ApiError::not_found("unknown_stage", format!("unknown stage '{name}'")))?;
    let (params, artifacts) = if content_type(&request).as_deref() == Some("multipart/form-data") {
        let form = multipart(request).await?;
        let params = parse_params(form.field("params").or(query.get("params").map(String::as_str)))?;
        (params, form.files)
    } else {
        let params = parse_params(query.get("params").map(String::as_str))?;
        let media_type = content_type(&request).unwrap_or_else(|| "application/octet-stream".to_owned());
        let body = body_bytes(request).await?;
        let artifacts = if body.is_empty() {
            Vec::new()
        } else {
            let file = query.get("name").cloned().unwrap_or_else(|| format!("input.{}", Artifact::extension_for(&media_type)));
            vec![Artifact::new(file, media_type, body.to_vec())]
        };
        (params, artifacts)
    };

    let mut options = InvokeOptions::default();
    if let Some(t) = query.get("timeout") {
        let secs: f64 = t
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .ok_or_else(|| ApiError::bad_request("invalid_timeout", format!("timeout must be seconds in (0, 3600], got '{t}'")))?;
        options = options.with_timeout(std::time::Duration::from_secs_f64(secs));
    }
    let input = StageInput::new(artifacts, params);
    let error: Arc<Mutex<Option<ApiError>>> = Arc::default();
    let spec = TaskSpec::new(name.clone()).label(format!("http invoke {name}")).retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() });
    let work = {
        let runtime = app.runtime.clone();
        let error = error.clone();
        move |_attempt| {
            let (runtime, version, input, error) = (runtime.clone(), version.clone(), input.clone(), error.clone());
            let options = options.clone();
            async move {
                runtime.invoke_version(&version, input, options).await.map_err(|e| {
                    let failure = to_failure(&e);
                    *error.lock().unwrap() = Some(ApiError::from_invoke(&e));
                    failure
                })
            }
        }
    };
    let started = Instant::now();
    let handle = app.orchestrator.scheduler().submit(spec, work).map_err(|e| match e {
        SubmitError::QueueFull { max } => ApiError::queue_full(max, app.config.retry_after_secs),
        SubmitError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"),
    })?;
    let result = handle.await;
    app.metrics.record_stage(&name, result.outcome.is_ok(), started.elapsed());
    let output: StageOutput = match result.outcome {
        Ok(output) => output,
        Err(e) => {
            let stored = error.lock().unwrap().take();
            return Err(stored.unwrap_or_else(|| match e {
                TaskError::Failed { failure, .. } => {
                    ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", failure.to_string())
                }
                TaskError::Cancelled => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", "the invocation was cancelled"),
                TaskError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"),
            }));
        }
    };

    let mut links = Vec::with_capacity(output.artifacts.len());
    for a in &output.artifacts {
        let digest = app.jobs.blobs.put(&a.data)?;
        links.push(artifact_link(&a.name, &a.media_type, a.data.len(), &digest));
    }
    let body = json!({
        "stage": output.stage,
        "version": output.version,
        "digest": output.digest,
        "artifacts": links,
        "metadata": output.metadata,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&output.version) {
        headers.insert("x-stagecraft-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&output.digest) {
        headers.insert("x-stagecraft-digest", v);
    }
    Ok(response)
}

/// A stage version as listed.
pub fn describe(v: &stagecraft_runtime::StageVersion) -> Value {
    json!({
        "name": v.info.name,
        "version": v.info.version,
        "digest": v.digest,
        "origin": v.origin,
        "loaded_at": v.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "description": v.info.description,
        "params_schema": v.info.params_schema,
        "accepts": v.info.accepts,
        "produces": v.info.produces,
    })
}

pub async fn list(State(app): State<App>) -> Json<Value> {
    let mut stages = app.runtime.stages();
    stages.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    Json(json!({ "stages": stages.iter().map(|v| describe(v)).collect::<Vec<_>>() }))
}

/// `GET /v1/models`: the model repository's models with their batching
/// counters, and the models that failed to load.
pub async fn models(State(app): State<App>) -> Json<Value> {
    let Some(models) = app.runtime.models() else {
        return Json(json!({ "models": [], "failed": [], "repository": null }));
    };
    let failed: Vec<Value> = models.failures().into_iter().map(|(name, error)| json!({ "name": name, "error": error })).collect();
    Json(json!({ "models": models.list(), "failed": failed, "repository": models.dir() }))
}

pub async fn artifact(State(app): State<App>, Path(digest): Path<String>) -> ApiResult<Response> {
    if !is_digest(&digest) {
        return Err(ApiError::bad_request("invalid_digest", format!("'{digest}' is not a sha256 digest (64 hex digits)")));
    }
    let data = app
        .jobs
        .blobs
        .get(&digest)?
        .ok_or_else(|| ApiError::not_found("unknown_artifact", format!("no artifact {digest}")))?;
    // The media type is in the listing that gave the link; content comes
    // from plugins and callers, so browsers must not guess and render it.
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
    ];
    Ok((headers, Body::from(data)).into_response())
}
