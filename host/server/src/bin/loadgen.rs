//! `stagecraft-loadgen`: a small HTTP load generator for `stagecraft serve`
//! (and anything else that answers POSTs): N keep-alive connections, each
//! sending requests back to back for a fixed time; prints requests/s,
//! p50/p99/max latency and the count of non-2xx answers (`--unique-bodies`
//! makes every request's body, and so every answer, different). With
//! `--swap-component`, it also uploads a new version of the stage
//! `--swaps` times during the run (alternating variants of the file, each
//! with its own digest) and reports, per swap, the time from the start of
//! the upload to the first response served by the new version.
//!
//! ```text
//! stagecraft-loadgen --url http://127.0.0.1:8080/v1/stages/noop/invoke -c 32 -d 10
//! STAGECRAFT_TOKEN=... stagecraft-loadgen --url ... -d 30 \
//!     --swap-component target/plugins/noop.wasm --swaps 10 --admin-token-env STAGECRAFT_TOKEN
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    connections: usize,
    duration: Duration,
    body: Vec<u8>,
    content_type: String,
    swap_component: Option<std::path::PathBuf>,
    swaps: usize,
    token: Option<String>,
    /// A distinct body for every request (so no two answers are the same).
    unique: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: stagecraft-loadgen --url URL [-c CONNECTIONS=32] [-d SECONDS=10] [--body-bytes N=16] \
         [--content-type T=application/octet-stream] [--unique-bodies] [--swap-component FILE --swaps N --admin-token-env VAR]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        connections: 32,
        duration: Duration::from_secs(10),
        body: vec![b'x'; 16],
        content_type: "application/octet-stream".into(),
        swap_component: None,
        swaps: 10,
        token: None,
        unique: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => args.url = value(),
            "-c" | "--connections" => args.connections = value().parse().unwrap_or_else(|_| usage()),
            "-d" | "--duration" => args.duration = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage())),
            "--body-bytes" => args.body = vec![b'x'; value().parse().unwrap_or_else(|_| usage())],
            "--content-type" => args.content_type = value(),
            "--swap-component" => args.swap_component = Some(value().into()),
            "--swaps" => args.swaps = value().parse().unwrap_or_else(|_| usage()),
            "--unique-bodies" => args.unique = true,
            "--admin-token-env" => {
                let var = value();
                args.token = Some(std::env::var(&var).unwrap_or_else(|_| {
                    eprintln!("${var} is not set");
                    std::process::exit(2)
                }))
            }
            _ => usage(),
        }
    }
    if args.url.is_empty() || args.connections == 0 {
        usage()
    }
    args
}

/// The component with a custom section appended: the same stage, a new digest.
fn variant(component: &[u8], n: usize) -> Vec<u8> {
    let name = b"stagecraft-loadgen";
    let payload = format!("swap {n}");
    let size = 1 + name.len() + payload.len();
    let mut out = component.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}

/// The digest the loaders look for after an upload, when the upload
/// started, and how long until the first response from it.
type WantedVersion = (String, Instant, Option<Duration>);

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let client =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(args.connections).build_http::<Full<Bytes>>();
    let stop = Arc::new(AtomicBool::new(false));
    // Digest the loaders should look for, and when it was first seen.
    let wanted: Arc<Mutex<Option<WantedVersion>>> = Arc::default();
    let body = Bytes::from(args.body.clone());
    // Distinct from every earlier run's bodies too, so a server's invoke
    // cache cannot answer a run from the one before.
    let run_nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());

    let mut workers = Vec::new();
    for worker in 0..args.connections {
        let (client, stop, wanted, body) = (client.clone(), stop.clone(), wanted.clone(), body.clone());
        let unique = args.unique;
        let (url, content_type) = (args.url.clone(), args.content_type.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = if unique {
                    sent += 1;
                    Bytes::from([&body[..], format!(" {run_nonce} {worker} {sent}").as_bytes()].concat())
                } else {
                    body.clone()
                };
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(&url)
                    .header("content-type", &content_type)
                    .body(Full::new(body))
                    .expect("request");
                let started = Instant::now();
                match client.request(req).await {
                    Ok(res) => {
                        let status = res.status();
                        let digest =
                            res.headers().get("x-stagecraft-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let ok = res.into_body().collect().await.is_ok();
                        tally.latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if !status.is_success() || !ok {
                            tally.non_2xx += 1;
                        }
                        if let Some(digest) = digest {
                            let mut w = wanted.lock().unwrap();
                            if let Some((want, since, seen @ None)) = w.as_mut() {
                                if *want == digest {
                                    *seen = Some(since.elapsed());
                                }
                            }
                        }
                    }
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }));
    }

    let started = Instant::now();
    let mut swap_times = Vec::new();
    if let Some(path) = &args.swap_component {
        let component = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let stage_url = args.url.trim_end_matches("/invoke").to_owned();
        let every = args.duration / (args.swaps as u32 + 1);
        for n in 0..args.swaps {
            tokio::time::sleep_until((started + every * (n as u32 + 1)).into()).await;
            let bytes = variant(&component, n);
            let mut req = Request::builder().method(Method::PUT).uri(&stage_url);
            if let Some(token) = &args.token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let upload_started = Instant::now();
            *wanted.lock().unwrap() = None;
            let res = client.request(req.body(Full::new(Bytes::from(bytes))).expect("request")).await;
            let (status, text) = match res {
                Ok(r) => {
                    let s = r.status();
                    (
                        s,
                        String::from_utf8_lossy(
                            &r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default(),
                        )
                        .into_owned(),
                    )
                }
                Err(e) => {
                    eprintln!("swap {n}: upload failed: {e}");
                    continue;
                }
            };
            if !status.is_success() {
                eprintln!("swap {n}: upload answered {status}: {text}");
                continue;
            }
            let digest = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["digest"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let uploaded = upload_started.elapsed();
            *wanted.lock().unwrap() = Some((digest, upload_started, None));
            // Wait (briefly) for the first response from the new version.
            let mut first = None;
            for _ in 0..2000 {
                if let Some((_, _, Some(t))) = wanted.lock().unwrap().as_ref() {
                    first = Some(*t);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            swap_times.push((n, uploaded, first));
        }
    }
    tokio::time::sleep_until((started + args.duration).into()).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.expect("worker");
        all.latencies_us.extend(t.latencies_us);
        all.non_2xx += t.non_2xx;
        all.errors += t.errors;
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let v = &all.latencies_us;
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    let n = all.latencies_us.len();
    println!("url           {}", args.url);
    println!("connections   {}", args.connections);
    println!("duration      {:.1} s", elapsed.as_secs_f64());
    println!("requests      {n}");
    println!("requests/s    {:.0}", n as f64 / elapsed.as_secs_f64());
    println!("latency ms    p50 {:.3}  p99 {:.3}  max {:.3}", pct(0.50), pct(0.99), pct(1.0));
    println!("non-2xx       {}", all.non_2xx);
    println!("conn errors   {}", all.errors);
    for (n, uploaded, first) in &swap_times {
        match first {
            Some(t) => println!(
                "swap {n:<2}       upload answered in {:.1} ms; first response from the new version {:.1} ms after the upload started",
                uploaded.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e3
            ),
            None => println!("swap {n:<2}       upload answered in {:.1} ms; no response from the new version seen", uploaded.as_secs_f64() * 1e3),
        }
    }
}
