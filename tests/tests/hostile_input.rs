//! Hostile input from callers, end to end: the real `stagecraft serve` (built
//! with cargo, as a user runs it) on a loopback port, sent pipelines and
//! params too deep, too big or too many, and bodies past the limit. Each must
//! be a 4xx whose message names the limit, never a crash and never a 500, and
//! the server must answer the next request (a real pipeline runs to the end
//! after all of them). `stagecraft run` gets the deepest file and must exit
//! non-zero with one clear line.
//!
//! The serve test prints a table (class, cases, crashes, status, message)
//! and the server's peak resident memory (`VmHWM`), the numbers quoted in
//! `docs/reliability-input.md`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use stagecraft_tests::{plugins_dir, stagecraft_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The server's body limit in these tests (`--max-body-mb`).
const MAX_BODY_MIB: usize = 8;

/// A folder with just the noop stage, so the server starts quickly.
fn noop_plugins(home: &Path) -> PathBuf {
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugins_dir().join("noop.wasm"), plugins.join("noop.wasm")).unwrap();
    plugins
}

/// A `stagecraft serve` process and where it listens.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(home: &Path, plugins: &Path) -> Self {
        let max_body = MAX_BODY_MIB.to_string();
        let (child, base) = stagecraft_tests::spawn_serve(home, plugins, &["--max-body-mb", &max_body], None);
        Self { child, base }
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(url).header("content-type", content_type);
    let res = client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) })))
}

/// `n` levels of block sequences: `- - - … x`.
fn deep_block_sequences(n: usize) -> String {
    "- ".repeat(n) + "x\n"
}

/// A pipeline whose one step's params nest `n` mappings deep.
fn deep_params_pipeline(n: usize) -> String {
    let mut params = String::from("1");
    for _ in 0..n {
        params = format!("{{a: {params}}}");
    }
    format!("name: p\nsteps:\n  - name: a\n    type: noop\n    params: {params}\n")
}

/// One hostile request: what is sent, and what the answer must say.
struct Case {
    class: &'static str,
    method: Method,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    /// Must appear in the message (or the diagnostics' text).
    names: &'static str,
}

fn run_case(class: &'static str, body: String, names: &'static str) -> Case {
    Case {
        class,
        method: Method::POST,
        path: "/v1/pipelines/run".into(),
        content_type: "application/yaml",
        body: body.into_bytes(),
        status: StatusCode::BAD_REQUEST,
        code: "invalid_pipeline",
        names,
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    // The reported crash: 5000 levels (10 KB), and the 200 KB file that
    // killed `stagecraft run` (100,000 levels); and more in between.
    for n in [65, 5000, 20_000, 100_000] {
        out.push(run_case("deep YAML block sequences", deep_block_sequences(n), "deeper than 64 levels"));
    }
    for n in [65, 10_000, 100_000] {
        out.push(run_case("deep YAML flow collections", "[".repeat(n) + &"]".repeat(n), "deeper than 64 levels"));
    }
    for n in [65, 300, 1000] {
        let maps: String = (0..n).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        out.push(run_case("deep YAML block mappings", maps, "deeper than 64 levels"));
    }
    for n in [70, 1000, 30_000] {
        out.push(run_case("deep step params", deep_params_pipeline(n), "deeper than 64 levels"));
    }
    // Aliases: depth through an anchor, and a billion laughs.
    let a = format!("a: &a {}1{}\n", "[".repeat(40), "]".repeat(40));
    let b = format!("b: {}*a{}\n", "[".repeat(40), "]".repeat(40));
    out.push(run_case("YAML alias bombs", a + &b, "deeper than 64 levels"));
    let mut laughs = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        laughs += &format!("l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); 10].join(", "));
    }
    out.push(run_case("YAML alias bombs", laughs, "YAML values"));
    // Size and count.
    out.push(run_case(
        "pipeline source over 1 MiB",
        format!("name: x\n# {}\n", "a".repeat(2 << 20)),
        "the limit is 1 MiB",
    ));
    let many: String = (0..1500).map(|i| format!("  - {{name: s{i}, type: noop}}\n")).collect();
    out.push(run_case("too many steps", format!("name: x\nsteps:\n{many}"), "more than 1000 steps"));
    let long_name = format!("name: x\nsteps:\n  - {{name: {}, type: noop}}\n", "n".repeat(100_000));
    out.push(run_case("huge names", long_name, "at most 128 characters"));
    let long_ref = format!(
        "name: x\nsteps:\n  - {{name: a, type: noop}}\n  - {{name: b, type: noop, input_from: {}}}\n",
        "r".repeat(500_000)
    );
    out.push(run_case("huge names", long_ref, "names no step"));
    let many_bad: String = (0..20_000).map(|i| format!("  - {{name: s{i}, tpye: noop}}\n")).collect();
    out.push(run_case("many errors", format!("name: x\nsteps:\n{many_bad}"), "more problem(s) not shown"));
    // The same depth in a JSON body: serde_json's recursion limit answers.
    let deep_json = "[".repeat(5000) + &"]".repeat(5000);
    out.push(Case {
        class: "deep JSON bodies",
        method: Method::POST,
        path: "/v1/pipelines/run".into(),
        content_type: "application/json",
        body: format!("{{\"pipeline\": {deep_json}}}").into_bytes(),
        status: StatusCode::BAD_REQUEST,
        code: "invalid_json",
        names: "recursion limit",
    });
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!({ "a": nested });
    }
    out.push(Case {
        class: "deep JSON bodies",
        method: Method::POST,
        path: "/v1/pipelines/run".into(),
        content_type: "application/json",
        body: json!({ "pipeline": { "name": "p", "steps": [{ "name": "a", "type": "noop", "params": nested }] } })
            .to_string()
            .into_bytes(),
        status: StatusCode::BAD_REQUEST,
        code: "invalid_pipeline",
        names: "deeper than 64 levels",
    });
    // Params of a synchronous invocation, in the query string and in a form.
    // 4000 levels: the longest a URI may be (64 KiB) allows no more.
    for n in [65, 127, 4000] {
        let params = "%7B%22a%22%3A".repeat(n) + "1" + &"%7D".repeat(n);
        out.push(Case {
            class: "deep invoke params",
            method: Method::POST,
            path: format!("/v1/stages/noop/invoke?params={params}"),
            content_type: "application/octet-stream",
            body: Vec::new(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_params",
            names: "deeper than 64 levels",
        });
    }
    let boundary = "XyZ";
    let form = |params: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{params}\r\n--{boundary}--\r\n")
            .into_bytes()
    };
    out.push(Case {
        class: "huge invoke params",
        method: Method::POST,
        path: "/v1/stages/noop/invoke".into(),
        content_type: "multipart/form-data; boundary=XyZ",
        body: form(&format!("{{\"p\": \"{}\"}}", "x".repeat(3 << 20))),
        status: StatusCode::BAD_REQUEST,
        code: "invalid_params",
        names: "the limit is 1 MiB",
    });
    out.push(Case {
        class: "deep invoke params",
        method: Method::POST,
        path: "/v1/stages/noop/invoke".into(),
        content_type: "multipart/form-data; boundary=XyZ",
        body: form(&("{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000))),
        status: StatusCode::BAD_REQUEST,
        code: "invalid_params",
        names: "deeper than 64 levels",
    });
    // Bodies past the route's limit (the server runs with 8 MiB). Just past
    // it: the server has read nearly all when it answers, so the client's
    // write does not race the answer.
    let over = (MAX_BODY_MIB << 20) + 1;
    let mut file_form =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"in\"; filename=\"a.bin\"\r\n\r\n").into_bytes();
    file_form.resize(file_form.len() + over, b'a');
    file_form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    for (path, content_type, body) in [
        ("/v1/pipelines/run", "application/yaml", vec![b'#'; over]),
        ("/v1/pipelines/run", "application/json", vec![b' '; over]),
        ("/v1/stages/noop/invoke", "application/octet-stream", vec![0; over]),
        ("/v1/stages/noop/invoke", "multipart/form-data; boundary=XyZ", file_form),
    ] {
        out.push(Case {
            class: "bodies over the limit",
            method: Method::POST,
            path: path.into(),
            content_type,
            body,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            names: "limit of 8 MiB",
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_4xx_naming_the_limit_and_the_server_lives() {
    let home = tempfile::tempdir().unwrap();
    let plugins = noop_plugins(home.path());
    let mut server = Serve::start(home.path(), &plugins);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let baseline_kib = server.peak_rss_kib();

    let cases = cases();
    let mut rows: Vec<(&str, usize, usize, String)> = Vec::new();
    for case in &cases {
        let url = format!("{}{}", server.base, case.path);
        let (status, body) = call(&client, case.method.clone(), &url, case.content_type, case.body.clone()).await;
        let crashed = !server.alive();
        assert!(!crashed, "{}: the server died", case.class);
        let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
        let text = body["error"]["details"]["text"].as_str().unwrap_or_default();
        assert_eq!((status, body["error"]["code"].as_str()), (case.status, Some(case.code)), "{}: {body}", case.class);
        assert!(
            message.contains(case.names) || text.contains(case.names),
            "{}: the answer does not name the limit ('{}'): {message} {text}",
            case.class,
            case.names
        );
        // The next request is served.
        let (health, _) = call(&client, Method::GET, &format!("{}/healthz", server.base), "text/plain", vec![]).await;
        assert_eq!(health, StatusCode::OK, "{}: no answer after it", case.class);
        let seen = if text.is_empty() { message } else { text.lines().next().unwrap_or_default().to_owned() };
        match rows.iter_mut().find(|r| r.0 == case.class) {
            Some(row) => row.1 += 1,
            None => rows.push((case.class, 1, 0, format!("{} {}: {seen}", status.as_u16(), case.code))),
        }
    }

    // After all of them, a real pipeline still runs to the end.
    let pipeline = "name: ok\nsteps:\n  - {name: a, type: noop}\n";
    let (status, body) =
        call(&client, Method::POST, &format!("{}/v1/pipelines/run", server.base), "application/yaml", pipeline.into())
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job_url = format!("{}/v1/jobs/{}", server.base, body["id"].as_str().unwrap());
    let mut state = String::new();
    for _ in 0..600 {
        let (_, job) = call(&client, Method::GET, &job_url, "text/plain", vec![]).await;
        state = job["state"].as_str().unwrap_or_default().to_owned();
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "succeeded");
    assert!(server.alive());

    let peak_kib = server.peak_rss_kib();
    eprintln!("| bad input class | cases | crashes | what the caller sees |");
    eprintln!("|---|---|---|---|");
    for (class, n, crashes, seen) in &rows {
        let seen = seen.replace('|', "\\|");
        eprintln!("| {class} | {n} | {crashes} | {} |", stagecraft_pipeline::limits::shorten(&seen, 140));
    }
    eprintln!("server VmHWM: {} MiB after start, {} MiB peak over all cases", baseline_kib / 1024, peak_kib / 1024);
}

#[test]
fn stagecraft_run_refuses_the_deepest_file_with_one_line() {
    let bin = stagecraft_bin();
    let home = tempfile::tempdir().unwrap();
    let plugins = noop_plugins(home.path());
    let file = home.path().join("deep.yaml");
    std::fs::write(&file, deep_block_sequences(100_000)).unwrap();
    let out = Command::new(bin)
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(home.path().join("out"))
        .arg("--plugins")
        .arg(&plugins)
        .env("STAGECRAFT_HOME", home.path())
        .output()
        .expect("running stagecraft run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stagecraft run accepted it: {stderr}");
    // A normal error exit (1), not a signal.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let diagnostics: Vec<&str> = stderr.lines().filter(|l| l.contains("deep.yaml:")).collect();
    assert_eq!(diagnostics.len(), 1, "{stderr}");
    assert!(diagnostics[0].ends_with(":1:129: pipeline nesting is deeper than 64 levels (the limit)"), "{stderr}");
}
