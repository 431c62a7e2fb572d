//! Stage routes: `POST /v1/stages/{name}/invoke` (through
//! [`Orchestrator::invoke`](stagecraft_orchestrator::Orchestrator::invoke),
//! so the queue limit, memory budget and deadline apply; a repeated invocation is answered from the
//! [`crate::invoke_cache`]), `GET /v1/stages` and
//! `GET /v1/artifacts/{digest}`, and `GET /v1/models` (the model
//! repository's counters).

use super::{body_bytes, content_type, multipart, parse_params};
use crate::error::{ApiError, ApiResult};
use crate::invoke_cache::{Answer, CacheUse};
use crate::jobs::artifact_link;
use crate::store::ArtifactMeta;
use crate::{reply, App};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use stagecraft_orchestrator::blobs::is_digest;
use stagecraft_orchestrator::{Error, InvokeRequest, ResultCache, Reuse};
use stagecraft_runtime::{Artifact, StageInput, StageVersion};
use stagecraft_scheduler::SubmitError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub async fn invoke(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> ApiResult<Response> {
    let multipart_reply = reply::negotiate(request.headers());
    let cache_use =
        if app.invoke_cache.enabled() { CacheUse::from_headers(request.headers()) } else { CacheUse::Bypass };
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
            let file =
                query.get("name").cloned().unwrap_or_else(|| format!("input.{}", Artifact::extension_for(&media_type)));
            vec![Artifact::new(file, media_type, body.to_vec())]
        };
        (params, artifacts)
    };

    // The same version on the same input: answered from memory, nothing
    // runs, if the stage is a pure function or someone opted in.
    let caller = match query.get("cache").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request("invalid_cache", format!("cache must be true or false, got '{other}'")))
        }
    };
    let reuse = match cache_use {
        _ if !app.invoke_cache.enabled() => Reuse::Off("the server's invoke cache is off (--invoke-cache-mb 0)".into()),
        CacheUse::Bypass => Reuse::Off("the caller asked for no-store".into()),
        _ => app.orchestrator.reuse().decide(&version, &params, caller),
    };
    let cache_key = reuse.is_on().then(|| ResultCache::key(&version.digest, &params, &artifacts));
    if let (CacheUse::Use, Some(key)) = (cache_use, &cache_key) {
        if let Some(answer) = app.invoke_cache.get(key) {
            return Ok(answer_response(&app, multipart_reply, &answer, &reuse, "hit"));
        }
    }

    let mut request = InvokeRequest::default().label(format!("http invoke {name}"));
    if let Some(t) = query.get("timeout") {
        let secs: f64 =
            t.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0).ok_or_else(|| {
                ApiError::bad_request("invalid_timeout", format!("timeout must be seconds in (0, 3600], got '{t}'"))
            })?;
        request = request.timeout(std::time::Duration::from_secs_f64(secs));
    }
    let answer = match app.cluster.as_ref().filter(|c| c.invoke_on_workers) {
        // This process runs no work (`serve --redis --workers 0`): a worker does.
        Some(cluster) => {
            let started = Instant::now();
            let timeout = request.timeout.unwrap_or(app.runtime.config().limits.timeout);
            let result =
                cluster.invoke_on_worker(&name, &params, artifacts, timeout, app.config.retry_after_secs).await;
            // A refused call never reached a worker: it is not a stage outcome.
            let refused = matches!(&result, Err(e) if e.code == "queue_full" || e.code == "too_many_watchers");
            if !refused {
                app.metrics.record_stage(&name, result.is_ok(), started.elapsed());
            }
            result?
        }
        None => invoke_here(&app, &name, &version, StageInput::new(artifacts, params), request).await?,
    };
    let answer = Arc::new(answer);
    let cache_state = match cache_key {
        Some(key) => {
            app.invoke_cache.put(key, answer.clone());
            "miss"
        }
        None => "off",
    };
    Ok(answer_response(&app, multipart_reply, &answer, &reuse, cache_state))
}

/// Runs the invocation in this process, through the orchestrator.
async fn invoke_here(
    app: &App,
    name: &str,
    version: &Arc<StageVersion>,
    input: StageInput,
    request: InvokeRequest,
) -> ApiResult<Answer> {
    let started = Instant::now();
    let result = app.orchestrator.invoke(version, input, request).await;
    // A refused task never ran: it is not a stage outcome.
    if !matches!(result, Err(Error::Refused(_))) {
        app.metrics.record_stage(name, result.is_ok(), started.elapsed());
        // One line per invocation for operators and `stagecraft dev`.
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::info!(target: "invocations", stage = %name, version = %version.info.version,
            ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3), "{outcome}");
    }
    let output = result.map_err(|e| match e {
        Error::Invoke(e) => ApiError::from_invoke(&e),
        Error::Refused(SubmitError::QueueFull { max }) => ApiError::queue_full(max, app.config.retry_after_secs),
        Error::Refused(SubmitError::ShuttingDown) | Error::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
        }
        Error::Cancelled => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", "the invocation was cancelled"),
    })?;
    Ok(Answer::from_output(output))
}

/// Renders an answer (fresh or kept): JSON with artifact links (the
/// artifacts kept in memory and written to disk in the background, so the
/// answer waits for no disk write; see `recent`), or multipart with the
/// bytes. `cache` goes to `x-stagecraft-cache`: hit, miss or off, and
/// why off to `x-stagecraft-cache-reason`.
fn answer_response(
    app: &App,
    multipart_reply: Option<reply::Multipart>,
    answer: &Answer,
    reuse: &Reuse,
    cache: &'static str,
) -> Response {
    let mut response = match multipart_reply {
        None => {
            let links = answer
                .artifacts
                .iter()
                .map(|a| {
                    let meta = ArtifactMeta {
                        digest: a.digest().to_owned(),
                        name: a.name.clone(),
                        media_type: a.media_type.clone(),
                    };
                    app.recent.add(meta, a.data.clone());
                    artifact_link(&a.name, &a.media_type, a.data.len(), a.digest())
                })
                .collect();
            Json(report(answer, links)).into_response()
        }
        Some(kind) => multipart_response(kind, answer),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&answer.version) {
        headers.insert("x-stagecraft-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.digest) {
        headers.insert("x-stagecraft-digest", v);
    }
    headers.insert("x-stagecraft-cache", HeaderValue::from_static(cache));
    if let Some(v) = reuse.reason().and_then(|r| HeaderValue::from_str(r).ok()) {
        headers.insert("x-stagecraft-cache-reason", v);
    }
    response
}

/// The JSON answer of an invocation (also the report part of a multipart one).
fn report(output: &Answer, artifacts: Vec<Value>) -> Value {
    json!({
        "stage": output.stage,
        "version": output.version,
        "digest": output.digest,
        "artifacts": artifacts,
        "metadata": output.metadata,
    })
}

/// The artifacts in the body itself: a JSON report part first, then one
/// part per artifact with its media type and file name. Nothing goes to
/// the blob store (the caller has the bytes), so the report lists each
/// artifact's part instead of a link.
fn multipart_response(kind: reply::Multipart, output: &Answer) -> Response {
    let listed = output
        .artifacts
        .iter()
        .enumerate()
        .map(|(i, a)| json!({ "name": a.name, "media_type": a.media_type, "bytes": a.data.len(), "part": i + 1 }))
        .collect();
    let report = serde_json::to_vec(&report(output, listed)).unwrap_or_default();
    let (report_disposition, artifact_kind) = match kind {
        reply::Multipart::Mixed => ("inline; name=\"report\"".to_owned(), "attachment"),
        reply::Multipart::FormData => ("form-data; name=\"report\"".to_owned(), "form-data; name=\"artifact\""),
    };
    let mut parts =
        vec![reply::Part { disposition: report_disposition, media_type: "application/json", data: &report }];
    parts.extend(output.artifacts.iter().map(|a| reply::Part {
        disposition: reply::disposition(artifact_kind, &a.name),
        media_type: &a.media_type,
        data: &a.data[..],
    }));
    let (content_type, body) = reply::encode(kind, &parts);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
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
    let listed: Vec<Value> = stages
        .iter()
        .map(|v| {
            let mut described = describe(v);
            // What a rollback would go back to, newest first.
            let previous: Vec<Value> = app
                .runtime
                .previous_versions(&v.info.name)
                .iter()
                .map(|p| json!({ "version": p.info.version, "digest": p.digest, "origin": p.origin }))
                .collect();
            described["previous"] = Value::Array(previous);
            described
        })
        .collect();
    Json(json!({ "stages": listed }))
}

/// `GET /v1/models`: the model repository's models with their batching
/// counters, and the models that failed to load.
pub async fn models(State(app): State<App>) -> Json<Value> {
    let Some(models) = app.runtime.models() else {
        return Json(json!({ "models": [], "failed": [], "repository": null }));
    };
    let failed: Vec<Value> =
        models.failures().into_iter().map(|(name, error)| json!({ "name": name, "error": error })).collect();
    Json(json!({ "models": models.list(), "failed": failed, "repository": models.dir() }))
}

pub async fn artifact(State(app): State<App>, Path(digest): Path<String>) -> ApiResult<Response> {
    if !is_digest(&digest) {
        return Err(ApiError::bad_request(
            "invalid_digest",
            format!("'{digest}' is not a sha256 digest (64 hex digits)"),
        ));
    }
    let (meta, data) = match app.recent.get(&digest) {
        Some((meta, data)) => (Some(meta), data),
        None => {
            let data = match app.jobs.blobs.get(&digest).await.map_err(anyhow::Error::from)? {
                Some(data) => data,
                // Small artifacts of synchronous invocations are kept in SQLite.
                None => app
                    .jobs
                    .store
                    .artifact_data(&digest)?
                    .ok_or_else(|| ApiError::not_found("unknown_artifact", format!("no artifact {digest}")))?,
            };
            let mut meta = app.jobs.store.artifact(&digest)?;
            if let (None, Some(cluster)) = (&meta, &app.cluster) {
                // A worker's artifact: its name and type are in Redis.
                meta = match cluster.queue.artifact(&digest).await {
                    Ok(info) => info.map(|i| ArtifactMeta { digest: i.sha256, name: i.name, media_type: i.media_type }),
                    Err(e) => {
                        tracing::warn!("looking up artifact {digest} in the cluster: {e}");
                        None
                    }
                };
            }
            (meta, Bytes::from(data))
        }
    };
    let media_type = meta
        .as_ref()
        .and_then(|m| HeaderValue::from_str(&m.media_type).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = Body::from(data).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, media_type);
    // Content comes from plugins and callers: browsers must not guess a
    // type, and must save rather than render it (an HTML artifact shown on
    // this origin could script against the API).
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // And should a browser render it anyway: no script, an opaque origin.
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    let disposition = match &meta {
        Some(m) => reply::disposition("attachment", &m.name),
        None => "attachment".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
