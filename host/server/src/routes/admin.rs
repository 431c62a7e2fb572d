//! Operator routes: component upload and rollback (bearer token; off
//! without one), queue status, health, readiness, metrics and the OpenAPI
//! document.

use super::body_bytes;
use super::stages::describe;
use crate::error::{ApiError, ApiResult};
use crate::{openapi, App};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// 404 when no token is configured (the routes are off), 401 without the
/// right `Authorization: Bearer` token.
fn require_admin(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = app.config.admin_token.as_deref() else {
        return Err(ApiError::not_found("admin_disabled", "admin routes are off: no admin token is configured"));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compare without an early exit on the first differing byte.
    let ok = given.is_some_and(|g| {
        g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        Ok(())
    } else {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "this route needs the admin bearer token");
        e.details = None;
        Err(e)
    }
}

pub async fn put_stage(State(app): State<App>, Path(name): Path<String>, request: Request) -> ApiResult<Response> {
    require_admin(&app, request.headers())?;
    let bytes = body_bytes(request).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("invalid_component", "the body is empty: send the component's bytes"));
    }
    let runtime = app.runtime.clone();
    let origin = format!("upload:{name}");
    // Compile, validate and describe first; nothing is installed until the
    // component is known to be the stage the URL names.
    let prepared = tokio::task::spawn_blocking(move || runtime.prepare_bytes(&bytes, &origin).map(|v| (v, bytes)))
        .await
        .map_err(|e| ApiError::internal(format!("the install task failed: {e}")))?;
    let (version, bytes) = prepared
        .map_err(|e| ApiError::bad_request("invalid_component", format!("the component was refused: {e:#}")))?;
    if version.info.name != name {
        return Err(ApiError::bad_request(
            "stage_name_mismatch",
            format!("the component describes itself as '{}', not '{name}'", version.info.name),
        ));
    }
    if let Some(cluster) = &app.cluster {
        // Every process of the cluster runs it once Redis says so; the
        // bytes go to the shared store first, so any process can load them.
        cluster.blobs.put_known(&version.digest, &bytes).await.map_err(anyhow::Error::from)?;
        let before = app.runtime.stage(&name);
        if let Some(before) = before.as_deref() {
            if !cluster.blobs.contains(&before.digest).await.unwrap_or(false) {
                crate::cluster::keep_component(&cluster.blobs, before).await;
            }
        }
        cluster
            .queue
            .publish_stage(&name, &version.digest, before.as_ref().map(|b| b.digest.as_str()))
            .await
            .map_err(|e| ApiError::internal(format!("publishing the version to the cluster: {e}")))?;
    }
    // Kept on disk before it serves, so a crash right after cannot lose it.
    let swap = app.uploads.swap_lock();
    app.uploads.record_upload(&version, &bytes)?;
    let version = app.runtime.activate(version);
    drop(swap);
    if let Some(cluster) = &app.cluster {
        // Redis is the truth: an upload published after this one (on
        // another API process) may already have been applied here, and the
        // activation above must not undo it.
        crate::cluster::apply_stages(&app.runtime, &cluster.blobs, &cluster.queue, Some(std::slice::from_ref(&name)))
            .await;
    }
    tracing::info!(stage = %name, version = %version.info.version, digest = %version.digest, "new component version");
    Ok(Json(describe(&version)).into_response())
}

pub async fn rollback(State(app): State<App>, Path(name): Path<String>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    require_admin(&app, &headers)?;
    if let Some(cluster) = &app.cluster {
        // The cluster's history decides, so every process rolls back alike.
        if app.runtime.stage(&name).is_none() {
            return Err(ApiError::not_found("unknown_stage", format!("no stage '{name}'")));
        }
        let cluster_error = |e| ApiError::internal(format!("rolling back in the cluster: {e}"));
        let Some(digest) = cluster.queue.rollback_stage(&name).await.map_err(cluster_error)? else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_previous_version",
                format!("the cluster has no earlier version of '{name}'"),
            ));
        };
        let version = crate::cluster::activate_digest(&app.runtime, &cluster.blobs, &name, &digest)
            .await
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
        return Ok(Json(describe(&version)));
    }
    let _swap = app.uploads.swap_lock();
    match app.runtime.rollback(&name) {
        Ok(version) => {
            app.uploads.record_rollback(&version)?;
            Ok(Json(describe(&version)))
        }
        Err(e) if e.code() == "unknown_stage" => Err(ApiError::from_invoke(&e)),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, "no_previous_version", e.to_string())),
    }
}

/// The scheduler's view (in flight, queued, per-stage pools) plus the
/// runtime's: CPU slots busy, invocations queued for one, and instances
/// parked by what they wait on.
pub fn queue_status(app: &App) -> Value {
    let mut status = serde_json::to_value(app.orchestrator.scheduler().status()).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut status {
        map.insert("capacity".into(), serde_json::to_value(app.runtime.capacity()).unwrap_or(Value::Null));
    }
    status
}

/// `GET /v1/status/queue`: this process's scheduler and capacity, and with
/// `--redis` the cluster's queue: depth per band, leases, commits,
/// reclaims, dead letters (the newest ten with their reasons) and each
/// worker's liveness.
pub async fn queue(State(app): State<App>) -> ApiResult<Json<Value>> {
    let mut status = queue_status(&app);
    if let Some(cluster) = &app.cluster {
        let stats = cluster.queue.stats().await.map_err(|e| ApiError::internal(format!("the cluster's queue: {e}")))?;
        let dead =
            cluster.queue.dead_letters(10).await.map_err(|e| ApiError::internal(format!("dead letters: {e}")))?;
        let mut value = serde_json::to_value(stats).unwrap_or(Value::Null);
        value["recent_dead_letters"] = serde_json::to_value(dead).unwrap_or(Value::Null);
        let (waiting, max) = cluster.watchers();
        value["watchers"] = json!({ "in_use": waiting, "max": max });
        status["cluster"] = value;
    }
    Ok(Json(status))
}

pub async fn healthz() -> Json<Value> {
    // Where the host's segmentation runs, resolved once per process.
    let segmentation = match stagecraft_accel::device::current() {
        Ok(d) => json!({ "device": d.device.to_string(), "summary": d.summary }),
        Err(e) => json!({ "device": null, "error": e }),
    };
    Json(json!({ "status": "ok", "segmentation": segmentation }))
}

pub async fn readyz(State(app): State<App>) -> Response {
    let running = app.orchestrator.scheduler().is_running();
    let stages = app.runtime.stages().len();
    let body = json!({ "ready": running, "stages": stages });
    let status = if running { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(app): State<App>) -> Response {
    let status = app.orchestrator.scheduler().status();
    let mut slots = Vec::new();
    let mut queued = Vec::new();
    for s in &status.stages {
        slots.push((format!("stage=\"{}\"", s.name), s.slots_in_use as f64));
        queued.push((format!("stage=\"{}\"", s.name), s.queued as f64));
    }
    let jobs: Vec<(String, f64)> = app
        .jobs
        .store
        .counts()
        .unwrap_or_default()
        .into_iter()
        .map(|(state, n)| (format!("state=\"{state}\""), n as f64))
        .collect();
    let one = |v: f64| vec![(String::new(), v)];
    let capacity = app.runtime.capacity();
    let parked: Vec<(String, f64)> =
        capacity.parked.iter().map(|(k, n)| (format!("wait=\"{}\"", k.as_str()), *n as f64)).collect();
    let (cache_hits, cache_misses) = app.invoke_cache.counts();
    let (cache_answers, cache_bytes) = app.invoke_cache.occupancy();
    let mut gauges = vec![
        ("stagecraft_queue_size", "Tasks waiting for a slot.", one(status.queue_size as f64)),
        ("stagecraft_queue_max", "Maximum queue size.", one(status.max_queue_size as f64)),
        ("stagecraft_running_tasks", "Tasks in flight (holding an in-flight slot).", one(status.running_tasks as f64)),
        ("stagecraft_max_workers", "In-flight limit (instances existing at once).", one(status.max_workers as f64)),
        ("stagecraft_cpu_slots", "Instances that may compute at once.", one(capacity.cpu_slots as f64)),
        ("stagecraft_cpu_slots_busy", "CPU slots held by computing instances.", one(capacity.cpu_busy as f64)),
        ("stagecraft_cpu_queued", "Invocations waiting for a CPU slot.", one(capacity.cpu_queued as f64)),
        ("stagecraft_instances_parked", "Instances waiting in a host call, holding no CPU slot.", parked),
        ("stagecraft_tasks_completed_total", "Tasks completed.", one(status.completed as f64)),
        ("stagecraft_tasks_failed_total", "Tasks failed.", one(status.failed as f64)),
        ("stagecraft_pool_slots_in_use", "Slots in use per stage pool.", slots),
        ("stagecraft_pool_queued", "Tasks queued per stage pool.", queued),
        ("stagecraft_instantiations_total", "Component instances created.", one(app.runtime.instantiations() as f64)),
        ("stagecraft_jobs", "Jobs in the store by state.", jobs),
        ("stagecraft_invoke_cache_hits_total", "Synchronous invocations answered from memory.", one(cache_hits as f64)),
        (
            "stagecraft_invoke_cache_misses_total",
            "Synchronous invocations looked up and run.",
            one(cache_misses as f64),
        ),
        ("stagecraft_invoke_cache_answers", "Answers kept in the invoke cache.", one(cache_answers as f64)),
        ("stagecraft_invoke_cache_bytes", "Bytes kept in the invoke cache.", one(cache_bytes as f64)),
    ];
    // With --redis: the cluster's queue, as every API process sees it.
    if let Some(stats) = match &app.cluster {
        Some(c) => c.queue.stats().await.map_err(|e| tracing::warn!("queue stats for /metrics: {e}")).ok(),
        None => None,
    } {
        let bands: Vec<(String, f64)> =
            ["high", "normal", "low"].iter().map(|b| (format!("band=\"{b}\""), stats.queued[b] as f64)).collect();
        let alive = stats.workers.iter().filter(|w| w.alive).count();
        let workers: Vec<(String, f64)> = stats
            .workers
            .iter()
            .map(|w| (format!("worker=\"{}\"", w.name.replace(['"', '\\', '\n'], "_")), f64::from(u8::from(w.alive))))
            .collect();
        gauges.extend([
            ("stagecraft_cluster_queued", "Jobs accepted and not yet delivered, per band.", bands),
            ("stagecraft_cluster_leased", "Deliveries held by workers.", one(stats.leased as f64)),
            ("stagecraft_cluster_commits_total", "Final states written.", one(stats.commits as f64)),
            (
                "stagecraft_cluster_refused_commits_total",
                "Commits refused for a stale epoch.",
                one(stats.refused_commits as f64),
            ),
            ("stagecraft_cluster_reclaims_total", "Leases that ran out and were requeued.", one(stats.reclaims as f64)),
            (
                "stagecraft_cluster_dead_letters_total",
                "Jobs moved to the dead letters.",
                one(stats.dead_letters as f64),
            ),
            (
                "stagecraft_cluster_handed_back_total",
                "Jobs handed back by draining workers.",
                one(stats.handed_back as f64),
            ),
            ("stagecraft_cluster_workers_alive", "Workers whose heartbeat is recent.", one(alive as f64)),
            ("stagecraft_cluster_worker_up", "Per worker: 1 while its heartbeat is recent.", workers),
        ]);
        if let Some(c) = &app.cluster {
            let (waiting, _) = c.watchers();
            gauges.push((
                "stagecraft_cluster_watchers",
                "Callers waiting on jobs on this API process (SSE, invocations sent to workers).",
                one(waiting as f64),
            ));
        }
    }
    let text = app.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn openapi() -> Json<Value> {
    Json(openapi::document())
}
