//! `stagecraft serve --redis` and `stagecraft worker` processes on a real
//! `redis-server`: pipeline jobs accepted over HTTP by any API process and
//! pulled from the queue by workers, artifacts in a shared blob store (a
//! folder, or S3 on a real `moto_server`), a worker killed with `kill -9` or
//! stopped with SIGSTOP mid-run.

use stagecraft_cluster::testing::Redis;
use stagecraft_cluster::{Band, Queue, QueueConfig};
use stagecraft_orchestrator::testing::S3;
use stagecraft_orchestrator::BlobStore;
use stagecraft_tests::{plugins_dir, stagecraft_bin};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker process with 4 slots, once it said it is taking work.
fn spawn_worker(redis: &Redis, home: &Path, blobs: &Path, name: &str) -> Child {
    spawn_worker_with(redis, home, blobs, name, &["--slots", "4"])
}

fn spawn_worker_with(redis: &Redis, home: &Path, blobs: &Path, name: &str, extra: &[&str]) -> Child {
    spawn_worker_env(redis, home, blobs.as_os_str(), name, extra, &[])
}

/// A worker with `--blobs blobs` (a folder or a URL) and these variables set.
fn spawn_worker_env(
    redis: &Redis,
    home: &Path,
    blobs: &std::ffi::OsStr,
    name: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> Child {
    let mut child = Command::new(stagecraft_bin())
        .arg("--plugins")
        .arg(plugins_dir())
        .args(["worker", "--redis", &redis.url(), "--lease-secs", "2", "--name", name, "--blobs"])
        .arg(blobs)
        .args(extra)
        .env("STAGECRAFT_HOME", home)
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stagecraft worker");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let who = name.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("worker ") && line.contains(" slots") {
                let _ = tx.send(());
            }
            if std::env::var_os("STAGECRAFT_BENCH_QUIET").is_none() {
                eprintln!("{who}: {line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(300)).expect("the worker did not start");
    child
}

fn payload(prompt: &str, size: u32, count: u32) -> String {
    let pipeline = format!(
        "name: cluster\nsteps:\n  - {{ name: picture, type: generate, params: {{ prompt: \"{{{{input}}}}\", width: {size}, height: {size}, count: {count}, seed: 1 }} }}\n  - {{ name: large, type: upscale, input_from: picture, params: {{ factor: 2 }} }}\n"
    );
    serde_json::json!({ "pipeline": pipeline, "file": "cluster.yaml", "input": prompt, "inputs": [] }).to_string()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

async fn wait_final(queue: &Queue, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    for id in ids {
        while !queue.job(id).await.unwrap().unwrap().is_final() {
            assert!(Instant::now() < deadline, "{id} never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Jobs in the `kill -9` test.
const JOBS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_worker_killed_with_kill_9_and_each_commits_once() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (home, blobs) = (dir.path().join("home"), dir.path().join("blobs"));
    let config = QueueConfig { lease: Duration::from_secs(2), ..QueueConfig::default() };
    let queue = Queue::connect(&redis.url(), config).await.unwrap();
    // The API fills the compiled-component cache the workers share.
    let (mut api, base) = spawn_api(&redis, &home, &blobs, None, &[]);
    let api_client = stagecraft_tests::http::Api::new(&base);
    let mut workers = vec![spawn_worker(&redis, &home, &blobs, "w1")];
    workers.push(spawn_worker(&redis, &home, &blobs, "w2"));
    workers.push(spawn_worker(&redis, &home, &blobs, "w3"));
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let spec: serde_json::Value = serde_json::from_str(&payload(&format!("picture {i}"), 384, 1)).unwrap();
        let accepted =
            api_client.run_pipeline(serde_json::json!({ "pipeline": spec["pipeline"], "input": spec["input"] })).await;
        assert_eq!(accepted.status.as_u16(), 202, "{}", accepted.text());
        ids.push(accepted.json()["id"].as_str().unwrap().to_owned());
    }
    // Kill w2 while it holds jobs.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = queue.stats().await.unwrap();
        let w2 = stats.workers.iter().find(|w| w.name == "w2").map_or(0, |w| w.leases);
        if stats.commits >= 10 && w2 > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&workers[1], "-KILL");
    workers[1].wait().unwrap();
    wait_final(&queue, &ids, Duration::from_secs(300)).await;

    let store = BlobStore::new(&blobs);
    let mut again = 0;
    for id in &ids {
        let job = queue.job(id).await.unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.commits), ("succeeded", 1), "{id}: {job:?}");
        if job.deliveries > 1 {
            again += 1;
            assert_ne!(job.worker.as_deref(), Some("w2"), "{id} was finished by the dead worker");
        }
        // The report's artifacts are in the shared store.
        let report: serde_json::Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
        let large = &report["steps"][1]["artifacts"][0];
        let png =
            store.get(large["sha256"].as_str().unwrap()).await.unwrap().expect("the artifact is in the blob store");
        assert_eq!(image::load_from_memory(&png).unwrap().width(), 768);
    }
    // Only what w2 held ran again: at most its 4 slots.
    assert!((1..=4).contains(&again), "{again} jobs ran again");
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.commits, JOBS as u64);
    // The API agrees.
    let first = api_client.wait_job(&ids[0]).await;
    assert_eq!((first["state"].as_str(), first["commits"].as_u64()), (Some("succeeded"), Some(1)));
    signal(&api, "-TERM");
    api.wait().unwrap();
    for (i, mut w) in workers.into_iter().enumerate() {
        if i == 1 {
            continue; // w2, killed above
        }
        signal(&w, "-TERM");
        w.wait().unwrap();
    }
    // Drained workers leave the list.
    let names: Vec<String> = queue.stats().await.unwrap().workers.into_iter().map(|w| w.name).collect();
    assert!(!names.contains(&"w1".to_owned()) && !names.contains(&"w3".to_owned()), "{names:?}");
}

/// A PNG of `width` x 40 that differs for every `seed`.
fn input_png(width: u32, seed: u8) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(width, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, seed]));
    let mut png = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut png, image::ImageFormat::Png).unwrap();
    png.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_blobs_in_s3_read_their_inputs_there_and_store_valid_pngs_there() {
    let redis = Redis::start();
    let s3 = S3::start();
    s3.create_bucket("stagecraft");
    let location = "s3://stagecraft/cluster/blobs";
    let store = s3.store(location).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let queue = Queue::connect(&redis.url(), QueueConfig::default()).await.unwrap();
    let env = s3.env();
    let blobs = std::ffi::OsStr::new(location);
    let mut workers = vec![spawn_worker_env(&redis, &home, blobs, "s1", &["--slots", "2"], &env)];
    workers.push(spawn_worker_env(&redis, &home, blobs, "s2", &["--slots", "2"], &env));
    let pipeline = "name: s3\nsteps:\n  - { name: large, type: upscale, params: { factor: 2 } }\n";
    // Every job's input goes into S3 first; the payload names it by sha256.
    let mut ids = Vec::new();
    for i in 0..12u32 {
        let sha256 = store.put(&input_png(48 + i, i as u8)).await.unwrap();
        let inputs = serde_json::json!([{ "name": "in.png", "media_type": "image/png", "sha256": sha256 }]);
        let body = serde_json::json!({ "pipeline": pipeline, "file": "s3.yaml", "input": null, "inputs": inputs });
        let id = format!("s3-{i}");
        queue.enqueue(&id, Band::Normal, &body.to_string()).await.unwrap();
        ids.push(id);
    }
    // An input that is not in the bucket fails its job, with the reason.
    let missing = serde_json::json!([{ "name": "gone.png", "media_type": "image/png", "sha256": stagecraft_orchestrator::blobs::sha256_hex(b"gone") }]);
    let body = serde_json::json!({ "pipeline": pipeline, "file": "s3.yaml", "input": null, "inputs": missing });
    queue.enqueue("s3-missing", Band::Normal, &body.to_string()).await.unwrap();
    wait_final(&queue, &ids, Duration::from_secs(300)).await;
    for (i, id) in ids.iter().enumerate() {
        let job = queue.job(id).await.unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.commits), ("succeeded", 1), "{id}: {job:?}");
        let report: serde_json::Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
        let large = &report["steps"][0]["artifacts"][0];
        let digest = large["sha256"].as_str().unwrap();
        let png = store.get(digest).await.unwrap().expect("the artifact is in the bucket");
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (2 * (48 + i as u32), 80), "{id}");
    }
    wait_final(&queue, &["s3-missing".into()], Duration::from_secs(60)).await;
    let job = queue.job("s3-missing").await.unwrap().unwrap();
    assert_eq!(job.state, "failed");
    assert!(job.result.as_deref().unwrap_or_default().contains("gone.png is missing from the blob store"), "{job:?}");
    // `stagecraft submit --blobs s3://…` puts its input file in the bucket.
    let input = dir.path().join("submitted.png");
    std::fs::write(&input, input_png(30, 200)).unwrap();
    let pipeline_file = dir.path().join("s3.yaml");
    std::fs::write(&pipeline_file, pipeline).unwrap();
    let out = Command::new(stagecraft_bin())
        .args(["submit", "--redis", &redis.url(), "--blobs", location, "--id", "submitted", "--wait", "-f"])
        .arg(&input)
        .arg(&pipeline_file)
        .envs(env.iter().cloned())
        .env("STAGECRAFT_HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(store.contains(&stagecraft_orchestrator::blobs::sha256_hex(&input_png(30, 200))).await.unwrap());
    let job = queue.job("submitted").await.unwrap().unwrap();
    let report: serde_json::Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    let png = store.get(report["steps"][0]["artifacts"][0]["sha256"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 60);
    // Nothing went to a local folder.
    assert!(!dir.path().join("blobs").exists());
    for mut w in workers {
        signal(&w, "-TERM");
        w.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_its_lease_cannot_commit_and_the_reclaimers_result_stands() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (home, blobs) = (dir.path().join("home"), dir.path().join("blobs"));
    let config = QueueConfig { lease: Duration::from_secs(2), ..QueueConfig::default() };
    let queue = Queue::connect(&redis.url(), config).await.unwrap();
    let mut first = spawn_worker(&redis, &home, &blobs, "first");
    queue.enqueue("stopped", Band::Normal, &payload("a big one", 1024, 8)).await.unwrap();
    while queue.job("stopped").await.unwrap().unwrap().state != "running" {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&first, "-STOP");
    let mut second = spawn_worker(&redis, &home, &blobs, "second");
    wait_final(&queue, &["stopped".into()], Duration::from_secs(120)).await;
    signal(&first, "-CONT");
    // Give the woken worker time to try its renewal or its commit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = queue.job("stopped").await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.commits, job.worker.as_deref()), ("succeeded", 1, Some("second")));
    assert_eq!(job.deliveries, 2);
    let events: Vec<String> = queue.events("stopped", "0").await.unwrap().into_iter().map(|(_, e)| e).collect();
    assert_eq!(events.iter().filter(|e| e.contains("\"job_finished\"")).count(), 1, "{events:?}");
    assert!(events.iter().any(|e| e.contains("job_requeued") && e.contains("first")), "{events:?}");
    for w in [&mut first, &mut second] {
        signal(w, "-TERM");
        w.wait().unwrap();
    }
}

/// `stagecraft serve --redis` serving the API only (`--workers 0`), its
/// home's compiled-component cache shared with `cache_from` when given.
fn spawn_api(redis: &Redis, home: &Path, blobs: &Path, cache_from: Option<&Path>, extra: &[&str]) -> (Child, String) {
    std::fs::create_dir_all(home).unwrap();
    if let Some(shared) = cache_from {
        std::fs::create_dir_all(shared.join("cache")).unwrap();
        std::os::unix::fs::symlink(shared.join("cache"), home.join("cache")).unwrap();
    }
    let (url, blobs) = (redis.url(), blobs.to_str().unwrap());
    let mut flags = vec!["--redis", &url, "--blobs", blobs, "--workers", "0", "--lease-secs", "2"];
    flags.extend_from_slice(extra);
    stagecraft_tests::spawn_serve(home, plugins_dir(), &flags, None)
}

const UPSCALE_INPUT: &str = "name: enlarge\nsteps:\n  - { name: large, type: upscale, params: { factor: 2 } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_serve_the_same_jobs_events_bound_and_cancels() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    let (home_a, home_b, home_w) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("w"));
    let (mut api_a, base_a) = spawn_api(&redis, &home_a, &blobs, None, &["--max-queued", "3"]);
    let (mut api_b, base_b) = spawn_api(&redis, &home_b, &blobs, Some(&home_a), &["--max-queued", "3"]);
    let (a, b) = (stagecraft_tests::http::Api::new(&base_a), stagecraft_tests::http::Api::new(&base_b));

    // No worker yet: jobs wait in Redis. One with an input file, through A.
    let picture = stagecraft_tests::png(&stagecraft_tests::test_picture(64, 48));
    let file = serde_json::json!({ "name": "in.png", "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &picture) });
    let first = a.run_pipeline(serde_json::json!({ "pipeline": UPSCALE_INPUT, "files": [file] })).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.text());
    let first = first.json()["id"].as_str().unwrap().to_owned();
    // Watched on B, from before it starts.
    let watch = {
        let (base_b, first) = (base_b.clone(), first.clone());
        tokio::spawn(
            async move { stagecraft_tests::http::Api::new(&base_b).get(&format!("/v1/jobs/{first}/events")).await },
        )
    };
    let mut ids = vec![first.clone()];
    for (api, prompt) in [(&b, "second"), (&a, "third")] {
        let r = api.run_pipeline(serde_json::json!({ "pipeline": payload_pipeline(128), "input": prompt })).await;
        assert_eq!(r.status.as_u16(), 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    // The bound is the cluster's: three queued through A and B, so B refuses a fourth.
    let full = b.run_pipeline(serde_json::json!({ "pipeline": payload_pipeline(128), "input": "fourth" })).await;
    assert_eq!(full.status.as_u16(), 429, "{}", full.text());
    assert_eq!(full.json()["error"]["code"], "queue_full");
    assert!(full.header("retry-after").is_some());
    // A cancel on B of a job accepted by A ends it at once.
    let cancel = b.call(hyper::Method::DELETE, &format!("/v1/jobs/{}", ids[2]), &[], bytes::Bytes::new()).await;
    assert_eq!(cancel.status.as_u16(), 202, "{}", cancel.text());
    assert_eq!(a.wait_job(&ids[2]).await["state"], "cancelled");
    // A job that is valid but fails when it runs (an upscale with no picture).
    let bad = a.run_pipeline(serde_json::json!({ "pipeline": UPSCALE_INPUT, "input": "x" })).await;
    assert_eq!(bad.status.as_u16(), 202, "{}", bad.text());
    ids.push(bad.json()["id"].as_str().unwrap().to_owned());
    // Bad requests get a clear error.
    let priority = a
        .call(
            hyper::Method::POST,
            "/v1/pipelines/run?priority=urgent",
            &[("content-type", "application/json")],
            serde_json::json!({ "pipeline": UPSCALE_INPUT }).to_string(),
        )
        .await;
    assert_eq!(priority.status.as_u16(), 400, "{}", priority.text());
    assert_eq!(b.get("/v1/jobs/..%2Fetc").await.status.as_u16(), 404);

    // A worker on another "machine": it needs the Redis URL and the blob store only.
    let mut worker = spawn_worker(&redis, &home_w, &blobs, "w1");
    let job = b.wait_job(&first).await;
    assert_eq!((job["state"].as_str(), job["commits"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    let artifact = &job["report"]["steps"][0]["artifacts"][0];
    let fetched = a.get(artifact["url"].as_str().unwrap()).await;
    assert_eq!(fetched.status.as_u16(), 200);
    assert_eq!(fetched.header("content-type"), Some("image/png"));
    assert_eq!(image::load_from_memory(&fetched.body).unwrap().width(), 128, "the 64-px input upscaled 2x");
    assert_eq!(b.wait_job(&ids[1]).await["state"], "succeeded");
    // The bad one failed with its reason, and nothing else was affected.
    let bad = a.wait_job(&ids[3]).await;
    assert_eq!(bad["state"], "failed", "{bad}");

    // The SSE stream opened on B replayed the past and followed to the end.
    let events = watch.await.unwrap();
    assert_eq!(events.status.as_u16(), 200);
    let text = events.text();
    let kinds: Vec<String> =
        text.lines().filter_map(|l| l.strip_prefix("event: ").map(|k| k.trim().to_owned())).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("job_queued"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "job_started") && kinds.iter().any(|k| k == "finished"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("job_finished"), "{kinds:?}");
    // A late subscriber on A gets the same events.
    let late = a.get(&format!("/v1/jobs/{first}/events")).await.text();
    assert_eq!(late.matches("event: ").count(), kinds.len());

    // Both list the same jobs, and report the queue and the worker.
    for api in [&a, &b] {
        let listed = api.get("/v1/jobs?limit=10").await.json();
        let listed: Vec<&str> = listed["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(listed.len(), 4, "{listed:?}");
        for id in &ids {
            assert!(listed.contains(&id.as_str()), "{id} not in {listed:?}");
        }
        let status = api.get("/v1/status/queue").await.json();
        let cluster = &status["cluster"];
        assert_eq!(cluster["commits"].as_u64(), Some(4), "{status}");
        assert!(
            cluster["workers"].as_array().unwrap().iter().any(|w| w["name"] == "w1" && w["alive"] == true),
            "{status}"
        );
        let metrics = api.get("/metrics").await.text();
        assert!(metrics.contains("stagecraft_cluster_commits_total 4"), "{metrics}");
        assert!(metrics.contains("stagecraft_cluster_worker_up{worker=\"w1\"} 1"), "{metrics}");
    }
    signal(&worker, "-TERM");
    worker.wait().unwrap();
    for child in [&mut api_a, &mut api_b] {
        signal(child, "-TERM");
        child.wait().unwrap();
    }
}

/// A step's result-cache state in a job's report (`hit`, `miss`, `off`).
fn cache_state(job: &serde_json::Value, step: usize) -> String {
    job["report"]["steps"][step]["execution"]["cache"].as_str().unwrap_or("?").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_run_on_workers_results_are_shared_and_watchers_are_bounded() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    let (home_a, home_w1, home_w2) = (dir.path().join("a"), dir.path().join("w1"), dir.path().join("w2"));
    // An API process that runs nothing itself (`--workers 0`).
    let (mut api, base) = spawn_api(&redis, &home_a, &blobs, None, &["--max-watchers", "2"]);
    let a = stagecraft_tests::http::Api::new(&base);
    let mut w1 = spawn_worker(&redis, &home_w1, &blobs, "w1");

    // A synchronous invocation is answered by the worker, as a local one would be.
    let picture = stagecraft_tests::png(&stagecraft_tests::test_picture(64, 48));
    let answer = a.invoke("upscale", "", "image/png", picture.clone()).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert!(answer.header("x-stagecraft-version").is_some());
    let link = &answer.json()["artifacts"][0];
    let fetched = a.get(link["url"].as_str().unwrap()).await;
    assert_eq!(fetched.status.as_u16(), 200);
    assert_eq!(image::load_from_memory(&fetched.body).unwrap().width(), 128, "upscaled 2x on the worker");
    // Its errors are a local invocation's: compare with an embedded server.
    let local_home = dir.path().join("local");
    let (mut local, local_base) = stagecraft_tests::spawn_serve(&local_home, plugins_dir(), &[], None);
    let local_api = stagecraft_tests::http::Api::new(&local_base);
    let bad = "?params=%7B%22factor%22%3A9%7D";
    let (remote, here) = (
        a.invoke("upscale", bad, "image/png", picture.clone()).await,
        local_api.invoke("upscale", bad, "image/png", picture.clone()).await,
    );
    assert_eq!(remote.status, here.status, "{} / {}", remote.text(), here.text());
    assert_eq!(remote.json()["error"], here.json()["error"]);
    assert_eq!(remote.json()["error"]["code"], "invalid_input", "{}", remote.text());
    let _ = local.kill();
    let _ = local.wait();

    // A pipeline job on w1 fills the cluster's result cache.
    let job = serde_json::json!({ "pipeline": payload_pipeline(128), "input": "shared" });
    let first = a.run_pipeline(job.clone()).await.json()["id"].as_str().unwrap().to_owned();
    let done = a.wait_job(&first).await;
    assert_eq!((done["state"].as_str(), cache_state(&done, 0).as_str()), (Some("succeeded"), "miss"), "{done}");
    signal(&w1, "-TERM");
    w1.wait().unwrap();

    // No worker now: the same job waits. Two watchers are the bound here.
    let second = a.run_pipeline(job).await.json()["id"].as_str().unwrap().to_owned();
    let watchers: Vec<_> = (0..2)
        .map(|_| {
            let (base, id) = (base.clone(), second.clone());
            tokio::spawn(
                async move { stagecraft_tests::http::Api::new(&base).get(&format!("/v1/jobs/{id}/events")).await },
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.get("/v1/status/queue").await.json()["cluster"]["watchers"]["in_use"] != 2 {
        assert!(Instant::now() < deadline, "the two watchers never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = a.get(&format!("/v1/jobs/{second}/events")).await;
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "too_many_watchers");
    assert!(refused.header("retry-after").is_some());
    // (Another picture: the same one would be answered from the invoke cache.)
    let other = stagecraft_tests::png(&stagecraft_tests::test_picture(32, 24));
    let busy = a.invoke("upscale", "", "image/png", other).await;
    assert_eq!(busy.status.as_u16(), 503, "{}", busy.text());
    assert!(a.get("/metrics").await.text().contains("stagecraft_cluster_watchers 2"));

    // Another worker, with a home of its own, reuses w1's result.
    let mut w2 = spawn_worker(&redis, &home_w2, &blobs, "w2");
    let done = a.wait_job(&second).await;
    assert_eq!((done["state"].as_str(), cache_state(&done, 0).as_str()), (Some("succeeded"), "hit"), "{done}");
    for watcher in watchers {
        let events = watcher.await.unwrap();
        assert_eq!(events.status.as_u16(), 200);
        assert!(events.text().contains("event: job_finished"));
    }
    // The watchers' places are free again, and the invocations are not jobs.
    assert_eq!(a.get("/v1/status/queue").await.json()["cluster"]["watchers"]["in_use"], 0);
    let late = a.get(&format!("/v1/jobs/{second}/events")).await;
    assert_eq!(late.status.as_u16(), 200);
    let listed = a.get("/v1/jobs?limit=50").await.json();
    let listed: Vec<&str> = listed["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    signal(&w2, "-TERM");
    w2.wait().unwrap();
    signal(&api, "-TERM");
    api.wait().unwrap();
}

/// noop.wasm with an extra custom section: the same stage, another digest.
fn noop_v2() -> Vec<u8> {
    stagecraft_tests::noop_with_section(b"cluster version two")
}

async fn noop_digest(api: &stagecraft_tests::http::Api) -> String {
    let listed = api.get("/v1/stages").await.json();
    let noop = listed["stages"].as_array().unwrap().iter().find(|s| s["name"] == "noop").unwrap().clone();
    noop["digest"].as_str().unwrap().to_owned()
}

/// Waits until every API lists `digest` for noop; returns how long it took.
async fn until_listed(apis: &[&stagecraft_tests::http::Api], digest: &str) -> Duration {
    let started = Instant::now();
    for api in apis {
        while noop_digest(api).await != digest {
            assert!(started.elapsed() < Duration::from_secs(20), "{} never ran {digest}", api.base);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_reaches_two_apis_and_three_workers_under_load_and_rolls_back_everywhere() {
    const TOKEN: &str = "cluster-admin-token";
    std::env::set_var("STAGECRAFT_CLUSTER_TEST_TOKEN", TOKEN);
    let auth = format!("Bearer {TOKEN}");
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    let (home_a, home_b, home_w) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("w"));
    let admin = ["--admin-token-env", "STAGECRAFT_CLUSTER_TEST_TOKEN"];
    let (mut api_a, base_a) = spawn_api(&redis, &home_a, &blobs, None, &admin);
    let (mut api_b, base_b) = spawn_api(&redis, &home_b, &blobs, Some(&home_a), &admin);
    let (a, b) = (stagecraft_tests::http::Api::new(&base_a), stagecraft_tests::http::Api::new(&base_b));
    std::fs::create_dir_all(&home_w).unwrap();
    std::os::unix::fs::symlink(home_a.join("cache"), home_w.join("cache")).unwrap();
    let mut workers: Vec<Child> = (1..=3).map(|i| spawn_worker(&redis, &home_w, &blobs, &format!("w{i}"))).collect();
    let old = noop_digest(&a).await;
    assert_eq!(noop_digest(&b).await, old);

    // Load: synchronous invocations on both APIs, and pipeline jobs (a
    // noop step) through the workers; every answer names its version.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (task, base) in [base_a.clone(), base_b.clone(), base_a.clone(), base_b.clone()].into_iter().enumerate() {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let api = stagecraft_tests::http::Api::new(&base);
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let body = format!("load {task} {}", seen.len());
                if task < 2 {
                    let r = api.invoke("noop", "", "text/plain", body.into_bytes()).await;
                    assert!(r.status.is_success(), "{}: {}", r.status, r.text());
                    seen.push(r.json()["digest"].as_str().unwrap().to_owned());
                } else {
                    let pipeline = "name: swap\nsteps:\n  - { name: touch, type: noop }\n";
                    let r = api.run_pipeline(serde_json::json!({ "pipeline": pipeline, "input": body })).await;
                    assert_eq!(r.status.as_u16(), 202, "{}", r.text());
                    let job = api.wait_job(r.json()["id"].as_str().unwrap()).await;
                    assert_eq!(job["state"], "succeeded", "{job}");
                    seen.push(job["report"]["steps"][0]["execution"]["digest"].as_str().unwrap().to_owned());
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a.call(hyper::Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], noop_v2()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let new = r.json()["digest"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let reached = until_listed(&[&a, &b], &new).await;
    // Let the load run on the new version: every worker must pick it up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = a
            .run_pipeline(serde_json::json!({ "pipeline": "name: probe\nsteps:\n  - { name: touch, type: noop }\n" }))
            .await;
        let job = a.wait_job(job.json()["id"].as_str().unwrap()).await;
        if job["report"]["steps"][0]["execution"]["digest"] == new.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the workers never ran the new version");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for task in load {
        seen.extend(task.await.unwrap());
    }
    assert!(seen.iter().all(|d| *d == old || *d == new), "a version neither old nor new");
    assert!(seen.contains(&new), "the load never saw the new version");

    // A rollback on B: every process is back on the old version.
    let r =
        b.call(hyper::Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], bytes::Bytes::new()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["digest"], old.as_str());
    let back = until_listed(&[&a, &b], &old).await;
    let probe = b
        .run_pipeline(serde_json::json!({ "pipeline": "name: probe\nsteps:\n  - { name: touch, type: noop }\n" }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut job = b.wait_job(probe.json()["id"].as_str().unwrap()).await;
    while job["report"]["steps"][0]["execution"]["digest"] != old.as_str() {
        assert!(Instant::now() < deadline, "the workers never rolled back");
        let probe = b
            .run_pipeline(serde_json::json!({ "pipeline": "name: probe\nsteps:\n  - { name: touch, type: noop }\n" }))
            .await;
        job = b.wait_job(probe.json()["id"].as_str().unwrap()).await;
    }
    let r =
        a.call(hyper::Method::POST, "/v1/stages/noop/rollback", &[("authorization", &auth)], bytes::Bytes::new()).await;
    assert_eq!(r.status.as_u16(), 409, "nothing older in the cluster: {}", r.text());
    eprintln!(
        "the upload reached both APIs in {reached:?}, the rollback in {back:?}; {} answers under load",
        seen.len()
    );

    // A worker started now runs the cluster's version from the start.
    let r = b.call(hyper::Method::PUT, "/v1/stages/noop", &[("authorization", &auth)], noop_v2()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    until_listed(&[&a, &b], &new).await;
    for mut w in workers.drain(..) {
        signal(&w, "-TERM");
        w.wait().unwrap();
    }
    let mut late = spawn_worker(&redis, &home_w, &blobs, "late");
    let probe = a
        .run_pipeline(serde_json::json!({ "pipeline": "name: probe\nsteps:\n  - { name: touch, type: noop }\n" }))
        .await;
    let job = a.wait_job(probe.json()["id"].as_str().unwrap()).await;
    assert_eq!(job["report"]["steps"][0]["execution"]["digest"], new.as_str(), "{job}");
    signal(&late, "-TERM");
    late.wait().unwrap();
    for child in [&mut api_a, &mut api_b] {
        signal(child, "-TERM");
        child.wait().unwrap();
    }
}

fn payload_pipeline(size: u32) -> String {
    format!(
        "name: cluster\nsteps:\n  - {{ name: picture, type: generate, params: {{ prompt: \"{{{{input}}}}\", width: {size}, height: {size}, seed: 1 }} }}\n"
    )
}

/// Jobs/s of `jobs` jobs of `pipeline` (a different input each), posted to
/// one `serve --redis --workers 0` and run by `n` worker processes.
async fn workers_rate(pipeline: &str, jobs: usize, n: usize, flags: &[&str]) -> f64 {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (home, blobs) = (dir.path().join("home"), dir.path().join("blobs"));
    let (mut api_process, base) = spawn_api(&redis, &home, &blobs, None, &["--max-queued", "100000"]);
    let api = stagecraft_tests::http::Api::new(&base);
    let mut workers = Vec::new();
    for i in 0..n {
        workers.push(spawn_worker_with(&redis, &home, &blobs, &format!("b{i}"), flags));
    }
    let started = Instant::now();
    let ids = post_jobs(&api, pipeline, jobs).await;
    for id in &ids {
        assert_eq!(api.wait_job(id).await["state"], "succeeded");
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    for mut w in workers {
        signal(&w, "-TERM");
        w.wait().unwrap();
    }
    signal(&api_process, "-TERM");
    api_process.wait().unwrap();
    rate
}

async fn post_jobs(api: &stagecraft_tests::http::Api, pipeline: &str, jobs: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..jobs {
        let r = api.run_pipeline(serde_json::json!({ "pipeline": pipeline, "input": format!("job {i}") })).await;
        assert_eq!(r.status.as_u16(), 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Median and p95 milliseconds of `n` invocations of noop with a small
/// body, one at a time, each a different input (no cache answers).
async fn invoke_latency(api: &stagecraft_tests::http::Api, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let r = api.invoke("noop", "", "text/plain", format!("call {i}").into_bytes()).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[n * 95 / 100])
}

/// Jobs/s of the same jobs on one embedded `stagecraft serve` (SQLite, no Redis).
async fn embedded_rate(pipeline: &str, jobs: usize, flags: &[&str]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) =
        stagecraft_tests::spawn_serve(dir.path(), plugins_dir(), flags, Some(&dir.path().join("log")));
    let api = stagecraft_tests::http::Api::new(&base);
    let started = Instant::now();
    let ids = post_jobs(&api, pipeline, jobs).await;
    for id in &ids {
        assert_eq!(api.wait_job(id).await["state"], "succeeded");
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    rate
}

/// `cargo test -p stagecraft-tests --test cluster -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints a table"]
async fn bench_worker_processes_against_the_embedded_server() {
    std::env::set_var("STAGECRAFT_BENCH_QUIET", "1");
    let api = stagecraft_tests::slow_api::SlowImagesApi::start(Duration::from_secs(1)).await;
    let grant = format!("generate_http=127.0.0.1:{}", api.addr.port());
    let waiting = format!(
        "name: hosted\nsteps:\n  - {{ name: take, type: generate_http, params: {} }}\n",
        api.params("a hosted call")
    );
    let cpu = "name: cpu\nsteps:\n  - { name: picture, type: generate, params: { prompt: \"{{input}}\", width: 512, height: 512, seed: 1 } }\n  - { name: large, type: upscale, input_from: picture, params: { factor: 2 } }\n";
    println!("\njobs/s posted to `serve --redis --workers 0` and run by worker processes (Redis appendfsync always),");
    println!("against the same jobs posted to one embedded `serve` (SQLite, no Redis)");
    println!("(embedded: one `stagecraft serve`, SQLite, as many job slots as one worker; a different input per job)");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "work", "embedded", "1 worker", "2", "4", "2 vs 1", "4 vs 1"
    );
    // (label, pipeline, jobs, worker flags, serve flags)
    type Row<'a> = (&'a str, &'a str, usize, Vec<&'a str>, Vec<&'a str>);
    let rows: [Row; 2] = [
        (
            "waiting: 1 s hosted call, 8 slots each",
            &waiting,
            64,
            vec!["--http-grant", &grant, "--slots", "8"],
            vec!["--http-grant", &grant, "--max-jobs", "8"],
        ),
        ("CPU: generate 512 + upscale 2x, 1 slot each", cpu, 24, vec!["--slots", "1"], vec!["--max-jobs", "1"]),
    ];
    for (label, pipeline, jobs, worker_flags, serve_flags) in rows {
        let embedded = embedded_rate(pipeline, jobs, &serve_flags).await;
        let mut rates = Vec::new();
        for n in [1, 2, 4] {
            rates.push(workers_rate(pipeline, jobs, n, &worker_flags).await);
        }
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2}x {:>8.2}x",
            label,
            embedded,
            rates[0],
            rates[1],
            rates[2],
            rates[1] / rates[0],
            rates[2] / rates[0]
        );
    }

    // What the queue adds to one call: noop invoked over HTTP, one at a time.
    let dir = tempfile::tempdir().unwrap();
    let (mut embedded, base) = stagecraft_tests::spawn_serve(&dir.path().join("e"), plugins_dir(), &[], None);
    let embedded_api = stagecraft_tests::http::Api::new(&base);
    let _ = invoke_latency(&embedded_api, 20).await;
    let (e50, e95) = invoke_latency(&embedded_api, 300).await;
    println!("\nnoop invoked over HTTP, 300 calls one at a time (ms)");
    println!("{:<52} {:>9} {:>9} {:>12}", "", "p50", "p95", "p50 added");
    println!("{:<52} {:>9.2} {:>9.2} {:>12}", "embedded serve (runs it itself)", e50, e95, "");
    for fsync in ["always", "everysec"] {
        let redis = Redis::start_with(fsync);
        let (home, blobs) = (dir.path().join(fsync), dir.path().join(format!("{fsync}-blobs")));
        let (mut api_process, base) = spawn_api(&redis, &home, &blobs, None, &[]);
        let cluster_api = stagecraft_tests::http::Api::new(&base);
        let mut worker = spawn_worker_with(&redis, &home, &blobs, "lat", &["--slots", "4"]);
        let _ = invoke_latency(&cluster_api, 20).await;
        let (c50, c95) = invoke_latency(&cluster_api, 300).await;
        let label = format!("serve --redis --workers 0 + 1 worker, {fsync}");
        println!("{:<52} {:>9.2} {:>9.2} {:>12.2}", label, c50, c95, c50 - e50);
        for child in [&mut worker, &mut api_process] {
            signal(child, "-TERM");
            child.wait().unwrap();
        }
    }
    let _ = embedded.kill();
    let _ = embedded.wait();
}
