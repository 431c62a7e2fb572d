//! A hostile or buggy stage cannot crash the host, fill its disk or make it
//! hoard memory: the `flood` test plugin attacks in every way it knows
//! (progress and log storms, disk bombs by bytes and by files, huge
//! outputs, errors and metadata, bad artifact names, a panic), through the
//! runtime, the CLI and a real `stagecraft serve`. Everything is counted,
//! nothing timed.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use stagecraft_runtime::{InvokeError, InvokeOptions, QuotaKind, Quotas, Runtime, StageEvent, StageInput};
use stagecraft_tests::{repo_root, stagecraft_bin, test_config, test_plugins_dir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Small quotas, so that each attack is refused after little work.
fn small_quotas() -> Quotas {
    Quotas {
        scratch_bytes: 8 << 20,
        scratch_files: 100,
        output_bytes: 8 << 20,
        artifacts: 16,
        metadata_bytes: 64 << 10,
        ..Quotas::default()
    }
}

/// A runtime with only `flood` loaded, under [`small_quotas`] (or the
/// defaults), with its own scratch area so its disk use can be checked.
fn flood_runtime(small: bool) -> Arc<Runtime> {
    static SMALL: OnceLock<Arc<Runtime>> = OnceLock::new();
    static DEFAULT: OnceLock<Arc<Runtime>> = OnceLock::new();
    let cell = if small { &SMALL } else { &DEFAULT };
    cell.get_or_init(|| {
        let mut config = test_config();
        config.scratch_dir = scratch_root(small);
        if small {
            config.quotas = small_quotas();
        }
        let runtime = Runtime::new(config).expect("runtime starts");
        runtime.install_file(test_plugins_dir().join("flood.wasm")).expect("flood loads");
        Arc::new(runtime)
    })
    .clone()
}

fn scratch_root(small: bool) -> PathBuf {
    repo_root().join(format!("target/test-home/hostile-scratch-{}", if small { "small" } else { "default" }))
}

/// Bytes and files under `dir` (recursively).
fn disk_use(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else { return total };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (b, f) = disk_use(&entry.path());
            total = (total.0 + b, total.1 + f + 1);
        } else {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

async fn flood(rt: &Runtime, params: Value) -> Result<stagecraft_runtime::StageOutput, InvokeError> {
    rt.invoke("flood", StageInput::new(vec![], params), InvokeOptions::default()).await
}

fn quota_of(e: &InvokeError) -> QuotaKind {
    match e {
        InvokeError::Quota(q) => q.kind,
        other => panic!("expected a quota error, got {other}"),
    }
}

#[tokio::test]
async fn disk_bombs_are_refused_at_the_scratch_quota() {
    let rt = flood_runtime(true);
    // 300 writes of 1 MiB, one write of 64 MiB, a file grown to 1 GiB.
    for params in [
        json!({ "attack": "disk-bytes", "count": 300, "size": 1 << 20 }),
        json!({ "attack": "disk-one-write", "size": 64 << 20 }),
        json!({ "attack": "disk-grow", "size": 1u64 << 30 }),
    ] {
        let err = flood(&rt, params.clone()).await.unwrap_err();
        assert_eq!(quota_of(&err), QuotaKind::ScratchBytes, "{params}");
        assert_eq!(err.to_string(), "quota exceeded: scratch 8 MiB");
        assert_eq!(err.code(), "quota_exceeded");
        assert!(!err.is_retryable() && !err.is_caller_error(), "the stage's fault");
    }
    let err = flood(&rt, json!({ "attack": "disk-files", "count": 200_000 })).await.unwrap_err();
    assert_eq!(err.to_string(), "quota exceeded: scratch files 100");
    // Below the quota, the same attacks are ordinary work.
    let out = flood(&rt, json!({ "attack": "disk-bytes", "count": 4, "size": 1 << 20 })).await.unwrap();
    assert_eq!(out.metadata["written"], 4 << 20);
    flood(&rt, json!({ "attack": "disk-files", "count": 50 })).await.unwrap();
    // Nothing is left behind: every scratch directory written into is gone.
    let (bytes, _) = disk_use(&scratch_root(true));
    assert_eq!(bytes, 0, "scratch files left on disk");
}

#[tokio::test]
async fn huge_outputs_and_too_many_artifacts_are_refused_by_name() {
    let rt = flood_runtime(true);
    // 12 MiB in three artifacts (refused by the runtime's check), and one of
    // 64 MiB (refused by the copy budget, before the host allocates it).
    for (count, size) in [(3, 4 << 20), (1, 64 << 20)] {
        let err = flood(&rt, json!({ "attack": "output", "count": count, "size": size })).await.unwrap_err();
        assert_eq!(err.to_string(), "quota exceeded: output 8 MiB", "{count} x {size}");
    }
    let err = flood(&rt, json!({ "attack": "output", "count": 17 })).await.unwrap_err();
    assert_eq!(err.to_string(), "quota exceeded: artifacts 16");
    let err = flood(&rt, json!({ "attack": "metadata", "size": 100_000 })).await.unwrap_err();
    assert_eq!(err.to_string(), "quota exceeded: metadata 64 KiB");
    let out = flood(&rt, json!({ "attack": "output", "count": 16, "size": 1000 })).await.unwrap();
    assert_eq!(out.artifacts.len(), 16);
}

#[tokio::test]
async fn a_huge_error_message_is_cut_to_one_bounded_line() {
    let rt = flood_runtime(false);
    let err = flood(&rt, json!({ "attack": "error", "size": 100 << 20 })).await.unwrap_err();
    let InvokeError::Failed(message) = &err else { panic!("expected a stage failure, got {err}") };
    let limit = Quotas::default().error_bytes;
    assert!(message.len() < limit + 100, "{} bytes kept", message.len());
    assert!(message.ends_with(&format!("[... cut: {} bytes in all]", 100 << 20)), "{}", &message[limit - 10..]);
}

#[tokio::test]
async fn a_panic_says_what_panicked_in_one_line() {
    let rt = flood_runtime(false);
    let err = flood(&rt, json!({ "attack": "panic" })).await.unwrap_err();
    assert_eq!(err.to_string(), "the stage panicked: the flood broke the dam");
    assert_eq!(err.code(), "panic");
}

#[tokio::test]
async fn progress_and_log_storms_are_coalesced_and_cut() {
    let rt = flood_runtime(false);
    let events: Arc<Mutex<Vec<StageEvent>>> = Arc::default();
    let sink = events.clone();
    let options = InvokeOptions::default().with_events(move |e| sink.lock().unwrap().push(e));
    let params = json!({ "attack": "progress", "count": 1_000_000 });
    rt.invoke("flood", StageInput::new(vec![], params), options.clone()).await.unwrap();
    let progress: Vec<_> = std::mem::take(&mut *events.lock().unwrap());
    assert!(!progress.is_empty() && progress.len() < 1000, "{} of a million reports went on", progress.len());
    assert_eq!(
        progress.last(),
        Some(&StageEvent::Progress { fraction: 0.999999, message: "step 999999".into() }),
        "the latest report always arrives"
    );

    let params = json!({ "attack": "log", "count": 50_000, "size": 4096 });
    rt.invoke("flood", StageInput::new(vec![], params), options).await.unwrap();
    let logs: Vec<_> = std::mem::take(&mut *events.lock().unwrap());
    let quotas = Quotas::default();
    assert!(logs.len() <= quotas.log_lines as usize + 1, "{} lines went on", logs.len());
    let StageEvent::Log { level, message } = logs.last().unwrap() else { panic!("a log line last") };
    assert_eq!(*level, "warn");
    let dropped: usize = message.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(dropped + logs.len() - 1, 50_000, "every line went on or was counted: {message}");
    let bytes: usize = logs
        .iter()
        .map(|e| match e {
            StageEvent::Log { message, .. } => message.len(),
            _ => 0,
        })
        .sum();
    assert!(bytes < (quotas.log_lines as usize + 1) * (quotas.log_line_bytes + 64), "{bytes} bytes of log");
}

#[tokio::test]
async fn artifact_names_are_normalised_unique_and_remembered() {
    let rt = flood_runtime(false);
    let out = flood(&rt, json!({ "attack": "names" })).await.unwrap();
    let names: Vec<&str> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names[1..], ["dup.png", "dup-2.png", "DUP-3.png", "_.._etc_passwd", "artifact", "tab_here_.txt"]);
    assert!(names[0].len() <= stagecraft_runtime::output::MAX_NAME_LEN && names[0].ends_with(".png"));
    let renamed = out.metadata["renamed_artifacts"].as_array().expect("renames are listed");
    assert_eq!(renamed.len(), 6);
    assert_eq!(renamed[1], json!({ "name": "dup-2.png", "original": "dup.png" }));
    assert_eq!(renamed[0]["original"].as_str().unwrap().len(), 5004);
}

// ---- the CLI ---------------------------------------------------------

/// A plugins folder holding only `flood`.
fn flood_plugins(home: &Path) -> PathBuf {
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(test_plugins_dir().join("flood.wasm"), plugins.join("flood.wasm")).unwrap();
    plugins
}

#[test]
fn the_cli_writes_every_artifact_and_the_report_whatever_the_names() {
    let home = tempfile::tempdir().unwrap();
    let plugins = flood_plugins(home.path());
    let run = |args: &[&str]| {
        Command::new(stagecraft_bin())
            .args(args)
            .arg("--plugins")
            .arg(&plugins)
            .env("STAGECRAFT_HOME", home.path())
            .output()
            .expect("running stagecraft")
    };
    let out = home.path().join("invoke-out");
    let result = run(&["invoke", "flood", "--params", r#"{"attack":"names"}"#, "--out", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 7, "all seven artifacts written");

    let pipeline = home.path().join("names.yaml");
    std::fs::write(&pipeline, "name: names\nsteps:\n  - name: flood\n    type: flood\n    params: { attack: names }\n")
        .unwrap();
    let out = home.path().join("run-out");
    let result = run(&["run", pipeline.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).unwrap();
    let listed = report["steps"][0]["execution"]["artifacts"].as_array().unwrap();
    assert_eq!(listed.len(), 7);
    for entry in listed {
        let path = out.join(entry["path"].as_str().expect("each artifact has a path"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4, "{}", path.display());
    }

    let result = run(&["invoke", "flood", "--params", r#"{"attack":"panic"}"#, "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("the stage panicked: the flood broke the dam"), "{stderr}");
    assert!(!stderr.contains("wasm backtrace"), "{stderr}");
}

// ---- a real server ---------------------------------------------------

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(home: &Path, plugins: &Path, log: &Path) -> Self {
        let (child, base) = stagecraft_tests::spawn_serve(home, plugins, &[], Some(log));
        Self { child, base }
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/<pid>/status");
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() << 10
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

/// Runs a one-step flood job to its end; returns the job and its events.
async fn flood_job(client: &HttpClient, base: &str, params: Value) -> (Value, Vec<(String, Value)>) {
    let pipeline = json!({ "name": "storm", "steps": [{ "name": "storm", "type": "flood", "params": params }] });
    let (status, body) =
        call(client, Method::POST, &format!("{base}/v1/pipelines/run"), Some(json!({ "pipeline": pipeline }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    let job = loop {
        let (_, job) = call(client, Method::GET, &format!("{base}/v1/jobs/{id}"), None).await;
        if matches!(job["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            break job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let req = Request::get(format!("{base}/v1/jobs/{id}/events")).body(Full::new(Bytes::new())).unwrap();
    let text = client.request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let events = String::from_utf8_lossy(&text).split("\n\n").filter_map(common::sse_event).collect();
    (job, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_storm_job_leaves_the_server_at_its_baseline() {
    let home = tempfile::tempdir().unwrap();
    let plugins = flood_plugins(home.path());
    let log = home.path().join("serve.log");
    let server = Serve::start(home.path(), &plugins, &log);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Warm up (first compile, first job, SQLite pages), then the baseline.
    let (job, _) = flood_job(&client, &server.base, json!({ "attack": "progress", "count": 1000 })).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let baseline = server.rss();

    let (job, events) = flood_job(&client, &server.base, json!({ "attack": "progress", "count": 1_000_000 })).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let progress = events.iter().filter(|(n, _)| n == "progress").count();
    assert!(progress > 0 && progress < 1000, "{progress} progress events stored of a million");
    let last = events.iter().rev().find(|(n, _)| n == "progress").unwrap();
    assert_eq!(last.1["message"], "step 999999");
    let after = server.rss();
    assert!(after < baseline + (64 << 20), "RSS {} MiB after the storm, {} MiB before", after >> 20, baseline >> 20);

    // A log storm reaches the server's log bounded too.
    let log_before = std::fs::metadata(&log).unwrap().len();
    let (job, events) =
        flood_job(&client, &server.base, json!({ "attack": "log", "count": 50_000, "size": 4096 })).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let lines = events.iter().filter(|(n, _)| n == "log").count();
    assert!(lines <= Quotas::default().log_lines as usize + 1, "{lines} log events");
    let grown = std::fs::metadata(&log).unwrap().len() - log_before;
    assert!(grown < 16 << 20, "the server's log grew by {} MiB", grown >> 20);
    // The numbers docs/reliability-plugins.md quotes (`-- --nocapture`).
    println!(
        "progress storm: 1,000,000 reports, {progress} stored; server RSS {} MiB before, {} MiB after; \
         log storm: 50,000 lines of 4 KiB, {lines} reached the job, the server's log grew {} KiB",
        baseline >> 20,
        after >> 20,
        grown >> 10
    );
}
