//! Capacity end to end: waiting work holds no CPU slot, CPU-bound work never
//! runs on more than the CPU slots, limits above the core count mean what
//! they say, deadlines and cancellation reach parked instances, and the
//! server answers 429 past its in-flight limit and queue. Nothing here
//! asserts a timing: every test counts what is in flight.
//!
//! The `#[ignore]`d `bench_*` tests are the capacity benchmarks (one table
//! each): `cargo test --workspace --test capacity -- --ignored --nocapture`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use stagecraft_orchestrator::{Orchestrator, RunEvent};
use stagecraft_pipeline::{RunInput, RunOptions, RunStatus};
use stagecraft_runtime::{
    CapacityStatus, HttpGrant, InvokeError, InvokeOptions, ParkPolicy, Runtime, StageInput, WaitKind,
};
use stagecraft_scheduler::{Scheduler, SchedulerConfig, StagePoolConfig};
use stagecraft_tests::slow_api::SlowImagesApi;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A runtime with `burn` and `generate_http`, `cpu_slots` CPU slots and
/// the given grants.
fn runtime(cpu_slots: usize, policy: ParkPolicy, http: HashMap<String, HttpGrant>) -> Arc<Runtime> {
    let mut config = stagecraft_tests::test_config();
    config.cpu_slots = cpu_slots;
    config.park_policy = policy;
    config.http = http;
    let runtime = Runtime::new(config).expect("runtime starts");
    runtime.install_file(stagecraft_tests::test_plugins_dir().join("burn.wasm")).expect("burn loads");
    runtime.install_file(stagecraft_tests::plugins_dir().join("generate_http.wasm")).expect("generate_http loads");
    Arc::new(runtime)
}

fn burn(params: Value) -> StageInput {
    StageInput::new(Vec::new(), params)
}

/// Polls the runtime's capacity until `until` holds (or fails after 60 s,
/// showing the last status: a hang is a failure, not a wait forever).
async fn wait_for(runtime: &Runtime, what: &str, until: impl Fn(&CapacityStatus) -> bool) -> CapacityStatus {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let status = runtime.capacity();
        if until(&status) {
            return status;
        }
        assert!(Instant::now() < give_up, "never saw {what}; last: {status:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `n` `burn` invocations at once, the i-th with `params(i)`.
fn spawn_burns(
    rt: &Arc<Runtime>,
    n: usize,
    params: impl Fn(usize) -> Value,
) -> Vec<tokio::task::JoinHandle<Result<stagecraft_runtime::StageOutput, InvokeError>>> {
    (0..n)
        .map(|i| {
            let (rt, input) = (rt.clone(), burn(params(i)));
            tokio::spawn(async move { rt.invoke("burn", input, Default::default()).await })
        })
        .collect()
}

fn parked(status: &CapacityStatus, kind: WaitKind) -> usize {
    status.parked.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_instance_gives_its_cpu_slot_back() {
    let rt = runtime(1, ParkPolicy::ReleaseWhileWaiting, HashMap::new());
    let calls = spawn_burns(&rt, 4, |i| json!({"sleep_ms": 1500, "tag": format!("w{i}")}));
    // Four sleepers on ONE CPU slot, all parked at once, none holding it.
    let seen = wait_for(&rt, "4 parked instances", |s| s.parked_total == 4).await;
    assert_eq!(parked(&seen, WaitKind::Io), 4, "a WASI sleep parks as io: {seen:?}");
    assert_eq!(seen.cpu_busy, 0, "parked instances hold no CPU slot: {seen:?}");
    for call in calls {
        call.await.unwrap().expect("every sleeper finishes");
    }
    let after = rt.capacity();
    assert_eq!((after.cpu_busy, after.cpu_queued, after.parked_total), (0, 0, 0));
    assert!(after.parks >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comparison_switch_keeps_waiting_instances_on_their_slot() {
    let rt = runtime(1, ParkPolicy::HoldWhileWaiting, HashMap::new());
    let calls = spawn_burns(&rt, 3, |i| json!({"sleep_ms": 1000, "tag": format!("h{i}")}));
    let seen = wait_for(&rt, "one parked holder and two queued", |s| s.parked_total == 1 && s.cpu_queued == 2).await;
    assert_eq!(seen.cpu_busy, 1, "{seen:?}");
    for call in calls {
        call.await.unwrap().expect("every sleeper finishes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cpu_bound_work_never_runs_on_more_than_the_slots() {
    let rt = runtime(2, ParkPolicy::ReleaseWhileWaiting, HashMap::new());
    let instantiated_before = rt.instantiations();
    let calls = spawn_burns(&rt, 6, |i| json!({"iterations": 200_000_000u64, "tag": format!("c{i}")}));
    let (mut most_busy, mut most_queued, mut most_instances) = (0, 0, 0);
    while !calls.iter().all(|c| c.is_finished()) {
        let s = rt.capacity();
        most_busy = most_busy.max(s.cpu_busy);
        most_queued = most_queued.max(s.cpu_queued);
        // Instances created so far minus those finished: an invocation
        // queued for CPU has no instance yet.
        let created = rt.instantiations() - instantiated_before;
        let finished = calls.iter().filter(|c| c.is_finished()).count() as u64;
        let live = created.saturating_sub(finished);
        most_instances = most_instances.max(live);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for call in calls {
        call.await.unwrap().expect("every burn finishes");
    }
    assert_eq!(most_busy, 2, "six CPU-bound calls on two slots");
    assert!(most_queued >= 1, "the others waited for a slot");
    // 3, not 2: a finished call's task may be seen as running for a moment
    // after its slot (and so the next instance) moved on. Ungated, all six
    // would exist at once.
    assert!(most_instances <= 3, "queued calls were not instantiated ({most_instances} live at once)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_covers_time_spent_waiting() {
    let rt = runtime(1, ParkPolicy::ReleaseWhileWaiting, HashMap::new());
    let options = InvokeOptions::default().with_timeout(Duration::from_millis(800));
    let err = rt.invoke("burn", burn(json!({"sleep_ms": 20_000})), options).await.unwrap_err();
    assert!(matches!(err, InvokeError::Timeout(_)), "{err}");
    let after = rt.capacity();
    assert_eq!((after.cpu_busy, after.parked_total), (0, 0), "nothing left parked: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_parked_work_ends_its_hosted_call() {
    let api = SlowImagesApi::start(Duration::from_secs(120)).await;
    let rt = runtime(2, ParkPolicy::ReleaseWhileWaiting, api.grant());
    let call = {
        let (rt, params) = (rt.clone(), api.params("a slow cat"));
        tokio::spawn(async move {
            rt.invoke("generate_http", StageInput::new(Vec::new(), params), Default::default()).await
        })
    };
    let seen = wait_for(&rt, "the hosted call parked on HTTP", |s| parked(s, WaitKind::Http) == 1).await;
    assert_eq!(seen.cpu_busy, 0);
    // The stage parks once its request is sent; the API counts it once it
    // has read all of it.
    let give_up = Instant::now() + Duration::from_secs(30);
    while api.in_flight.load(Ordering::SeqCst) != 1 {
        assert!(Instant::now() < give_up, "the API never saw the request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    let _ = call.await;
    let give_up = Instant::now() + Duration::from_secs(30);
    while api.abandoned.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < give_up, "the API never saw the request abandoned");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.answered.load(Ordering::SeqCst), 0);
    wait_for(&rt, "nothing parked after the cancel", |s| s.parked_total == 0).await;
}

/// A parallel group of `n` hosted generations with `max_workers: n`.
fn fan_out_pipeline(api: &SlowImagesApi, n: usize) -> String {
    let mut yaml = format!(
        "name: fan-out\nsettings: {{ parallel: true, max_workers: {n} }}\nsteps:\n  - type: parallel_group\n    name: takes\n    max_workers: {n}\n    steps:\n"
    );
    for i in 0..n {
        let params = api.params(&format!("take {i}"));
        yaml.push_str(&format!("      - {{ name: take{i}, type: generate_http, params: {params} }}\n"));
    }
    yaml
}

async fn run_fan_out(
    rt: Arc<Runtime>,
    scheduler: SchedulerConfig,
    yaml: &str,
) -> (stagecraft_pipeline::RunOutcome<stagecraft_orchestrator::SharedArtifact>, Vec<Value>) {
    let orchestrator = Orchestrator::new(rt, Scheduler::new(scheduler), None);
    let pipeline = orchestrator.load_pipeline(yaml, "fan-out.yaml").unwrap_or_else(|d| panic!("invalid:\n{d}"));
    let limited = Arc::new(Mutex::new(Vec::new()));
    let sink = limited.clone();
    let observer = Arc::new(move |e: &RunEvent| {
        if let RunEvent::Limited(l) = e {
            sink.lock().unwrap().push(serde_json::to_value(l).unwrap());
        }
    });
    let outcome = orchestrator.run(&pipeline, RunInput::default(), RunOptions::default(), Some(observer)).await;
    let limited = limited.lock().unwrap().clone();
    (outcome, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_limit_above_the_core_count_is_honoured() {
    let api = SlowImagesApi::start(Duration::from_millis(1500)).await;
    let rt = runtime(2, ParkPolicy::ReleaseWhileWaiting, api.grant());
    let (outcome, limited) = run_fan_out(rt, SchedulerConfig::default(), &fan_out_pipeline(&api, 12)).await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded, "{:#}", outcome.report.to_json());
    assert_eq!(api.answered.load(Ordering::SeqCst), 12);
    assert_eq!(api.max_in_flight.load(Ordering::SeqCst), 12, "all twelve hosted calls in flight at once on 2 cores");
    assert!(limited.is_empty(), "nothing cut the group's limit: {limited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_limit_that_cuts_a_group_is_reported() {
    let api = SlowImagesApi::start(Duration::from_millis(800)).await;
    let rt = runtime(2, ParkPolicy::ReleaseWhileWaiting, api.grant());
    let scheduler =
        SchedulerConfig::default().stage("generate_http", StagePoolConfig { limit: Some(3), memory_bytes: None });
    let (outcome, limited) = run_fan_out(rt, scheduler, &fan_out_pipeline(&api, 8)).await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded, "{:#}", outcome.report.to_json());
    assert_eq!(api.max_in_flight.load(Ordering::SeqCst), 3, "the operator's stage limit holds");
    let groups: Vec<&Value> = limited.iter().filter(|l| l["scope"] == "group takes").collect();
    assert_eq!(groups.len(), 1, "{limited:?}");
    assert_eq!(groups[0]["asked"], 8);
    assert_eq!(groups[0]["allowed"], 3);
    assert_eq!(groups[0]["by"], "the limit of stage generate_http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_and_the_queue_callers_get_429() {
    use stagecraft_server::{Server, ServerConfig};
    let rt = runtime(2, ParkPolicy::ReleaseWhileWaiting, HashMap::new());
    let home = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), home.path());
    config.invoke_cache_bytes = 0;
    config.scheduler = SchedulerConfig { max_workers: 6, max_queue: 4, ..SchedulerConfig::default() };
    let server = Server::start(config, rt.clone()).await.unwrap();
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("http://{}/v1/stages/burn/invoke?params=%7B%22sleep_ms%22%3A3000%7D", server.addr);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let request = hyper::Request::post(url)
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from(format!("caller {i}"))))
                    .unwrap();
                let response = client.request(request).await.expect("the server answers");
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").is_some();
                let _ = response.into_body().collect().await;
                (status, retry_after)
            })
        })
        .collect();
    let seen = wait_for(&rt, "six in flight, all parked", |s| s.parked_total == 6).await;
    assert_eq!(seen.cpu_busy, 0);
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for call in calls {
        let (status, retry_after) = call.await.unwrap();
        *by_status.entry(status).or_default() += 1;
        if status == 429 {
            assert!(retry_after, "a 429 says when to come back");
        }
    }
    let (ok, refused) = (by_status.get(&200).copied().unwrap_or(0), by_status.get(&429).copied().unwrap_or(0));
    assert_eq!(ok + refused, 20, "only 200 and 429: {by_status:?}");
    assert!(ok >= 10, "six in flight plus four queued all succeed: {by_status:?}");
    assert!(refused >= 1, "the rest are told to come back: {by_status:?}");
}

// ---------------------------------------------------------------------------
// Benchmarks (ignored; run with --ignored --nocapture).

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A runtime whose `generate_http` grant allows `connections` requests at once.
fn bench_runtime(policy: ParkPolicy, api: &SlowImagesApi, connections: usize) -> Arc<Runtime> {
    let mut grants = api.grant();
    grants.get_mut("generate_http").unwrap().max_connections = connections;
    let mut config = stagecraft_tests::test_config();
    config.park_policy = policy;
    config.http = grants;
    config.limits.timeout = Duration::from_secs(600);
    config.max_instances = 1100;
    let rt = Runtime::new(config).expect("runtime starts");
    rt.install_file(stagecraft_tests::test_plugins_dir().join("burn.wasm")).unwrap();
    rt.install_file(stagecraft_tests::plugins_dir().join("generate_http.wasm")).unwrap();
    Arc::new(rt)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test --workspace --test capacity -- --ignored --nocapture"]
async fn bench_hosted_fan_out() {
    let cores = stagecraft_scheduler::available_cores();
    println!("\nhosted fan-out: N generate_http steps in one parallel group (max_workers N), each answered after 1 s");
    println!(
        "by a loopback images API; {cores} cores, {cores} CPU slots; makespan medians (s); load {}",
        load_average()
    );
    println!("| N | ideal | waiting holds no CPU slot (new) | waiting holds its CPU slot (before) | speedup |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [8usize, 64, 256] {
        let mut cells = Vec::new();
        for policy in [ParkPolicy::ReleaseWhileWaiting, ParkPolicy::HoldWhileWaiting] {
            // The old behaviour takes N/cores seconds: one run past N = 8.
            let runs = if policy == ParkPolicy::HoldWhileWaiting && n > 8 { 1 } else { 3 };
            let mut times = Vec::new();
            for _ in 0..runs {
                let api = SlowImagesApi::start(Duration::from_secs(1)).await;
                let rt = bench_runtime(policy, &api, n);
                let yaml = fan_out_pipeline(&api, n);
                let started = Instant::now();
                let (outcome, _) = run_fan_out(rt, SchedulerConfig::default(), &yaml).await;
                times.push(started.elapsed().as_secs_f64());
                assert_eq!(outcome.report.status, RunStatus::Succeeded);
                assert_eq!(api.answered.load(Ordering::SeqCst), n, "{policy:?}, N = {n}: one answer per step");
            }
            cells.push((median(times), runs));
        }
        let ((new, _), (old, old_runs)) = (cells[0], cells[1]);
        let old_note = if old_runs == 1 { " (1 run)" } else { "" };
        println!("| {n} | 1.00 | {new:.2} | {old:.2}{old_note} | {:.1}x |", old / new);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test --workspace --test capacity -- --ignored --nocapture"]
async fn bench_mixed_hosted_and_cpu_bound() {
    // 16 burns of ~0.25 s CPU each, beside 64 hosted calls of 1 s.
    let burn_iterations = 250_000_000u64;
    let run = |with_burns: bool| async move {
        let api = SlowImagesApi::start(Duration::from_secs(1)).await;
        let rt = bench_runtime(ParkPolicy::ReleaseWhileWaiting, &api, 64);
        let mut yaml = fan_out_pipeline(&api, 64);
        if with_burns {
            yaml.push_str("  - type: parallel_group\n    name: cpu\n    max_workers: 16\n    steps:\n");
            for i in 0..16 {
                yaml.push_str(&format!(
                    "      - {{ name: burn{i}, type: burn, params: {{ iterations: {burn_iterations}, tag: b{i} }} }}\n"
                ));
            }
        }
        let most_busy = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (rt, most_busy) = (rt.clone(), most_busy.clone());
            tokio::spawn(async move {
                loop {
                    most_busy.fetch_max(rt.capacity().cpu_busy, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let started = Instant::now();
        let (outcome, _) = run_fan_out(rt.clone(), SchedulerConfig::default(), &yaml).await;
        let makespan = started.elapsed().as_secs_f64();
        sampler.abort();
        let most_busy = most_busy.load(Ordering::Relaxed);
        assert_eq!(outcome.report.status, RunStatus::Succeeded);
        let report = outcome.report.to_json();
        let hosted: Vec<f64> = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["stage"] == "generate_http")
            .filter_map(|s| s["finished"].as_f64())
            .collect();
        let mut sorted = hosted.clone();
        sorted.sort_by(f64::total_cmp);
        (makespan, percentile(&sorted, 0.5), percentile(&sorted, 1.0), most_busy)
    };
    let (alone_makespan, alone_p50, alone_max, _) = run(false).await;
    let (mixed_makespan, mixed_p50, mixed_max, most_busy) = run(true).await;
    println!("\nmixed: 64 hosted steps (1 s each) alone, and beside 16 CPU-bound burn steps; load {}", load_average());
    println!("| run | makespan (s) | hosted step finished, p50 (s) | hosted step finished, max (s) |");
    println!("|---|---:|---:|---:|");
    println!("| hosted alone | {alone_makespan:.2} | {alone_p50:.3} | {alone_max:.3} |");
    println!("| hosted + 16 burns | {mixed_makespan:.2} | {mixed_p50:.3} | {mixed_max:.3} |");
    println!(
        "| ratio | {:.2}x | {:.2}x | {:.2}x |",
        mixed_makespan / alone_makespan,
        mixed_p50 / alone_p50,
        mixed_max / alone_max
    );
    let slots = stagecraft_scheduler::available_cores();
    println!("CPU slots: {slots}; most held at once during the mixed run: {most_busy}");
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test --workspace --test capacity -- --ignored --nocapture"]
async fn bench_http_crowd() {
    use stagecraft_server::{Server, ServerConfig};
    let callers = 1000usize;
    let api = SlowImagesApi::start(Duration::from_secs(1)).await;
    let rt = bench_runtime(ParkPolicy::ReleaseWhileWaiting, &api, callers);
    let home = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), home.path());
    config.invoke_cache_bytes = 0;
    let server = Server::start(config, rt.clone()).await.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(callers)
        .build_http::<Full<Bytes>>();
    let params = serde_json::to_string(&api.params("a crowd")).unwrap();
    let url = format!("http://{}/v1/stages/generate_http/invoke?params={}", server.addr, urlencode(&params));
    // Warm up: compile paths, the API's connection pool.
    let warm = hyper::Request::post(&url).body(Full::new(Bytes::new())).unwrap();
    let _ = client.request(warm).await.unwrap().into_body().collect().await;
    let rss_before = rss_bytes();
    let peak = Arc::new(AtomicUsize::new(0));
    let most_parked = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (rt, peak, most_parked) = (rt.clone(), peak.clone(), most_parked.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes() as usize, Ordering::Relaxed);
                most_parked.fetch_max(rt.capacity().parked_total, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let calls: Vec<_> = (0..callers)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let request = hyper::Request::post(url)
                    .header("cache-control", "no-cache")
                    .body(Full::new(Bytes::from(format!("caller {i}"))))
                    .unwrap();
                let status = match client.request(request).await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.into_body().collect().await;
                        s
                    }
                    Err(_) => 0,
                };
                (status, t.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut ok = 0;
    for call in calls {
        let (status, secs) = call.await.unwrap();
        ok += usize::from(status == 200);
        latencies.push(secs);
    }
    let wall = started.elapsed().as_secs_f64();
    sampler.abort();
    latencies.sort_by(f64::total_cmp);
    let per_instance = (peak.load(Ordering::Relaxed) as f64 - rss_before as f64).max(0.0) / callers as f64;
    println!(
        "\nHTTP crowd: {callers} concurrent POST /v1/stages/generate_http/invoke, each waiting 1 s on a loopback API"
    );
    println!(
        "| callers | succeeded | wall (s) | p50 (s) | p99 (s) | most parked at once | host RSS per parked instance |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {callers} | {ok} | {wall:.2} | {:.3} | {:.3} | {} | {:.0} KiB |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        most_parked.load(Ordering::Relaxed),
        per_instance / 1024.0
    );
    println!("load {}", load_average());
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
