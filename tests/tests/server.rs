//! End-to-end tests of `stagecraft serve` over real HTTP on loopback: each
//! test starts its own server in-process on 127.0.0.1:0 over its own home
//! folder and talks to it with a plain hyper client.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use stagecraft_runtime::Runtime;
use stagecraft_scheduler::SchedulerConfig;
use stagecraft_server::store::{JobState, JobStore};
use stagecraft_server::ServerConfig;
use stagecraft_tests::http::{Harness, Reply};
use stagecraft_tests::{plugins_dir, png, test_config, test_picture, test_plugins_dir};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "s3cret-admin-token";

/// A runtime with just the stages these tests use, and a short deadline
/// so that `spin` ends quickly.
fn runtime() -> Arc<Runtime> {
    runtime_with_deadline(Duration::from_secs(5))
}

/// The same, with another default deadline (for tests that cancel a spin
/// and must not race its deadline).
fn runtime_with_deadline(deadline: Duration) -> Arc<Runtime> {
    let mut config = test_config();
    config.limits.timeout = deadline;
    let rt = Runtime::new(config).unwrap();
    for name in ["noop", "upscale"] {
        rt.install_file(plugins_dir().join(format!("{name}.wasm"))).unwrap();
    }
    rt.install_file(test_plugins_dir().join("spin.wasm")).unwrap();
    Arc::new(rt)
}

fn config(home: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), home);
    config.admin_token = Some(TOKEN.to_owned());
    config
}

/// A server over a fresh home, with the stages [`runtime`] loads.
async fn start() -> Harness {
    let home = tempfile::tempdir().unwrap();
    let mut h = Harness::with_config(config(home.path()), runtime()).await;
    h.home = Some(home);
    h
}

/// The error shape every route uses.
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Server-sent events as (event name, data JSON).
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n").filter_map(common::sse_event).collect()
}

#[tokio::test]
async fn invoke_noop_and_upscale_return_artifact_links_and_the_version() {
    let h = start().await;
    let r = h.invoke("noop", "?name=hello.txt", "text/plain", b"hello".to_vec()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["stage"], "noop");
    assert_eq!(r.header("x-stagecraft-version"), body["version"].as_str());
    assert_eq!(r.header("x-stagecraft-digest"), body["digest"].as_str());
    let artifact = &body["artifacts"][0];
    assert_eq!(artifact["name"], "hello.txt");
    assert_eq!(artifact["media_type"], "text/plain");
    let data = h.get(artifact["url"].as_str().unwrap()).await;
    assert_eq!(data.status, StatusCode::OK);
    assert_eq!(&data.body[..], b"hello");
    // Served with the media type and name it was produced with.
    assert_eq!(data.header("content-type"), Some("text/plain"));
    assert_eq!(data.header("content-disposition"), Some("attachment; filename=\"hello.txt\""));
    assert_eq!(data.header("x-content-type-options"), Some("nosniff"));

    let picture = png(&test_picture(32, 24));
    let r = h.invoke("upscale", "?params=%7B%22factor%22%3A2%7D", "image/png", picture).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["stage"], "upscale");
    let url = body["artifacts"][0]["url"].as_str().unwrap().to_owned();
    let out = h.get(&url).await;
    assert_eq!(out.header("content-type"), Some("image/png"));
    let img = image::load_from_memory(&out.body).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));

    // Multipart: a file part and the params as a field.
    let boundary = "XBOUNDARYX";
    let mut form = Vec::new();
    form.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{{}}\r\n").as_bytes(),
    );
    form.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\n").as_bytes());
    form.extend_from_slice(b"x,y\n1,2\n\r\n");
    form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = h.invoke("noop", "", &format!("multipart/form-data; boundary={boundary}"), form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["artifacts"][0]["name"], "a.csv");
    assert_eq!(r.json()["artifacts"][0]["media_type"], "text/csv");
}

/// The parts of a multipart body: (headers, lowercased names; data).
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<(HashMap<String, String>, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).expect("a boundary").trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    // Prepend CRLF so the first delimiter looks like the others.
    let text = [b"\r\n".as_slice(), body].concat();
    let mut parts = Vec::new();
    let mut rest = &text[..];
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delimiter.as_bytes()).expect("a first boundary");
    rest = &rest[start + delimiter.len()..];
    while !rest.starts_with(b"--") {
        let rest_part = &rest[2..]; // CRLF after the boundary
        let end = find(rest_part, delimiter.as_bytes()).expect("a closing boundary");
        let part = &rest_part[..end];
        let split = find(part, b"\r\n\r\n").expect("headers end");
        let headers = String::from_utf8_lossy(&part[..split])
            .lines()
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
            .collect();
        parts.push((headers, part[split + 4..].to_vec()));
        rest = &rest_part[end + delimiter.len()..];
    }
    parts
}

/// `stagecraft_instantiations_total` from `/metrics`.
async fn instantiations(h: &Harness) -> u64 {
    let m = h.get("/metrics").await.text();
    let line = m.lines().find(|l| l.starts_with("stagecraft_instantiations_total ")).expect("instantiations metric");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_repeated_invocation_is_answered_from_memory_unless_the_caller_says_no() {
    let h = start().await;
    let call = |headers: &'static [(&'static str, &'static str)], body: &'static [u8]| {
        let h = &h;
        async move {
            let mut all = vec![("content-type", "text/plain")];
            all.extend_from_slice(headers);
            h.call(Method::POST, "/v1/stages/noop/invoke?name=n.txt", &all, body).await
        }
    };
    let first = call(&[], b"same input").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.header("x-stagecraft-cache"), Some("miss"));
    let ran = instantiations(&h).await;

    // Same version, same input, same params: the same answer, nothing runs.
    let again = call(&[], b"same input").await;
    assert_eq!(again.header("x-stagecraft-cache"), Some("hit"));
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("x-stagecraft-digest"), first.header("x-stagecraft-digest"));
    assert_eq!(instantiations(&h).await, ran, "a hit instantiates nothing");
    // Its artifact link works like a fresh one's.
    let link = again.json()["artifacts"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(h.get(&link).await.body.as_ref(), b"same input");
    // Multipart answers come from the same kept answer.
    let parts = call(&[("accept", "multipart/mixed")], b"same input").await;
    assert_eq!(parts.header("x-stagecraft-cache"), Some("hit"));
    assert!(parts.text().contains("same input"), "{}", parts.text());

    // Other bytes, or other params: a miss.
    assert_eq!(call(&[], b"other input").await.header("x-stagecraft-cache"), Some("miss"));
    let ran = instantiations(&h).await;
    // no-cache runs the stage (and keeps the answer); no-store runs it, keeps nothing.
    assert_eq!(call(&[("cache-control", "no-cache")], b"same input").await.header("x-stagecraft-cache"), Some("miss"));
    assert_eq!(call(&[("cache-control", "no-store")], b"same input").await.header("x-stagecraft-cache"), Some("off"));
    assert_eq!(instantiations(&h).await, ran + 2);

    // A refusal is never kept: the stage is asked again and refuses again.
    for _ in 0..2 {
        let r = h.invoke("noop", "?params=%7B%22bogus%22%3A1%7D", "text/plain", b"same input".to_vec()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    }
    assert_eq!(instantiations(&h).await, ran + 4);

    let m = h.get("/metrics").await.text();
    for needle in ["stagecraft_invoke_cache_hits_total 2", "stagecraft_invoke_cache_answers 2"] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
}

#[tokio::test]
async fn invoke_answers_multipart_when_asked() {
    let h = start().await;
    for (accept, media, report_disposition, file_disposition) in [
        ("multipart/mixed", "multipart/mixed", "inline; name=\"report\"", "attachment; filename=\"note.txt\""),
        ("multipart/*", "multipart/mixed", "inline; name=\"report\"", "attachment; filename=\"note.txt\""),
        (
            "application/json;q=0.5, multipart/form-data",
            "multipart/form-data",
            "form-data; name=\"report\"",
            "form-data; name=\"artifact\"; filename=\"note.txt\"",
        ),
    ] {
        let r = h
            .call(
                Method::POST,
                "/v1/stages/noop/invoke?name=note.txt",
                &[("content-type", "text/plain"), ("accept", accept)],
                "a note\r\n--with a dash line",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let content_type = r.header("content-type").unwrap().to_owned();
        assert!(content_type.starts_with(&format!("{media}; boundary=")), "{accept}: {content_type}");
        assert!(r.header("x-stagecraft-digest").is_some());
        let parts = parse_multipart(&content_type, &r.body);
        assert_eq!(parts.len(), 2, "{accept}: a report and one artifact");
        let (headers, data) = &parts[0];
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["content-disposition"], report_disposition);
        let report: Value = serde_json::from_slice(data).unwrap();
        assert_eq!(report["stage"], "noop");
        assert_eq!(report["artifacts"][0]["name"], "note.txt");
        assert_eq!(report["artifacts"][0]["part"], 1);
        let (headers, data) = &parts[1];
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["content-disposition"], file_disposition);
        assert_eq!(&data[..], b"a note\r\n--with a dash line");
    }
    // JSON stays the default, and when preferred.
    for accept in ["application/json", "application/json, multipart/mixed;q=0.9", "*/*"] {
        let r = h
            .call(Method::POST, "/v1/stages/noop/invoke", &[("content-type", "text/plain"), ("accept", accept)], "x")
            .await;
        assert_eq!(r.header("content-type"), Some("application/json"), "{accept}");
        assert!(r.json()["artifacts"][0]["url"].is_string());
    }
    let doc = h.get("/v1/openapi.json").await.json();
    let content = &doc["paths"]["/v1/stages/{name}/invoke"]["post"]["responses"]["200"]["content"];
    for media in ["application/json", "multipart/mixed", "multipart/form-data"] {
        assert!(content[media].is_object(), "{media} missing from {content}");
    }
    assert!(
        doc["paths"]["/v1/artifacts/{digest}"]["get"]["responses"]["200"]["headers"]["Content-Disposition"].is_object()
    );
}

#[tokio::test]
async fn an_upload_naming_another_stage_installs_nothing() {
    let h = start().await;
    let auth = format!("Bearer {TOKEN}");
    let before = h.get("/v1/stages").await.json();
    // burn.wasm describes itself as `burn`, a stage this server lacks.
    let burn = std::fs::read(test_plugins_dir().join("burn.wasm")).unwrap();
    let r = h.call(Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], burn).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "stage_name_mismatch");
    assert_eq!(h.get("/v1/stages").await.json(), before, "nothing was installed");
    assert_error(&h.invoke("burn", "", "text/plain", b"x".to_vec()).await, StatusCode::NOT_FOUND, "unknown_stage");
    // The stage the URL named is untouched too: no new version to roll back from.
    let r = h.call(Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], Bytes::new()).await;
    assert_error(&r, StatusCode::CONFLICT, "no_previous_version");
    // And nothing was kept for the next start.
    let kept = std::fs::read_dir(h.server.app.config.home.join("components")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "no upload kept on disk");
}

#[tokio::test]
async fn caller_mistakes_are_4xx_with_one_error_shape() {
    let h = start().await;
    assert_error(&h.invoke("nope", "", "text/plain", b"x".to_vec()).await, StatusCode::NOT_FOUND, "unknown_stage");
    assert_error(
        &h.invoke("noop", "?params=not-json", "text/plain", b"x".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "invalid_params",
    );
    assert_error(
        &h.invoke("noop", "?params=%5B1%5D", "text/plain", b"x".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "invalid_params",
    );
    // Valid JSON the stage's schema refuses: the stage says why.
    let r = h.invoke("noop", "?params=%7B%22bogus%22%3A1%7D", "text/plain", b"x".to_vec()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(r.text().contains("bogus"), "{}", r.text());
    assert_error(
        &h.invoke("noop", "?timeout=soon", "text/plain", b"x".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "invalid_timeout",
    );
    assert_error(&h.get("/v1/jobs/nope").await, StatusCode::NOT_FOUND, "unknown_job");
    assert_error(&h.get("/v1/artifacts/zz").await, StatusCode::BAD_REQUEST, "invalid_digest");
    assert_error(&h.get(&format!("/v1/artifacts/{}", "0".repeat(64))).await, StatusCode::NOT_FOUND, "unknown_artifact");
    assert_error(&h.get("/v2/nothing").await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bodies_past_the_limit_are_413() {
    let home = tempfile::tempdir().unwrap();
    let mut config = config(home.path());
    config.max_body_bytes = 1024;
    let h = Harness::with_config(config, runtime()).await;
    let r = h.invoke("noop", "", "application/octet-stream", vec![7u8; 4096]).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = h.invoke("noop", "", "application/octet-stream", vec![7u8; 512]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

fn two_step_pipeline() -> Value {
    json!({
        "name": "two",
        "steps": [
            { "name": "first", "type": "noop" },
            { "name": "second", "type": "noop", "input_from": "first" }
        ]
    })
}

#[tokio::test]
async fn a_pipeline_runs_as_a_job_with_events_in_order() {
    let h = start().await;
    let data = base64::engine::general_purpose::STANDARD.encode(b"payload");
    let r = h
        .run_pipeline(
            json!({ "pipeline": two_step_pipeline(), "input": "hi", "files": [{ "name": "p.txt", "data": data }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/v1/jobs/{id}").as_str()));

    // Subscribe while it runs; the stream ends with the job.
    let live = h.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.header("content-type").unwrap().starts_with("text/event-stream"));
    let job = h.wait_job(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["runs"], 1);
    let steps = job["report"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let out = &steps.iter().find(|s| s["name"] == "second").unwrap()["artifacts"][0];
    assert_eq!(out["name"], "p.txt");
    assert_eq!(&h.get(out["url"].as_str().unwrap()).await.body[..], b"payload");

    let events = parse_sse(&live.text());
    let names: Vec<String> = events
        .iter()
        .map(|(n, d)| match d["step"].as_str() {
            Some(step) => format!("{n}:{step}"),
            None => n.clone(),
        })
        .collect();
    let pos = |name: &str| names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no {name} in {names:?}"));
    assert_eq!(names.first().map(String::as_str), Some("job_started"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("job_finished"), "{names:?}");
    assert!(pos("queued:first") < pos("started:first"), "{names:?}");
    assert!(pos("started:first") < pos("finished:first"), "{names:?}");
    assert!(pos("finished:first") < pos("started:second"), "{names:?}");
    assert!(pos("started:second") < pos("finished:second"), "{names:?}");
    assert_eq!(events.last().unwrap().1["state"], "succeeded");

    // A late subscriber gets the same events, replayed.
    let late = h.get(&format!("/v1/jobs/{id}/events")).await;
    let replayed: Vec<String> = parse_sse(&late.text()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(replayed, events.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());

    // Cancelling a finished job is a conflict, not a crash.
    let r = h.call(Method::DELETE, &format!("/v1/jobs/{id}"), &[], Bytes::new()).await;
    assert_error(&r, StatusCode::CONFLICT, "job_finished");
}

#[tokio::test]
async fn invalid_pipelines_are_400_with_diagnostics() {
    let h = start().await;
    let yaml = "name: bad\nsteps:\n  - name: a\n    type: no_such_stage\n";
    let r = h.call(Method::POST, "/v1/pipelines/run", &[("content-type", "application/yaml")], yaml).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_pipeline");
    let body = r.json();
    let diags = body["error"]["details"]["diagnostics"].as_array().unwrap();
    assert!(!diags.is_empty());
    assert!(body["error"]["details"]["text"].as_str().unwrap().contains("no_such_stage"), "{body}");
    let r = h.call(Method::POST, "/v1/pipelines/run", &[("content-type", "application/json")], "{not json").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    // A YAML body works too.
    let yaml = "name: ok\nsteps:\n  - name: a\n    type: noop\n";
    let r = h.call(Method::POST, "/v1/pipelines/run", &[("content-type", "application/yaml")], yaml).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let job = h.wait_job(r.json()["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[tokio::test]
async fn a_running_job_can_be_cancelled() {
    let home = tempfile::tempdir().unwrap();
    let h = Harness::with_config(config(home.path()), runtime_with_deadline(Duration::from_secs(120))).await;
    let r = h.run_pipeline(json!({ "name": "forever", "steps": [{ "name": "loop", "type": "spin" }] })).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // Wait until the step is running.
    for _ in 0..100 {
        if h.get(&format!("/v1/jobs/{id}")).await.json()["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = h.call(Method::DELETE, &format!("/v1/jobs/{id}"), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let job = h.wait_job(&id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["cancel_requested"].as_bool().unwrap());
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let home = tempfile::tempdir().unwrap();
    let mut config = config(home.path());
    config.scheduler = SchedulerConfig { max_workers: 1, max_queue: 1, ..SchedulerConfig::default() };
    config.retry_after_secs = 2;
    let h = Arc::new(Harness::with_config(config, runtime()).await);
    // One spin runs, one waits: the queue is full.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let spinner = h.clone();
        busy.push(tokio::spawn(
            async move { spinner.invoke("spin", "?timeout=60", "text/plain", Vec::new()).await.status },
        ));
        for _ in 0..200 {
            let q = h.get("/v1/status/queue").await.json();
            if q["running_tasks"].as_u64().unwrap() + q["queue_size"].as_u64().unwrap() == busy.len() as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let q = h.get("/v1/status/queue").await.json();
    assert_eq!(
        (q["running_tasks"].as_u64(), q["queue_size"].as_u64(), q["max_queue_size"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{q}"
    );
    let r = h.invoke("noop", "", "text/plain", b"x".to_vec()).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "queue_full");
    assert_eq!(r.header("retry-after"), Some("2"));
    let metrics = h.get("/metrics").await.text();
    assert!(metrics.contains("stagecraft_http_rejected_total 1"), "{metrics}");
    // The spins would run to their (long) deadline: stop waiting for them.
    for task in busy {
        task.abort();
    }
}

#[tokio::test]
async fn a_stage_past_its_deadline_is_504_not_500() {
    let h = start().await;
    let r = h.invoke("spin", "?timeout=0.5", "text/plain", Vec::new()).await;
    assert_error(&r, StatusCode::GATEWAY_TIMEOUT, "timeout");
    let r = h.invoke("noop", "", "text/plain", b"x".to_vec()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// noop.wasm with an extra custom section: the same stage, another digest.
fn noop_v2() -> Vec<u8> {
    stagecraft_tests::noop_with_section(b"version two")
}

#[tokio::test]
async fn hot_swap_under_load_drops_nothing_and_rollback_restores() {
    let h = Arc::new(start().await);
    let auth = format!("Bearer {TOKEN}");
    let old = h.invoke("noop", "", "text/plain", b"x".to_vec()).await.json()["digest"].as_str().unwrap().to_owned();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let not_old = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for task in 0..4 {
        let (h, stop, not_old, old) = (h.clone(), stop.clone(), not_old.clone(), old.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Distinct bodies: every request runs an instance (none is
                // answered from the invoke cache), so swaps meet calls in flight.
                let body = format!("load {task} {}", seen.len()).into_bytes();
                let r = h.invoke("noop", "", "text/plain", body).await;
                assert!(r.status.is_success(), "{}: {}", r.status, r.text());
                let digest = r.json()["digest"].as_str().unwrap().to_owned();
                if digest != old {
                    not_old.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seen.push(digest);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = h.call(Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], noop_v2()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let new = r.json()["digest"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // A request sent after the upload answered runs the new version.
    assert_eq!(h.invoke("noop", "", "text/plain", b"x".to_vec()).await.json()["digest"], new.as_str());
    // Let the load run on the new version for a while.
    for _ in 0..3000 {
        if not_old.load(std::sync::atomic::Ordering::Relaxed) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for task in load {
        all.extend(task.await.unwrap());
    }
    assert!(all.iter().all(|d| *d == old || *d == new), "unexpected versions");
    assert!(all.contains(&new), "the load never saw the new version");

    // A bad upload is refused with the reason; the new version keeps serving.
    let r = h.call(Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], b"\0asm\x0d\0\x01\0".to_vec()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_component");
    assert!(r.text().contains("stagecraft:stage"), "{}", r.text());
    assert_eq!(h.invoke("noop", "", "text/plain", b"x".to_vec()).await.json()["digest"], new.as_str());
    let listed = h.get("/v1/stages").await.json();
    let noop = listed["stages"].as_array().unwrap().iter().find(|s| s["name"] == "noop").unwrap().clone();
    assert_eq!(noop["digest"], new.as_str());

    // Rollback: one call, back to the old version.
    let r = h.call(Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["digest"], old.as_str());
    assert_eq!(h.invoke("noop", "", "text/plain", b"x".to_vec()).await.json()["digest"], old.as_str());
    let r = h.call(Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], Bytes::new()).await;
    assert_error(&r, StatusCode::CONFLICT, "no_previous_version");
    let r = h.call(Method::POST, "/v1/stages/nope/rollback", &[("authorization", &auth)], Bytes::new()).await;
    assert_error(&r, StatusCode::NOT_FOUND, "unknown_stage");
}

/// A PUT of `len` bytes written in full before the answer is read (as a
/// simple client does); the answer's head, or the write error.
async fn send_whole_body_then_read(addr: std::net::SocketAddr, path: &str, len: usize) -> String {
    use std::io::{Read, Write};
    let head =
        format!("PUT {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer wrong\r\ncontent-length: {len}\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|()| (0..len / chunk.len()).try_for_each(|_| stream.write_all(&chunk)));
        if let Err(e) = written {
            return format!("writing the body failed: {e}");
        }
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn admin_routes_need_the_token_and_are_off_without_one() {
    let h = start().await;
    let r = h.call(Method::PUT, "/v1/stages/noop", &[], noop_v2()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = h.call(Method::POST, "/v1/stages/noop/rollback", &[("authorization", "Bearer wrong")], Bytes::new()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    // A wrong token on a large upload, from a client that writes its whole
    // body before it reads: it gets the 401, not a broken pipe (the server
    // reads the rest of the body before it answers and closes).
    for path in ["/v1/stages/noop", "/v1/nothing"] {
        let answer = send_whole_body_then_read(h.server.addr, path, 48 << 20).await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{path}: {answer}");
    }

    let home = tempfile::tempdir().unwrap();
    let mut config = config(home.path());
    config.admin_token = None;
    let open = Harness::with_config(config, runtime()).await;
    let r =
        open.call(Method::PUT, "/v1/stages/noop", &[("authorization", &format!("Bearer {TOKEN}"))], noop_v2()).await;
    assert_error(&r, StatusCode::NOT_FOUND, "admin_disabled");
}

#[tokio::test]
async fn status_health_metrics_and_openapi() {
    let h = start().await;
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(h.invoke("noop", "", "text/plain", b"x".to_vec()).await.status, StatusCode::OK);
    let q = h.get("/v1/status/queue").await.json();
    for key in
        ["queue_size", "max_queue_size", "running_tasks", "max_workers", "completed", "failed", "is_running", "stages"]
    {
        assert!(q.get(key).is_some(), "{key} missing from {q}");
    }
    let stages = h.get("/v1/stages").await.json();
    let names: Vec<&str> = stages["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["noop", "spin", "upscale"]);
    assert!(stages["stages"][2]["params_schema"].is_object());

    let m = h.get("/metrics").await;
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let m = m.text();
    for needle in [
        "stagecraft_http_requests_total{method=\"POST\",route=\"/v1/stages/{name}/invoke\",status=\"200\"} 1",
        "stagecraft_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/stages/{name}/invoke\"} 1",
        "stagecraft_stage_duration_seconds_count{stage=\"noop\",outcome=\"ok\"} 1",
        "stagecraft_queue_size 0",
        "stagecraft_instantiations_total",
        "stagecraft_pool_slots_in_use{stage=\"noop\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }

    let doc = h.get("/v1/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in [
        ("post", "/v1/stages/{name}/invoke"),
        ("get", "/v1/stages"),
        ("put", "/v1/stages/{name}"),
        ("post", "/v1/stages/{name}/rollback"),
        ("get", "/v1/artifacts/{digest}"),
        ("post", "/v1/pipelines/run"),
        ("get", "/v1/jobs/{id}"),
        ("delete", "/v1/jobs/{id}"),
        ("get", "/v1/jobs/{id}/events"),
        ("get", "/v1/status/queue"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/v1/openapi.json"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    // Every documented route answers something other than the fallback.
    for (method, path, _, _) in stagecraft_server::openapi::ROUTES {
        // The status stream never ends while the server runs (the console
        // tests watch it live in a browser); reading it whole would hang.
        if *path == "/v1/status/stream" {
            continue;
        }
        let path =
            path.replace("{name}", "noop").replace("{id}", "x").replace("{digest}", "x").replace("{file}", "app.js");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = h.call(method.clone(), &path, &[], Bytes::new()).await;
        assert!(!r.text().contains("\"not_found\""), "{method} {path} is not routed: {}", r.text());
    }
}

#[tokio::test]
async fn jobs_left_unfinished_by_a_crash_complete_once_after_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let pipeline =
        "name: resumed\nsteps:\n  - name: a\n    type: noop\n  - name: b\n    type: noop\n    input_from: a\n";
    {
        // What a killed server leaves behind: one job accepted but not
        // started, one in the middle of running, one finished.
        let store = JobStore::open(&home.path().join("jobs.sqlite3")).unwrap();
        store.insert("queued-job", pipeline, "p.yaml", Some("hi"), &[]).unwrap();
        store.insert("running-job", pipeline, "p.yaml", None, &[]).unwrap();
        assert!(store.claim("running-job").unwrap());
        store.insert("finished-job", pipeline, "p.yaml", None, &[]).unwrap();
        assert!(store.claim("finished-job").unwrap());
        assert!(store.finish("finished-job", JobState::Succeeded, Some(&json!({"kept": true})), None, &[]).unwrap());
    }
    let h = Harness::with_config(config(home.path()), runtime()).await;
    let queued = h.wait_job("queued-job").await;
    assert_eq!(queued["state"], "succeeded", "{queued}");
    assert_eq!(queued["runs"], 1);
    let running = h.wait_job("running-job").await;
    assert_eq!(running["state"], "succeeded", "{running}");
    assert_eq!(running["runs"], 2, "interrupted once, then resumed");
    let finished = h.get("/v1/jobs/finished-job").await.json();
    assert_eq!(finished["runs"], 1, "a finished job is never run again");
    assert_eq!(finished["report"], json!({"kept": true}));
    h.server.shutdown().await.unwrap();

    // Another restart: nothing runs again.
    let h = Harness::with_config(config(home.path()), runtime()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, runs) in [("queued-job", 1), ("running-job", 2), ("finished-job", 1)] {
        let job = h.get(&format!("/v1/jobs/{id}")).await.json();
        assert_eq!(job["runs"], runs, "{id}: {job}");
    }
    // The resumed job's events were kept for late subscribers.
    let events = parse_sse(&h.get("/v1/jobs/queued-job/events").await.text());
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("job_finished"));
}

#[tokio::test]
async fn a_changed_file_in_the_plugins_folder_is_picked_up() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(plugins_dir().join("noop.wasm"), plugins.path().join("noop.wasm")).unwrap();
    let rt = Runtime::new(test_config()).unwrap();
    assert!(rt.load_dir(plugins.path()).failed.is_empty());
    let home = tempfile::tempdir().unwrap();
    let mut config = config(home.path());
    config.watch_dirs = vec![plugins.path().to_owned()];
    config.watch_interval = Duration::from_millis(50);
    let h = Harness::with_config(config, Arc::new(rt)).await;
    let digest = || async {
        h.invoke("noop", "", "text/plain", b"x".to_vec()).await.json()["digest"].as_str().unwrap().to_owned()
    };
    let old = digest().await;

    // A broken file is refused; the stage keeps serving.
    std::fs::write(plugins.path().join("junk.wasm"), b"not a component").unwrap();
    std::fs::write(plugins.path().join("noop.wasm.tmp"), noop_v2()).unwrap();
    std::fs::rename(plugins.path().join("noop.wasm.tmp"), plugins.path().join("noop.wasm")).unwrap();
    let mut new = old.clone();
    for _ in 0..600 {
        new = digest().await;
        if new != old {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(new, old, "the changed component was not picked up");
    assert_eq!(h.get("/v1/stages").await.json()["stages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_second_identical_run_is_served_from_the_result_cache() {
    let h = start().await;
    for _ in 0..2 {
        let r = h.run_pipeline(json!({ "pipeline": two_step_pipeline(), "input": "same" })).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        let job = h.wait_job(r.json()["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let m = h.get("/metrics").await.text();
    // Both noop steps see the same (empty) input and params: only the very
    // first one runs; the second step and the whole second run are hits.
    assert!(m.contains("stagecraft_result_cache_misses_total 1\n"), "{m}");
    assert!(m.contains("stagecraft_result_cache_hits_total 3\n"), "{m}");
}

#[tokio::test]
async fn jobs_past_the_running_limit_wait_queued() {
    let home = tempfile::tempdir().unwrap();
    let mut config = config(home.path());
    config.max_running_jobs = 1;
    let h = Harness::with_config(config, runtime_with_deadline(Duration::from_secs(120))).await;
    let r = h.run_pipeline(json!({ "name": "forever", "steps": [{ "name": "loop", "type": "spin" }] })).await;
    let spinning = r.json()["id"].as_str().unwrap().to_owned();
    for _ in 0..500 {
        if h.get(&format!("/v1/jobs/{spinning}")).await.json()["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = h.run_pipeline(json!({ "name": "quick", "steps": [{ "name": "a", "type": "noop" }] })).await;
    let waiting = r.json()["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = h.get(&format!("/v1/jobs/{waiting}")).await.json();
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["runs"], 0);
    // Its turn comes when the first one ends.
    h.call(Method::DELETE, &format!("/v1/jobs/{spinning}"), &[], Bytes::new()).await;
    assert_eq!(h.wait_job(&spinning).await["state"], "cancelled");
    let job = h.wait_job(&waiting).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["runs"], 1);
}

async fn digest(h: &Harness) -> String {
    h.invoke("noop", "", "text/plain", b"x".to_vec()).await.json()["digest"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn invocation_artifacts_are_served_after_a_restart_small_and_large() {
    let home = tempfile::tempdir().unwrap();
    let h = Harness::with_config(config(home.path()), runtime()).await;
    // One artifact kept in its SQLite row, one in the blob store.
    let small = b"a small artifact".to_vec();
    let large: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut links = Vec::new();
    for body in [&small, &large] {
        let r = h.invoke("noop", "?name=kept.bin", "application/octet-stream", body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let a = &r.json()["artifacts"][0];
        links.push((a["url"].as_str().unwrap().to_owned(), a["sha256"].as_str().unwrap().to_owned()));
    }
    // They are written in the background: wait until both are recorded.
    for _ in 0..500 {
        let store = &h.server.app.jobs.store;
        if links.iter().all(|(_, d)| store.artifact(d).unwrap().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.server.shutdown().await.unwrap();

    let h = Harness::with_config(config(home.path()), runtime()).await;
    for ((url, _), body) in links.iter().zip([&small, &large]) {
        let r = h.get(url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.text());
        assert_eq!(r.body.as_ref(), &body[..], "{url}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.header("content-disposition").unwrap().contains("kept.bin"));
    }
}

#[tokio::test]
async fn an_uploaded_version_survives_a_restart_and_so_does_a_rollback() {
    let home = tempfile::tempdir().unwrap();
    let auth = format!("Bearer {TOKEN}");
    let h = Harness::with_config(config(home.path()), runtime()).await;
    let old = digest(&h).await;
    let r = h.call(Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], noop_v2()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let new = r.json()["digest"].as_str().unwrap().to_owned();
    h.server.shutdown().await.unwrap();

    let h = Harness::with_config(config(home.path()), runtime()).await;
    assert_eq!(digest(&h).await, new, "the upload is still serving after a restart");
    let r = h.call(Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(digest(&h).await, old);
    h.server.shutdown().await.unwrap();

    let h = Harness::with_config(config(home.path()), runtime()).await;
    assert_eq!(digest(&h).await, old, "the rollback is still in force after a restart");
}

#[tokio::test]
async fn history_past_the_retention_limits_is_forgotten_and_the_newest_is_kept() {
    use stagecraft_server::retention::{sweep, Retention};
    let home = tempfile::tempdir().unwrap();
    let mut config = config(home.path());
    // Two jobs; 500 kB of blobs and cached results; sweeps only when called.
    config.retention = Retention {
        keep_jobs: 2,
        keep_artifacts: 1000,
        store_bytes: 500_000,
        interval: Duration::from_secs(3600),
        min_age: Duration::ZERO,
    };
    let h = Harness::with_config(config, runtime()).await;
    let mut jobs = Vec::new();
    for i in 0..4u32 {
        // A 200 kB input of its own: a blob, then the steps' (identical)
        // output, and the result cache's copy.
        let data: Vec<u8> = (0..200_000u32).map(|j| ((j * 7 + i) % 251) as u8).collect();
        let file = json!({ "name": "p.bin", "data": base64::engine::general_purpose::STANDARD.encode(&data) });
        let r = h.run_pipeline(json!({ "pipeline": two_step_pipeline(), "files": [file] })).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let job = h.wait_job(&id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        jobs.push((id, job, data));
    }
    let app = h.server.app.clone();
    let report = tokio::task::spawn_blocking(move || sweep(&app)).await.unwrap().unwrap();
    assert_eq!(report.jobs_removed, 2, "{report:?}");
    assert!(report.files_removed > 0 && report.bytes_kept <= 500_000, "{report:?}");
    for (i, (id, _, _)) in jobs.iter().enumerate() {
        let expected = if i < 2 { StatusCode::NOT_FOUND } else { StatusCode::OK };
        assert_eq!(h.get(&format!("/v1/jobs/{id}")).await.status, expected, "job {i}");
    }
    // The newest job's output is still served, whole.
    let (_, newest, data) = jobs.last().unwrap();
    let step = newest["report"]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "second").unwrap();
    let r = h.get(step["artifacts"][0]["url"].as_str().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(&r.body[..], &data[..]);
    // A second sweep finds nothing left to do.
    let app = h.server.app.clone();
    let again = tokio::task::spawn_blocking(move || sweep(&app)).await.unwrap().unwrap();
    assert_eq!((again.jobs_removed, again.files_removed), (0, 0), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_and_rollbacks_never_fail_and_a_restart_serves_the_last() {
    let home = tempfile::tempdir().unwrap();
    let auth = format!("Bearer {TOKEN}");
    let h = Arc::new(Harness::with_config(config(home.path()), runtime()).await);
    // Two builds that differ by a custom section: each upload is a real swap.
    let builds = [noop_v2(), {
        let mut b = noop_v2();
        *b.last_mut().unwrap() = b'3';
        b
    }];
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let (h, auth, body) = (h.clone(), auth.clone(), builds[i % 2].clone());
            tokio::spawn(async move {
                if i % 3 == 2 {
                    h.call(Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], Bytes::new()).await
                } else {
                    h.call(Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], body).await
                }
            })
        })
        .collect();
    for call in calls {
        let r = call.await.unwrap();
        // 409 is a rollback with no earlier version left: a fair answer.
        assert!(matches!(r.status, StatusCode::OK | StatusCode::CONFLICT), "{}: {}", r.status, r.text());
    }
    let serving = digest(&h).await;
    let h = Arc::into_inner(h).expect("no call holds the harness");
    h.server.shutdown().await.unwrap();
    // What is on disk is what was serving.
    let h = Harness::with_config(config(home.path()), runtime()).await;
    assert_eq!(digest(&h).await, serving);
}
