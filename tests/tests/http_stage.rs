//! `generate_http` end to end, against a real HTTP server on loopback that
//! each test starts: the host's per-stage grants (allowlist, injected
//! credentials, pooled connections, rate limit) and the stage's request
//! shapes, retries and errors.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use stagecraft_runtime::{HttpGrant, InvokeError, InvokeOptions, Runtime, StageEvent, StageInput, StageOutput};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-9f3c1e77-never-in-outputs";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
    at: Instant,
}

type Reply = Box<dyn Fn(&Seen, usize, SocketAddr) -> Response<Full<Bytes>> + Send + Sync>;

/// A real HTTP/1.1 server on 127.0.0.1, answering with `reply(request, index, own address)`.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    async fn start(reply: impl Fn(&Seen, usize, SocketAddr) -> Response<Full<Bytes>> + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let reply: Arc<Reply> = Arc::new(Box::new(reply));
        let (seen2, conns2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                conns2.fetch_add(1, Ordering::SeqCst);
                let (seen, reply) = (seen2.clone(), reply.clone());
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, reply) = (seen.clone(), reply.clone());
                    async move {
                        let at = Instant::now();
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        let request = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            authorization: parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()),
                            body,
                            at,
                        };
                        let index = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(request.clone());
                            seen.len() - 1
                        };
                        Ok::<_, std::convert::Infallible>(reply(&request, index, addr))
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, seen, connections }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn respond(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn picture_png(w: u32, h: u32) -> Vec<u8> {
    stagecraft_tests::png(&stagecraft_tests::test_picture(w, h))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An OpenAI-style success with `n` PNGs of 64x48, if the key is right.
fn openai_ok(req: &Seen) -> Response<Full<Bytes>> {
    if req.authorization.as_deref() != Some(&format!("Bearer {KEY}")) {
        return respond(401, json!({"error": {"message": "Incorrect API key provided"}}));
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    let n = body["n"].as_u64().unwrap_or(1);
    let data: Vec<Value> = (0..n).map(|_| json!({"b64_json": b64(&picture_png(64, 48))})).collect();
    respond(200, json!({"created": 1, "data": data}))
}

/// A runtime holding only `generate_http`, with these grants.
fn runtime_with(grants: HashMap<String, HttpGrant>) -> Runtime {
    let mut config = stagecraft_tests::test_config();
    config.max_instances = 16;
    config.max_memory_bytes = 512 << 20;
    config.http = grants;
    let runtime = Runtime::new(config).expect("runtime starts");
    runtime.install_file(stagecraft_tests::plugins_dir().join("generate_http.wasm")).expect("generate_http loads");
    runtime
}

fn granted(server: &Server) -> HashMap<String, HttpGrant> {
    let grant = HttpGrant::new([server.addr.to_string()]).with_header("Authorization", format!("Bearer {KEY}"));
    HashMap::from([("generate_http".to_owned(), grant)])
}

/// Invokes the stage, collecting its log and progress events.
async fn run(runtime: &Runtime, params: Value) -> (Result<StageOutput, InvokeError>, Vec<StageEvent>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = InvokeOptions::default().with_events(move |e| sink.lock().unwrap().push(e));
    let result = runtime.invoke("generate_http", StageInput::new(Vec::new(), params), options).await;
    let events = events.lock().unwrap().clone();
    (result, events)
}

/// Nothing the stage returned or said holds the key.
fn assert_no_key(result: &Result<StageOutput, InvokeError>, events: &[StageEvent]) {
    let text = match result {
        Ok(out) => format!("{} {:?}", out.metadata, out.artifacts.iter().map(|a| &a.name).collect::<Vec<_>>()),
        Err(e) => e.to_string(),
    };
    assert!(!text.contains(KEY) && !text.contains("sk-test"), "the key leaked into the result: {text}");
    let said = format!("{events:?}");
    assert!(!said.contains(KEY), "the key leaked into the stage's events: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_success_returns_pngs_with_the_host_injected_key() {
    let server = Server::start(|req, _, _| openai_ok(req)).await;
    let runtime = runtime_with(granted(&server));
    let (result, events) = run(
        &runtime,
        json!({"api": "openai", "base_url": server.url(), "prompt": "a teal teapot", "n": 2, "size": "64x48", "model": "img-test"}),
    )
    .await;
    assert_no_key(&result, &events);
    let out = result.expect("generation succeeds");
    assert_eq!(out.artifacts.len(), 2);
    for (i, artifact) in out.artifacts.iter().enumerate() {
        assert_eq!(artifact.name, format!("image-{}.png", i + 1));
        assert_eq!(artifact.media_type, "image/png");
        let img = image::load_from_memory(&artifact.data).expect("a real PNG");
        assert_eq!((img.width(), img.height()), (64, 48));
    }
    assert_eq!(out.metadata["model"], "img-test");
    assert_eq!(out.metadata["attempts"], 1);
    assert!(out.metadata["elapsed_ms"].is_u64());

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/v1/images/generations"));
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()), "the host injected the key");
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body,
        json!({"model": "img-test", "prompt": "a teal teapot", "n": 2, "size": "64x48", "response_format": "b64_json"})
    );
    assert!(!String::from_utf8_lossy(&seen[0].body).contains(KEY), "the key is not in what the plugin wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_from_the_host_environment_and_url_responses_are_downloaded() {
    let jpeg = {
        let mut out = Vec::new();
        let img = image::DynamicImage::ImageRgb8(stagecraft_tests::test_picture(40, 30));
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
        out
    };
    let server = Server::start(move |req, _, addr| {
        if req.authorization.as_deref() != Some("Bearer env-key-42") {
            return respond(401, json!({"error": {"message": "no key"}}));
        }
        match req.path.as_str() {
            "/v1/images/generations" => {
                respond(200, json!({"data": [{"url": format!("http://{addr}/files/out.jpg")}]}))
            }
            "/files/out.jpg" => Response::builder()
                .header("content-type", "image/jpeg")
                .body(Full::new(Bytes::from(jpeg.clone())))
                .unwrap(),
            _ => respond(404, json!({"error": {"message": "no such path"}})),
        }
    })
    .await;
    // The operator's environment, never the pipeline, holds the key.
    std::env::set_var("STAGECRAFT_TEST_GENERATE_HTTP_KEY", "env-key-42");
    let grant = HttpGrant::new([server.addr.to_string()])
        .with_key_from_env("generate_http", Some("STAGECRAFT_TEST_GENERATE_HTTP_KEY"))
        .unwrap();
    let runtime = runtime_with(HashMap::from([("generate_http".to_owned(), grant)]));
    let (result, events) = run(&runtime, json!({"base_url": server.url(), "prompt": "a kite", "size": "40x30"})).await;
    let out = result.expect("generation succeeds");
    assert!(!format!("{} {events:?}", out.metadata).contains("env-key-42"));
    assert_eq!(out.artifacts.len(), 1);
    assert_eq!(out.artifacts[0].media_type, "image/jpeg");
    assert_eq!(image::load_from_memory(&out.artifacts[0].data).unwrap().width(), 40);
    let paths: Vec<String> = server.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/v1/images/generations", "/files/out.jpg"]);
    assert_eq!(out.metadata["requests"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_on_the_allowlist_is_refused() {
    let server = Server::start(|req, _, _| openai_ok(req)).await;
    let other = Server::start(|req, _, _| openai_ok(req)).await;
    // Granted: `other` only.
    let runtime = runtime_with(granted(&other));
    let (result, events) = run(&runtime, json!({"base_url": server.url(), "prompt": "x", "size": "64x48"})).await;
    assert_no_key(&result, &events);
    match result {
        Err(InvokeError::InvalidInput(msg)) => {
            assert!(msg.contains(&server.addr.to_string()), "the error names the host: {msg}");
            assert!(msg.contains("allowlist"), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(server.seen().is_empty(), "nothing reached the refused host");
    assert_eq!(server.connections.load(Ordering::SeqCst), 0, "not even a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_without_a_grant_loads_but_every_request_is_refused() {
    let server = Server::start(|req, _, _| openai_ok(req)).await;
    // Another stage's grant for the very same server does not apply.
    let mut grants = granted(&server);
    let grant = grants.remove("generate_http").unwrap();
    grants.insert("generate".to_owned(), grant);
    let runtime = runtime_with(grants);
    assert!(runtime.stage("generate_http").is_some(), "a stage importing wasi:http loads without a grant");
    let (result, _) =
        run(&runtime, json!({"base_url": server.url(), "prompt": "x", "size": "64x48", "max_retries": 3})).await;
    match result {
        Err(InvokeError::InvalidInput(msg)) => {
            assert!(msg.contains(&server.addr.to_string()) && msg.contains("refused"), "{msg}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_retry_after_then_succeeds() {
    let server = Server::start(|req, index, _| {
        if index == 0 {
            let mut r = respond(429, json!({"error": {"message": "slow down"}}));
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r
        } else {
            openai_ok(req)
        }
    })
    .await;
    let runtime = runtime_with(granted(&server));
    let (result, events) =
        run(&runtime, json!({"base_url": server.url(), "prompt": "x", "size": "64x48", "backoff_ms": 10})).await;
    let out = result.expect("succeeds on the second attempt");
    assert_eq!(out.artifacts.len(), 1);
    assert_eq!(out.metadata["attempts"], 2);
    assert_eq!(out.metadata["retries"], 1);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "the server saw exactly two attempts");
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(900),
        "Retry-After: 1 was honoured (not the 10 ms backoff)"
    );
    assert!(
        events.iter().any(|e| matches!(e, StageEvent::Log { level: "warn", message } if message.contains("429"))),
        "the retry is logged: {events:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "both attempts used one pooled connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_forever_gives_up_after_max_retries() {
    let server = Server::start(|_, _, _| respond(500, json!({"error": {"message": "model overloaded"}}))).await;
    let runtime = runtime_with(granted(&server));
    let (result, _) = run(
        &runtime,
        json!({"base_url": server.url(), "prompt": "x", "size": "64x48", "max_retries": 2, "backoff_ms": 5}),
    )
    .await;
    match result {
        Err(InvokeError::Unavailable(msg)) => {
            assert!(msg.contains("gave up after 3 attempts"), "{msg}");
            assert!(msg.contains("500") && msg.contains("model overloaded"), "the server's words: {msg}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(server.seen().len(), 3, "one attempt plus two retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_invalid_input_with_the_servers_message_and_no_retry() {
    let server =
        Server::start(|_, _, _| respond(400, json!({"error": {"message": "size must be one of 256x256, 1024x1024"}})))
            .await;
    let runtime = runtime_with(granted(&server));
    let (result, _) = run(&runtime, json!({"base_url": server.url(), "prompt": "x", "size": "64x48"})).await;
    match result {
        Err(InvokeError::InvalidInput(msg)) => assert!(msg.contains("size must be one of"), "{msg}"),
        other => panic!("expected invalid input, got {other:?}"),
    }
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_form_fills_the_template_and_follows_the_response_path() {
    let server = Server::start(|req, _, _| {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        if req.path != "/api/generate" || body["input"]["text"] != "a red fox" || body["input"]["width"] != 32 {
            return respond(422, json!({"detail": format!("unexpected request {} {body}", req.path)}));
        }
        respond(200, json!({"result": {"images": [{"base64": b64(&picture_png(32, 16)), "seed": 7}]}}))
    })
    .await;
    let runtime = runtime_with(granted(&server));
    let params = json!({
        "api": "generic",
        "url": format!("{}/api/generate", server.url()),
        "body": {"input": {"text": "{{prompt}}", "width": "{{width}}", "height": "{{height}}"}},
        "response_path": "result.images.0.base64",
        "prompt": "a red fox",
        "size": "32x16",
    });
    let (result, events) = run(&runtime, params.clone()).await;
    assert_no_key(&result, &events);
    let out = result.expect("generic generation succeeds");
    assert_eq!(out.artifacts.len(), 1);
    let img = image::load_from_memory(&out.artifacts[0].data).unwrap();
    assert_eq!((img.width(), img.height()), (32, 16));
    assert_eq!(server.seen()[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));

    // A path that is not in the answer says what is there.
    let mut wrong = params;
    wrong["response_path"] = json!("output.0.b64");
    let (result, _) = run(&runtime, wrong).await;
    match result {
        Err(InvokeError::Failed(msg)) => assert!(msg.contains("no `output`") && msg.contains("result"), "{msg}"),
        other => panic!("expected a failure naming the path, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_delay_spaces_requests_of_the_stage() {
    let server = Server::start(|req, _, _| openai_ok(req)).await;
    let delay = Duration::from_millis(400);
    let mut grants = granted(&server);
    grants.get_mut("generate_http").unwrap().rate_limit_delay = delay;
    let runtime = runtime_with(grants);
    // Three invocations at once: the host, not the plugin, spaces them.
    let params = json!({"base_url": server.url(), "prompt": "x", "size": "64x48"});
    let (a, b, c) =
        tokio::join!(run(&runtime, params.clone()), run(&runtime, params.clone()), run(&runtime, params.clone()));
    for (result, _) in [a, b, c] {
        result.expect("each invocation succeeds");
    }
    let mut times: Vec<Instant> = server.seen().iter().map(|s| s.at).collect();
    assert_eq!(times.len(), 3);
    times.sort();
    for pair in times.windows(2) {
        // Measured on the server: allow for the first request's connection set-up.
        assert!(
            pair[1].duration_since(pair[0]) >= delay - Duration::from_millis(60),
            "requests {:?} apart",
            pair[1].duration_since(pair[0])
        );
    }
    assert!(server.connections.load(Ordering::SeqCst) < 3, "the pooled client reused a connection");
}

/// `examples/pipelines/hosted_generation.yaml` as an operator runs it, with
/// the hosted service replaced by the loopback server: only the service's
/// address changes (the grant names it), the file is otherwise the example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_generation_example_runs_end_to_end_through_the_grant() {
    use stagecraft_orchestrator::Orchestrator;
    use stagecraft_pipeline::{RunInput, RunOptions, RunStatus};
    use stagecraft_scheduler::{Scheduler, SchedulerConfig};

    let server = Server::start(|req, _, _| openai_ok(req)).await;
    let runtime = runtime_with(granted(&server));
    let loaded = runtime.load_dir(stagecraft_tests::plugins_dir());
    assert!(loaded.failed.is_empty(), "{:?}", loaded.failed);
    let orchestrator = Orchestrator::new(Arc::new(runtime), Scheduler::new(SchedulerConfig::default()), None);

    let example =
        std::fs::read_to_string(stagecraft_tests::repo_root().join("examples/pipelines/hosted_generation.yaml"))
            .unwrap();
    assert!(example.contains("https://api.openai.com"));
    let yaml = example.replace("https://api.openai.com", &server.url());
    let pipeline = orchestrator.load_pipeline(&yaml, "hosted_generation.yaml").unwrap_or_else(|d| panic!("{d}"));
    let outcome = orchestrator
        .run(&pipeline, RunInput::text("a teal teapot on a marble table"), RunOptions::default(), None)
        .await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded, "{:#}", outcome.report.to_json());

    let seen = server.seen();
    assert_eq!(seen.len(), 1, "one request for both images");
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["prompt"], "a teal teapot on a marble table");
    assert_eq!(body["n"], 2);
    assert_eq!(outcome.outputs["hosted"].artifacts.len(), 2);
    assert_eq!(outcome.outputs["print_2x"].artifacts.len(), 2);
    for a in &outcome.outputs["print_2x"].artifacts {
        let img = image::load_from_memory(&a.data).unwrap();
        assert_eq!((img.width(), img.height()), (128, 96), "{}", a.name);
    }
    // Three sizes for each of the two images.
    assert_eq!(outcome.outputs["socials"].artifacts.len(), 6);
    let page = &outcome.outputs["page"].artifacts[0];
    let html = String::from_utf8_lossy(&page.data);
    assert!(html.contains("Hosted generation: a teal teapot") && html.contains("data:image/png;base64,"));
    assert!(!html.contains(KEY), "the key is not in the report");
}

// ---- reuse: hosted generation is not a pure function ---------------------

/// A real `stagecraft serve` server (in process) over `runtime`, with these
/// reuse rules; its address.
async fn serve(
    runtime: Runtime,
    reuse: stagecraft_orchestrator::ReusePolicy,
) -> (stagecraft_server::Server, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let mut config = stagecraft_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), home.path());
    config.reuse = reuse;
    (stagecraft_server::Server::start(config, Arc::new(runtime)).await.unwrap(), home)
}

/// POSTs an invocation; (status, x-stagecraft-cache, x-stagecraft-cache-reason).
async fn invoke_http(addr: SocketAddr, stage: &str, query: &str) -> (StatusCode, String, String) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(format!("http://{addr}/v1/stages/{stage}/invoke{query}"))
        .body(Full::new(Bytes::from_static(b"caller input")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (cache, reason) = (header("x-stagecraft-cache"), header("x-stagecraft-cache-reason"));
    let status = response.status();
    let _ = response.into_body().collect().await;
    (status, cache, reason)
}

fn query(params: &Value) -> String {
    let text = params.to_string();
    let encoded: String = text
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("?params={encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_generation_reaches_the_api_every_time_unless_someone_opts_in() {
    use stagecraft_orchestrator::{ReusePolicy, StageReuse};
    let api = Server::start(|req, _, _| openai_ok(req)).await;
    let params = json!({"api": "openai", "base_url": api.url(), "prompt": "a cat", "size": "16x16"});
    let (server, _home) = serve(runtime_with(granted(&api)), ReusePolicy::default()).await;
    // Three takes of "a cat": three requests at the API, each answer `off`
    // and saying why.
    for _ in 0..3 {
        let (status, cache, reason) = invoke_http(server.addr, "generate_http", &query(&params)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache, "off");
        assert!(reason.contains("calls out over HTTP") && reason.contains("--reuse generate_http=always"), "{reason}");
    }
    assert_eq!(api.seen().len(), 3, "every call reached the hosted API");
    // The caller opts in: the second identical call is a hit.
    let opt_in = format!("{}&cache=true", query(&params));
    let first = invoke_http(server.addr, "generate_http", &opt_in).await;
    assert_eq!((first.0, first.1.as_str()), (StatusCode::OK, "miss"), "{first:?}");
    assert_eq!(invoke_http(server.addr, "generate_http", &opt_in).await.1, "hit");
    assert_eq!(api.seen().len(), 4);
    server.shutdown().await.unwrap();

    // An operator allows reuse for a fixed seed only.
    let reuse = ReusePolicy::default().with_stage("generate_http", StageReuse::Seeded);
    let (server, _home) = serve(runtime_with(granted(&api)), reuse).await;
    let before = api.seen().len();
    let (_, cache, reason) = invoke_http(server.addr, "generate_http", &query(&params)).await;
    assert_eq!(cache, "off");
    assert!(reason.contains("fixed `seed`"), "{reason}");
    let seeded = json!({"api": "openai", "base_url": api.url(), "prompt": "a cat", "size": "16x16", "seed": 7});
    assert_eq!(invoke_http(server.addr, "generate_http", &query(&seeded)).await.1, "miss");
    assert_eq!(invoke_http(server.addr, "generate_http", &query(&seeded)).await.1, "hit");
    assert_eq!(api.seen().len(), before + 2);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pure_stages_are_still_reused_and_steps_say_hit_miss_or_off_and_why() {
    use stagecraft_orchestrator::{Orchestrator, ResultCache};
    use stagecraft_pipeline::{RunInput, RunOptions, RunStatus};
    use stagecraft_scheduler::{Scheduler, SchedulerConfig};
    let api = Server::start(|req, _, _| openai_ok(req)).await;
    let runtime = runtime_with(granted(&api));
    runtime.install_file(stagecraft_tests::plugins_dir().join("noop.wasm")).unwrap();
    // Over HTTP, a pure stage: miss, then hit.
    let (server, _home) = serve(runtime_with(granted(&api)), Default::default()).await;
    server.app.runtime.install_file(stagecraft_tests::plugins_dir().join("noop.wasm")).unwrap();
    assert_eq!(invoke_http(server.addr, "noop", "").await.1, "miss");
    assert_eq!(invoke_http(server.addr, "noop", "").await.1, "hit");
    assert_eq!(invoke_http(server.addr, "noop", "?cache=false").await.1, "off");
    server.shutdown().await.unwrap();

    // In a pipeline: the hosted step runs every time unless `cache: true`.
    let home = tempfile::tempdir().unwrap();
    let orchestrator = Orchestrator::new(
        Arc::new(runtime),
        Scheduler::new(SchedulerConfig::default()),
        Some(ResultCache::new(home.path().join("results"))),
    );
    let params = json!({"api": "openai", "base_url": api.url(), "prompt": "a cat", "size": "16x16"});
    let yaml = format!(
        "name: takes\nsteps:\n  - {{ name: take, type: generate_http, params: {params} }}\n  \
         - {{ name: kept, type: generate_http, cache: true, params: {params} }}\n  \
         - {{ name: copy, type: noop, input_from: take }}\n"
    );
    let pipeline = orchestrator.load_pipeline(&yaml, "takes.yaml").unwrap_or_else(|d| panic!("{d}"));
    let mut states = Vec::new();
    let mut reports = String::new();
    for _ in 0..2 {
        let outcome = orchestrator.run(&pipeline, RunInput::default(), RunOptions::default(), None).await;
        assert_eq!(outcome.report.status, RunStatus::Succeeded);
        let report = outcome.report.to_json();
        reports += &report.to_string();
        let cache_of = |step: &str| {
            let s = report["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap().clone();
            (s["execution"]["cache"].as_str().unwrap().to_owned(), s["execution"]["cache_off_reason"].clone())
        };
        states.push([cache_of("take"), cache_of("kept"), cache_of("copy")]);
    }
    // take: off both times (with the reason); kept: miss, then hit; copy
    // (pure): miss, then hit, since this API answers the same bytes.
    assert_eq!(states[0][0].0, "off");
    assert!(states[0][0].1.as_str().unwrap().contains("calls out over HTTP"), "{:?}", states[0][0]);
    assert_eq!([&states[0][1].0, &states[1][1].0], ["miss", "hit"]);
    assert_eq!(states[1][0].0, "off");
    assert_eq!([&states[0][2].0, &states[1][2].0], ["miss", "hit"]);
    assert_eq!(api.seen().len(), 3, "take ran twice, kept once");
    // The grant's key is the host's: not in any cache key or report.
    assert!(reports.contains("cache_key") && !reports.contains(KEY));
}
