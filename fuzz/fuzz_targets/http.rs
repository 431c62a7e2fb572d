//! The HTTP API in process: the server's router (built as `Server::start`
//! builds it, on a runtime with only the noop stage and an admin token)
//! driven with arbitrary methods, paths, queries, headers and bodies. A
//! caller can get any 4xx but never a 500, and nothing may panic or hang.
#![no_main]

use arbitrary::Arbitrary;
use axum::body::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    route: u8,
    segment: String,
    query: String,
    headers: Vec<(u8, String)>,
    body: Vec<u8>,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const HEADERS: &[&str] = &["content-type", "accept", "authorization", "if-none-match", "cache-control", "x-any"];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "text/plain",
    "application/octet-stream",
    "multipart/form-data; boundary=B",
    "multipart/form-data",
    "image/png",
];

struct Host {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _server: stagecraft_server::Server,
    _home: std::path::PathBuf,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let home = std::env::temp_dir().join(format!("stagecraft-fuzz-http-{}", std::process::id()));
        let plugins = std::env::var_os("STAGECRAFT_FUZZ_PLUGINS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
        let mut config = stagecraft_runtime::RuntimeConfig {
            cache_dir: Some(home.join("cache")),
            scratch_dir: home.join("scratch"),
            ..Default::default()
        };
        config.limits.timeout = std::time::Duration::from_secs(10);
        config.limits.memory_bytes = 256 << 20;
        let runtime = stagecraft_runtime::Runtime::new(config).unwrap();
        runtime.install_file(plugins.join("noop.wasm")).unwrap();
        let mut server_config = stagecraft_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), home.join("server"));
        server_config.admin_token = Some(TOKEN.to_owned());
        server_config.max_body_bytes = 1 << 20;
        server_config.max_component_bytes = 4 << 20;
        let server = rt.block_on(stagecraft_server::Server::start(server_config, Arc::new(runtime))).unwrap();
        let router = stagecraft_server::router(server.app.clone());
        Host { rt, router, _server: server, _home: home }
    })
}

fn path(route: u8, seg: &str) -> String {
    let name = if route & 0x80 == 0 { "noop" } else { seg };
    match route % 16 {
        0 => "/v1/stages".into(),
        1 => format!("/v1/stages/{name}"),
        2 | 3 | 4 => format!("/v1/stages/{name}/invoke"),
        5 => format!("/v1/stages/{name}/rollback"),
        6 => format!("/v1/artifacts/{seg}"),
        7 => "/v1/models".into(),
        8 | 9 | 10 => "/v1/pipelines/run".into(),
        11 => format!("/v1/jobs/{seg}"),
        12 => format!("/v1/jobs/{seg}/events"),
        13 => "/v1/status/queue".into(),
        14 => ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"][seg.len() % 4].into(),
        _ => seg.to_owned(),
    }
}

fuzz_target!(|input: Input| {
    let host = host();
    let mut uri = path(input.route, &input.segment);
    if !input.query.is_empty() {
        uri = format!("{uri}?{}", input.query);
    }
    let mut req = axum::http::Request::builder().method(METHODS[input.method as usize % METHODS.len()]).uri(uri);
    for (which, value) in &input.headers {
        let name = HEADERS[*which as usize % HEADERS.len()];
        let value = match name {
            "content-type" if which & 0x80 == 0 => CONTENT_TYPES[value.len() % CONTENT_TYPES.len()].to_owned(),
            "authorization" if which & 0x80 == 0 => format!("Bearer {TOKEN}"),
            _ => value.clone(),
        };
        req = req.header(name, value);
    }
    let Ok(req) = req.body(Body::from(input.body)) else { return };
    let (method, uri) = (req.method().clone(), req.uri().clone());
    host.rt.block_on(async {
        let res = host.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        // Event streams of live jobs last as long as the job: read a while.
        let body = tokio::time::timeout(std::time::Duration::from_secs(20), res.into_body().collect()).await;
        assert!(status != axum::http::StatusCode::INTERNAL_SERVER_ERROR, "500 for {method} {uri}: {body:?}");
    });
});
