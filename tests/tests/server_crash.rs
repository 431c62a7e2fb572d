//! Crash durability of `stagecraft serve`, end to end: the real binary
//! (built with cargo, as a user runs it) on a loopback port with its own
//! home, `kill -9`ed while pipeline jobs are queued and running, then
//! started again on the same home.
//!
//! What "nothing ran twice" means here, precisely:
//! * every job accepted with a `202` ends `succeeded`, and reaches that
//!   final state once: its stored events hold one `job_finished`, and a
//!   further restart runs nothing (`runs` does not move);
//! * a job that finished before the crash is not run again (`runs` 1);
//! * a job still queued at the crash runs once after the restart (`runs`
//!   1, every step executed, none from the cache);
//! * a job running at the crash runs again (`runs` 2); each step that had
//!   finished before the crash comes from the result cache (`cache_hit`,
//!   0 attempts), so it executed exactly once; a step not started before
//!   the crash executes once, after it; only a step that was in flight at
//!   the kill may execute twice.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use stagecraft_tests::test_plugins_dir;
use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A `stagecraft serve` process and where it listens.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    /// Starts the binary on 127.0.0.1:0 and waits for the line that names
    /// the port; its stderr then goes on to `log`.
    fn start(home: &Path, plugins: &Path, log: &Path) -> Self {
        let (child, base) = stagecraft_tests::spawn_serve(home, plugins, &["--max-jobs", "2"], Some(log));
        Self { child, base }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(client: &HttpClient, method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(url);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let res = client.request(req.body(Full::new(body)).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Events of a job as (event name, data), read from the SSE stream while it
/// lasts; the stream breaks when the server is killed.
type Seen = Arc<Mutex<HashMap<String, Vec<(String, Value)>>>>;

async fn follow(client: HttpClient, url: String, id: String, seen: Seen) {
    let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
    let Ok(res) = client.request(req).await else { return };
    let mut body = res.into_body();
    let mut text = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some((n, d)) = common::sse_event(&block) {
                seen.lock().unwrap().entry(id.clone()).or_default().push((n, d));
            }
        }
    }
}

const STEPS: [&str; 3] = ["a", "b", "c"];

/// Three burn steps in a chain; the tags make every job's steps distinct,
/// so no job gets another's results from the cache.
fn pipeline(job: usize, iterations: u64) -> Value {
    json!({
        "name": format!("crash-{job}"),
        "steps": [
            { "name": "a", "type": "burn", "params": { "tag": format!("j{job}a"), "iterations": iterations } },
            { "name": "b", "type": "burn", "input_from": "a", "params": { "tag": format!("j{job}b"), "iterations": iterations } },
            { "name": "c", "type": "burn", "input_from": "b", "params": { "tag": format!("j{job}c"), "iterations": iterations } }
        ]
    })
}

fn step_events<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a str> {
    events.iter().filter(|(n, _)| n == kind).filter_map(|(_, d)| d["step"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_kill_9_and_complete_once() {
    let home = tempfile::tempdir().unwrap();
    // Only the burn stage: its own plugins folder.
    let plugins = home.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(test_plugins_dir().join("burn.wasm"), plugins.join("burn.wasm")).unwrap();
    let log = home.path().join("serve.log");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let server = Serve::start(home.path(), &plugins, &log);
    const JOBS: usize = 6;
    let mut ids = Vec::new();
    for job in 0..JOBS {
        let (status, body) = call(
            &client,
            Method::POST,
            &format!("{}/v1/pipelines/run", server.base),
            Some(json!({ "pipeline": pipeline(job, 300_000_000) })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let seen: Seen = Arc::default();
    for id in &ids {
        tokio::spawn(follow(client.clone(), format!("{}/v1/jobs/{id}/events", server.base), id.clone(), seen.clone()));
    }

    // Kill once a job is part-way (a step finished, the job not) while
    // another has not started: both kinds of unfinished work at once.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        {
            let seen = seen.lock().unwrap();
            let events = |id: &String| seen.get(id).cloned().unwrap_or_default();
            let mid_job = ids.iter().any(|id| {
                let e = events(id);
                !step_events(&e, "finished").is_empty() && !e.iter().any(|(n, _)| n == "job_finished")
            });
            let queued = ids.iter().any(|id| !events(id).iter().any(|(n, _)| n == "job_started"));
            if mid_job && queued {
                break;
            }
            assert!(queued, "every job started before one was part-way; make the steps longer");
        }
        assert!(
            Instant::now() < deadline,
            "no job got part-way in time; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    // What the stream showed before the kill (it broke with the process).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before: HashMap<String, Vec<(String, Value)>> = seen.lock().unwrap().clone();

    let server = Serve::start(home.path(), &plugins, &log);
    let mut finals = HashMap::new();
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(300);
        let job = loop {
            let (status, job) = call(&client, Method::GET, &format!("{}/v1/jobs/{id}", server.base), None).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if matches!(job["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                break job;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish after the restart: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        finals.insert(id.clone(), job);
    }

    let (mut finished_before, mut interrupted, mut queued) = (0, 0, 0);
    for (n, id) in ids.iter().enumerate() {
        let job = &finals[id];
        assert_eq!(job["state"], "succeeded", "job {id}: {job}");
        let pre = before.get(id).cloned().unwrap_or_default();
        let started_before = pre.iter().any(|(n, _)| n == "job_started");
        let ended_before = pre.iter().any(|(n, _)| n == "job_finished");
        let done_before = step_events(&pre, "finished");
        let started_steps = step_events(&pre, "started");
        let steps = job["report"]["steps"].as_array().unwrap_or_else(|| panic!("no report steps: {job}"));
        let step =
            |name: &str| steps.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no step {name}: {job}"));
        if ended_before {
            finished_before += 1;
            assert_eq!(job["runs"], 1, "a job finished before the crash is not run again: {job}");
        } else if started_before {
            interrupted += 1;
            assert_eq!(job["runs"], 2, "interrupted once, resumed once: {job}");
            for name in STEPS {
                let s = step(name);
                if done_before.contains(&name) {
                    assert_eq!(
                        s["execution"]["cache_hit"], true,
                        "job {id} step {name} finished before the crash, so it must come from the cache: {s}"
                    );
                    assert_eq!(s["execution"]["attempts"], 0, "{s}");
                } else if !started_steps.contains(&name) {
                    assert_eq!(s["execution"]["cache_hit"], false, "job {id} step {name} had not started: {s}");
                }
                // A step in flight at the kill either runs again or, when it
                // finished just before the kill (its event not sent yet),
                // comes from the cache: either way it is in the report once.
            }
        } else if job["runs"] == 2 {
            // It started in the moment before the kill, its `job_started`
            // not yet on the stream: interrupted once, resumed once, and
            // what it finished then may come from the cache.
            interrupted += 1;
        } else {
            queued += 1;
            assert_eq!(job["runs"], 1, "a job queued at the crash runs once: {job}");
            for name in STEPS {
                assert_eq!(step(name)["execution"]["cache_hit"], false, "job {id} step {name} ran nowhere else");
            }
        }
        // Each step's artifact is there, with its content and media type.
        let out = &step("c")["artifacts"][0];
        let res = client
            .request(
                Request::get(format!("{}{}", server.base, out["url"].as_str().unwrap()))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.headers()["content-type"], "text/plain");
        let text = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], format!("j{n}c: inputs j{n}b.txt\n").as_bytes());
    }
    assert!(interrupted >= 1 && queued >= 1, "the kill found {interrupted} running and {queued} queued job(s)");
    eprintln!("at the kill: {finished_before} finished, {interrupted} running, {queued} queued");

    // A final state is reached once: one job_finished in the kept events,
    // and another kill and restart, with everything final, runs nothing.
    server.kill9();
    let server = Serve::start(home.path(), &plugins, &log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let (_, job) = call(&client, Method::GET, &format!("{}/v1/jobs/{id}", server.base), None).await;
        assert_eq!(job["runs"], finals[id]["runs"], "job {id} ran again after another restart: {job}");
        assert_eq!(job["finished_at"], finals[id]["finished_at"], "job {id} was finished again");
        let seen: Seen = Arc::default();
        follow(client.clone(), format!("{}/v1/jobs/{id}/events", server.base), id.clone(), seen.clone()).await;
        let events = seen.lock().unwrap().remove(id).unwrap_or_default();
        assert_eq!(events.iter().filter(|(n, _)| n == "job_finished").count(), 1, "job {id}: {events:?}");
    }
}
