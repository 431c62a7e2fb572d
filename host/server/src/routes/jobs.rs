//! Pipeline jobs: `POST /v1/pipelines/run` (validate, store, answer 202),
//! `GET /v1/jobs/{id}`, `DELETE /v1/jobs/{id}` (cancel) and
//! `GET /v1/jobs/{id}/events` (server-sent events).

use super::{body_bytes, content_type, multipart};
use crate::cluster::ClusterJobs;
use crate::error::{ApiError, ApiResult};
use crate::jobs::store_inputs;
use crate::{sse, App};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use stagecraft_cluster::{Band, Cancel};
use stagecraft_orchestrator::blobs::sha256_hex;
use stagecraft_orchestrator::{JobInput, JobSpec};
use stagecraft_runtime::Artifact;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a run request carries, whatever its encoding.
struct RunRequest {
    pipeline: String,
    input: Option<String>,
    files: Vec<Artifact>,
}

pub(crate) fn new_job_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    sha256_hex(seed.as_bytes())[..24].to_owned()
}

fn from_json(body: &[u8]) -> ApiResult<RunRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    let Some(pipeline) = value.get("pipeline") else {
        // The whole body is the pipeline.
        return Ok(RunRequest { pipeline: value.to_string(), input: None, files: Vec::new() });
    };
    let pipeline = match pipeline {
        Value::String(s) => s.clone(),
        Value::Object(_) => pipeline.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "'pipeline' must be a string (YAML or JSON) or an object",
            ))
        }
    };
    let input = match value.get("input") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("invalid_request", "'input' must be a string")),
    };
    let mut files = Vec::new();
    for (i, file) in value.get("files").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = file.get("name").and_then(Value::as_str).unwrap_or("input").to_owned();
        let data = file
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("invalid_request", format!("files[{i}] has no 'data' (base64)")))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| ApiError::bad_request("invalid_request", format!("files[{i}].data is not base64: {e}")))?;
        let media_type = file
            .get("media_type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| Artifact::media_type_for(&name).to_owned());
        files.push(Artifact::new(name, media_type, data));
    }
    Ok(RunRequest { pipeline, input, files })
}

async fn read_run_request(query: &HashMap<String, String>, request: Request) -> ApiResult<RunRequest> {
    let mut run = match content_type(&request).as_deref() {
        Some("multipart/form-data") => {
            let mut form = multipart(request).await?;
            let pipeline = match form.field("pipeline") {
                Some(p) => p.to_owned(),
                None => match form.files.iter().position(|f| f.name.ends_with(".yaml") || f.name.ends_with(".yml")) {
                    Some(i) => String::from_utf8(form.files.remove(i).data)
                        .map_err(|_| ApiError::bad_request("invalid_request", "the pipeline file is not UTF-8"))?,
                    None => return Err(ApiError::bad_request("invalid_request", "the form has no 'pipeline' field")),
                },
            };
            RunRequest { pipeline, input: form.field("input").map(str::to_owned), files: form.files }
        }
        Some("application/json") => from_json(&body_bytes(request).await?)?,
        _ => {
            let body = body_bytes(request).await?;
            let pipeline = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::bad_request("invalid_request", "the pipeline is not UTF-8 text"))?;
            RunRequest { pipeline, input: None, files: Vec::new() }
        }
    };
    if run.input.is_none() {
        run.input = query.get("input").cloned();
    }
    Ok(run)
}

pub async fn run(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> ApiResult<Response> {
    let run = read_run_request(&query, request).await?;
    let file = query.get("file").cloned().unwrap_or_else(|| "pipeline.yaml".to_owned());
    super::check_pipeline_source(&app, &run.pipeline, &file)?;
    if let Err(diagnostics) = app.orchestrator.load_pipeline(&run.pipeline, &file) {
        return Err(super::invalid_pipeline(&diagnostics));
    }
    let id = new_job_id();
    if let Some(cluster) = &app.cluster {
        return enqueue(&app, cluster, &id, &query, run, file).await;
    }
    let inputs = store_inputs(&app.jobs, &run.files).await?;
    app.jobs.store.insert(&id, &run.pipeline, &file, run.input.as_deref(), &inputs)?;
    let record = app.jobs.store.get(&id)?.ok_or_else(|| ApiError::internal("the job vanished after it was written"))?;
    app.jobs.start(record);
    let url = format!("/v1/jobs/{id}");
    let body = json!({ "id": id, "state": "queued", "url": url, "events": format!("{url}/events") });
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, url)], Json(body)).into_response())
}

/// `serve --redis`: the job goes on the cluster's queue (inputs into the
/// shared blob store first); 429 when the cluster's bound on queued jobs
/// is reached, wherever the other jobs were accepted.
async fn enqueue(
    app: &App,
    cluster: &ClusterJobs,
    id: &str,
    query: &HashMap<String, String>,
    run: RunRequest,
    file: String,
) -> ApiResult<Response> {
    let band = match query.get("priority").map(String::as_str) {
        None | Some("normal") => Band::Normal,
        Some("high") => Band::High,
        Some("low") => Band::Low,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("priority must be high, normal or low, not '{other}'"),
            ))
        }
    };
    let mut inputs = Vec::with_capacity(run.files.len());
    for f in &run.files {
        let sha256 = cluster.blobs.put(&f.data).await.map_err(anyhow::Error::from)?;
        inputs.push(JobInput { name: f.name.clone(), media_type: f.media_type.clone(), sha256 });
    }
    let spec = JobSpec { pipeline: run.pipeline, file, input: run.input, inputs };
    let payload = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
    cluster
        .queue
        .enqueue(id, band, &payload)
        .await
        .map_err(|e| crate::cluster::queue_error(e, app.config.retry_after_secs))?;
    let url = format!("/v1/jobs/{id}");
    let body = json!({ "id": id, "state": "queued", "url": url, "events": format!("{url}/events") });
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, url)], Json(body)).into_response())
}

use crate::cluster::cluster_error;

/// `POST /v1/pipelines/validate`: what `run` would refuse, without running
/// anything: 400 `invalid_pipeline` with the diagnostics (line and column),
/// or the steps it would run.
pub async fn validate(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let run = read_run_request(&query, request).await?;
    let file = query.get("file").cloned().unwrap_or_else(|| "pipeline.yaml".to_owned());
    super::check_pipeline_source(&app, &run.pipeline, &file)?;
    let pipeline = app.orchestrator.load_pipeline(&run.pipeline, &file).map_err(|d| super::invalid_pipeline(&d))?;
    let steps: Vec<Value> = pipeline
        .steps()
        .iter()
        .map(|s| {
            let deps: Vec<&str> = s.deps.iter().map(|&i| pipeline.steps()[i].name.as_str()).collect();
            json!({ "name": s.name, "stage": s.stage, "depends_on": deps })
        })
        .collect();
    Ok(Json(json!({ "valid": true, "name": pipeline.name(), "steps": steps })))
}

/// `GET /v1/jobs?limit=N`: the newest jobs (50 unless asked, at most 500),
/// newest first.
pub async fn list(State(app): State<App>, Query(query): Query<HashMap<String, String>>) -> ApiResult<Json<Value>> {
    let limit = match query.get("limit") {
        None => 50,
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=500).contains(n)).ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("limit must be a number from 1 to 500, not '{text}'"))
        })?,
    };
    if let Some(cluster) = &app.cluster {
        let jobs = cluster.queue.recent(limit).await.map_err(cluster_error)?;
        let jobs: Vec<Value> = jobs
            .iter()
            .map(|j| {
                let mut v = crate::cluster::record_json(j);
                // A listing stays small: no reports or inputs.
                for heavy in ["report", "inputs", "input_text"] {
                    v.as_object_mut().map(|o| o.remove(heavy));
                }
                v
            })
            .collect();
        return Ok(Json(json!({ "jobs": jobs })));
    }
    let jobs = app.jobs.store.recent(limit)?;
    Ok(Json(json!({ "jobs": jobs })))
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::not_found("unknown_job", format!("no job '{id}'"))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if let Some(cluster) = &app.cluster {
        let record = cluster.queue.job(&id).await.map_err(cluster_error)?.ok_or_else(|| unknown_job(&id))?;
        return Ok(Json(crate::cluster::record_json(&record)));
    }
    let record = app.jobs.store.get(&id)?.ok_or_else(|| unknown_job(&id))?;
    let mut body = serde_json::to_value(&record).map_err(anyhow::Error::from)?;
    body["events_url"] = json!(format!("/v1/jobs/{id}/events"));
    Ok(Json(body))
}

pub async fn cancel(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    if let Some(cluster) = &app.cluster {
        return match cluster.queue.cancel(&id).await.map_err(cluster_error)? {
            Cancel::Unknown => Err(unknown_job(&id)),
            Cancel::Ended(state) => {
                Err(ApiError::new(StatusCode::CONFLICT, "job_finished", format!("job '{id}' already ended ({state})"))
                    .with_details(json!({ "state": state })))
            }
            Cancel::Cancelled | Cancel::Requested => {
                Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "cancel_requested": true }))).into_response())
            }
        };
    }
    match app.jobs.cancel(&id)? {
        None => Err(unknown_job(&id)),
        Some(state) if state.is_final() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_finished",
            format!("job '{id}' already ended ({})", state.as_str()),
        )
        .with_details(json!({ "state": state }))),
        Some(_) => Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "cancel_requested": true }))).into_response()),
    }
}

pub async fn events(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    if let Some(cluster) = &app.cluster {
        cluster.queue.job(&id).await.map_err(cluster_error)?.ok_or_else(|| unknown_job(&id))?;
        return Ok(crate::cluster::events(cluster, &id).await?.into_response());
    }
    if let Some(live) = app.jobs.live(&id) {
        return Ok(sse::live(live).into_response());
    }
    let record = app.jobs.store.get(&id)?.ok_or_else(|| unknown_job(&id))?;
    // Ended (here or in an earlier process): replay what was kept.
    if let Some(live) = app.jobs.live(&id) {
        return Ok(sse::live(live).into_response());
    }
    Ok(sse::replay(record.events.unwrap_or_default()).into_response())
}
