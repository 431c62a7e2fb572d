//! Stages written in Python and JavaScript, end to end: the examples that
//! `scripts/build-plugins` builds with componentize-py, componentize-js
//! (SpiderMonkey) and componentize-qjs (QuickJS) load beside the Rust
//! stages, run in one pipeline with them, refuse bad input with the
//! stage's own message, show a Python exception's message, hot-swap under
//! load; and the author's loop (`stagecraft new`, `build`, `dev`, `push`)
//! works for every language.
//!
//! They need the stage tools (`scripts/setup-stage-tools`, which `.ci/run`
//! runs); without them the tests fail saying so.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use stagecraft_runtime::{Artifact, Determinism, InvokeError, InvokeOptions, Runtime, StageInput};
use stagecraft_server::ServerConfig;
use stagecraft_tests::http::{Api, Harness};
use stagecraft_tests::{plugins_dir, png, repo_root, stagecraft_bin, test_config, test_picture};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const GUEST_STAGES: &[&str] = &["caption_http", "thumbnail_py", "echo_py", "report_js", "echo_js", "echo_qjs"];
const TOKEN: &str = "guest-admin-token";

/// The folder of built Python and JS examples (after build-plugins ran).
fn guest_dir() -> PathBuf {
    plugins_dir();
    let dir = repo_root().join("target/guest-plugins");
    for stage in GUEST_STAGES {
        assert!(
            dir.join(format!("{stage}.wasm")).is_file(),
            "{stage}.wasm is not in {}: run scripts/setup-stage-tools, then scripts/build-plugins",
            dir.display()
        );
    }
    dir
}

/// One runtime for the tests of this file: every guest example and the
/// bundled `generate` (the Rust stage of the mixed pipeline).
fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = Runtime::new(test_config()).expect("runtime starts");
            let report = runtime.load_dir(guest_dir());
            assert!(report.failed.is_empty(), "guest stages failed to load: {:?}", report.failed);
            runtime.install_file(plugins_dir().join("generate.wasm")).unwrap();
            Arc::new(runtime)
        })
        .clone()
}

async fn invoke(stage: &str, artifacts: Vec<Artifact>, params: Value) -> Result<Vec<Artifact>, InvokeError> {
    let input = StageInput::new(artifacts, params);
    runtime().invoke(stage, input, InvokeOptions::default()).await.map(|out| out.artifacts)
}

fn picture(w: u32, h: u32) -> Artifact {
    Artifact::new("picture.png", "image/png", png(&test_picture(w, h)))
}

#[tokio::test]
async fn python_and_javascript_stages_load_beside_rust_ones_and_describe_their_params() {
    let rt = runtime();
    for stage in GUEST_STAGES {
        assert!(rt.stage(stage).is_some(), "{stage} is not loaded");
    }
    let thumbnail = rt.stage("thumbnail_py").unwrap();
    let schema = &thumbnail.info.params_schema;
    assert_eq!(schema["properties"]["max_side"]["type"], "integer", "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    let report = rt.stage("report_js").unwrap();
    assert!(report.info.params_schema["properties"]["format"]["enum"].is_array(), "{}", report.info.params_schema);
    // A JS reporter imports no outgoing HTTP, so its results may be reused;
    // the Python adapter for a hosted model does, so its are not.
    assert_eq!(report.determinism, Determinism::Pure);
    assert_eq!(thumbnail.determinism, Determinism::Pure);
    assert_ne!(rt.stage("caption_http").unwrap().determinism, Determinism::Pure);
}

#[tokio::test]
async fn each_language_runs_the_same_small_stage() {
    let payload = Artifact::new("data.bin", "application/octet-stream", vec![7u8; 1000]);
    for stage in ["echo_py", "echo_js", "echo_qjs"] {
        let out = runtime()
            .invoke(stage, StageInput::new(vec![payload.clone()], json!({})), InvokeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{stage}: {e}"));
        assert_eq!(out.artifacts.len(), 1, "{stage}");
        assert_eq!(out.artifacts[0].data, payload.data, "{stage} changed its input");
        let meta = &out.metadata;
        assert_eq!(meta["count"], 1, "{stage}: {meta}");
        assert_eq!(meta["bytes"], 1000, "{stage}: {meta}");
    }
}

#[tokio::test]
async fn a_python_stage_makes_real_thumbnails() {
    let out =
        invoke("thumbnail_py", vec![picture(200, 100)], json!({ "max_side": 50, "grayscale": true })).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].media_type, "image/png");
    let img = image::load_from_memory(&out[0].data).expect("a PNG the image crate decodes");
    assert_eq!((img.width(), img.height()), (50, 25));
    // Grayscale: every pixel's channels agree.
    let rgb = img.to_rgb8();
    assert!(rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    // The box filter averages: the thumbnail's mean matches the original's.
    let original = test_picture(200, 100);
    let luma = |p: &image::Rgb<u8>| p[0] as f64 * 0.299 + p[1] as f64 * 0.587 + p[2] as f64 * 0.114;
    let mean_original = original.pixels().map(luma).sum::<f64>() / original.pixels().len() as f64;
    let mean_thumb = rgb.pixels().map(|p| p[0] as f64).sum::<f64>() / rgb.pixels().len() as f64;
    assert!((mean_original - mean_thumb).abs() < 4.0, "{mean_original} vs {mean_thumb}");
}

#[tokio::test]
async fn bad_input_is_the_stages_own_invalid_input_message() {
    let cases: Vec<(&str, Vec<Artifact>, Value, &str)> = vec![
        ("thumbnail_py", vec![picture(10, 10)], json!({ "max_side": 3 }), "max_side"),
        ("thumbnail_py", vec![picture(10, 10)], json!({ "max_sides": 30 }), "max_sides"),
        ("thumbnail_py", vec![Artifact::new("x.png", "image/png", b"not a png".to_vec())], json!({}), "x.png"),
        ("report_js", vec![picture(4, 4)], json!({ "format": "xml" }), "format"),
        ("report_js", vec![picture(4, 4)], json!({ "title": 5 }), "title"),
        ("echo_qjs", vec![], json!({ "extra": 1 }), "extra"),
    ];
    for (stage, artifacts, params, needle) in cases {
        match invoke(stage, artifacts, params.clone()).await {
            Err(InvokeError::InvalidInput(message)) => {
                assert!(message.contains(needle), "{stage} {params}: {message:?} does not name {needle}")
            }
            other => panic!("{stage} {params}: expected invalid input, got {other:?}"),
        }
    }
}

/// A stage project written by `stagecraft new` into a temp folder.
fn new_project(parent: &Path, name: &str, lang: &str, extra: &[&str]) -> PathBuf {
    let dir = parent.join(name);
    let out = Command::new(stagecraft_bin())
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(&dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "stagecraft new: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// `stagecraft build DIR`; returns the component.
fn build(dir: &Path) -> PathBuf {
    let out = Command::new(stagecraft_bin()).arg("build").arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stagecraft build: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", stdout.trim());
    // "built NAME (Lang, tool) -> PATH (SIZE) in SECONDS"
    let path = stdout.split(" -> ").nth(1).and_then(|rest| rest.rsplit_once(" (")).map(|(path, _)| path);
    let path = PathBuf::from(path.unwrap_or_else(|| panic!("unexpected build output: {stdout}")));
    assert!(path.is_file(), "{} is not there", path.display());
    path
}

/// A Rust stage made inside a Cargo workspace (as `plugins/stages/NAME` of
/// the checkout) is a member of it: the workspace still loads, and sees it.
#[test]
fn a_rust_stage_made_inside_a_workspace_joins_it() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("Cargo.toml"), "[workspace]\nresolver = \"2\"\nmembers = [\"stages/*\"]\n").unwrap();
    let dir = new_project(&ws.path().join("stages"), "joined", "rust", &[]);
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("[workspace]") && !manifest.contains("[profile"), "{manifest}");
    assert!(!dir.join("Cargo.lock").exists(), "a member has the workspace's lock file");
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the workspace no longer loads: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&str> =
        metadata["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(members, ["joined"]);
    let sdk = metadata["packages"][0]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "stagecraft-sdk")
        .and_then(|d| d["path"].as_str())
        .map(PathBuf::from)
        .unwrap();
    assert_eq!(sdk.canonicalize().unwrap(), repo_root().join("plugins/sdk").canonicalize().unwrap());
}

#[tokio::test]
async fn new_writes_a_project_that_builds_and_runs_in_every_language() {
    let parent = tempfile::tempdir().unwrap();
    let rt = Runtime::new(test_config()).unwrap();
    for (name, lang, extra) in [
        ("new_py", "python", &[][..]),
        ("new_js", "js", &[]),
        ("new_qjs", "js", &["--quickjs"]),
        ("new_rs", "rust", &[]),
    ] {
        let dir = new_project(parent.path(), name, lang, extra);
        let component = build(&dir);
        let version = rt.install_file(&component).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(version.info.name, name);
        let input = match lang {
            // The Rust template brightens images; the others describe what they get.
            "rust" => StageInput::new(vec![picture(8, 8)], json!({ "amount": 10 })),
            _ => StageInput::new(vec![picture(8, 8)], json!({})),
        };
        let out = rt.invoke(name, input, InvokeOptions::default()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!out.artifacts.is_empty(), "{name} produced nothing");
    }
    // A second `new` into the same folder refuses and leaves it alone.
    let again = Command::new(stagecraft_bin())
        .args(["new", "new_py", "--lang", "python", "--dir"])
        .arg(parent.path().join("new_py"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

/// Writes a stage project by hand: its manifest and one source file.
fn write_project(parent: &Path, name: &str, manifest: &str, file: &str, source: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stagecraft.toml"), manifest).unwrap();
    std::fs::write(dir.join(file), source).unwrap();
    dir
}

const RAISES_PY: &str = r#"
from dataclasses import dataclass
from stagecraft_sdk import Input, Output, stage


@dataclass
class Params:
    divisor: int = 0


def ratio(a, b):
    return a / b


def run(input: Input[Params]) -> Output:
    return Output().meta("ratio", ratio(1, input.params.divisor))


Stage = stage(run, Params, name="raises_py", version="0.1.0", description="Divides one by its param",
              accepts=["*/*"], produces=["application/json"])
"#;

const THROWS_JS: &str = r#"
import { defineStage } from "./stagecraft.js";

function lookup(table, key) {
  return table[key].value;
}

export const stage = defineStage({
  name: "NAME",
  version: "0.1.0",
  description: "Looks up a missing key",
  params: { type: "object", properties: {}, additionalProperties: false },
  accepts: ["*/*"],
  produces: ["*/*"],
  run(input) {
    return { artifacts: [], metadata: { value: lookup({}, "missing") } };
  },
});
"#;

#[tokio::test]
async fn a_python_exception_and_a_js_throw_reach_the_error_with_their_message() {
    let parent = tempfile::tempdir().unwrap();
    let rt = Runtime::new(test_config()).unwrap();
    let py = write_project(
        parent.path(),
        "raises_py",
        "[stage]\nname = \"raises_py\"\nlang = \"python\"\n",
        "app.py",
        RAISES_PY,
    );
    let mut projects = vec![("raises_py", py, vec!["ZeroDivisionError", "division by zero", "app.py"])];
    for (name, engine) in [("throws_js", "spidermonkey"), ("throws_qjs", "quickjs")] {
        let manifest = format!("[stage]\nname = \"{name}\"\nlang = \"js\"\nengine = \"{engine}\"\n");
        let dir = write_project(parent.path(), name, &manifest, "app.js", &THROWS_JS.replace("NAME", name));
        projects.push((name, dir, vec!["TypeError", "lookup"]));
    }
    for (name, dir, needles) in projects {
        rt.install_file(build(&dir)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let err = rt.invoke(name, StageInput::new(vec![], json!({})), InvokeOptions::default()).await.unwrap_err();
        let InvokeError::Failed(message) = &err else { panic!("{name}: expected a stage failure, got {err:?}") };
        for needle in needles {
            assert!(message.contains(needle), "{name}: {message:?} does not say {needle:?}");
        }
    }
}

#[tokio::test]
async fn a_build_error_is_one_clear_line_and_a_missing_project_says_how_to_start_one() {
    let parent = tempfile::tempdir().unwrap();
    let dir = write_project(
        parent.path(),
        "broken_py",
        "[stage]\nname = \"broken_py\"\nlang = \"python\"\n",
        "app.py",
        "def run(:\n",
    );
    let out = Command::new(stagecraft_bin()).arg("build").arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: componentize-py could not build broken_py"), "{stderr}");
    // The line names the author's mistake, not the tool's backtrace.
    assert!(last.ends_with("SyntaxError: invalid syntax (app.py, line 1)"), "{stderr}");
    assert!(!dir.join("target/broken_py.wasm").exists(), "a failed build left a component behind");

    // Fixed, and built by a relative path as an author types it.
    std::fs::write(dir.join("app.py"), "from stagecraft_sdk import Output, stage\n\ndef run(input):\n    return Output()\n\nStage = stage(run, None, name=\"broken_py\", version=\"0.1.0\")\n").unwrap();
    let out = Command::new(stagecraft_bin()).current_dir(parent.path()).args(["build", "broken_py"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("target/broken_py.wasm").is_file());

    let out = Command::new(stagecraft_bin()).arg("build").arg(parent.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("stagecraft new NAME --lang"));
}

fn server_config(home: &Path) -> ServerConfig {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), home);
    config.admin_token = Some(TOKEN.to_owned());
    config
}

/// `echo_py` built again as another version (its source with the version changed).
fn echo_py_v2(parent: &Path) -> Vec<u8> {
    let dir = copy_example("lang-bench/python", parent);
    let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
    assert!(app.contains("\"0.1.0\""), "echo_py's version moved; update this test");
    std::fs::write(dir.join("app.py"), app.replace("\"0.1.0\"", "\"0.2.0\"")).unwrap();
    std::fs::read(build(&dir)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_stage_hot_swaps_under_load_and_drops_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::with_config(server_config(home.path()), runtime()).await);
    let parent = tempfile::tempdir().unwrap();
    let v2 = echo_py_v2(parent.path());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..4 {
        let (h, stop) = (h.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Distinct bodies: each runs an instance (no answer from the invoke cache).
                let body = format!("load {task} {}", versions.len()).into_bytes();
                let r = h.invoke("echo_py", "", "text/plain", body).await;
                assert!(r.status.is_success(), "{}: {}", r.status, r.text());
                versions.push(r.header("x-stagecraft-version").unwrap().to_owned());
            }
            versions
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let auth = format!("Bearer {TOKEN}");
    let r = h.call(Method::PUT, "/v1/stages/echo_py", &[("authorization", &auth)], v2).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["version"], "0.2.0");
    let after = h.invoke("echo_py", "", "text/plain", b"after".to_vec()).await;
    assert_eq!(after.header("x-stagecraft-version"), Some("0.2.0"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for task in load {
        all.extend(task.await.unwrap());
    }
    assert!(all.iter().all(|v| v == "0.1.0" || v == "0.2.0"), "{all:?}");
    assert!(all.contains(&"0.1.0".to_owned()) && all.contains(&"0.2.0".to_owned()), "{all:?}");
    let listed = h.get("/v1/stages").await.json();
    let echo = listed["stages"].as_array().unwrap().iter().find(|s| s["name"] == "echo_py").unwrap().clone();
    assert_eq!(echo["version"], "0.2.0");
}

#[test]
fn the_polyglot_pipeline_runs_rust_python_and_javascript_stages_together() {
    let out = tempfile::tempdir().unwrap();
    let plugins = std::env::join_paths([plugins_dir().to_owned(), guest_dir()]).unwrap();
    let run = Command::new(stagecraft_bin())
        .arg("run")
        .arg(repo_root().join("examples/pipelines/polyglot.yaml"))
        .args(["--input", "a teal robot", "--json", "--out"])
        .arg(out.path())
        .arg("--plugins")
        .arg(&plugins)
        // The compiled components of the other tests.
        .arg("--home")
        .arg(repo_root().join("target/test-home"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for step in ["art", "small", "gray", "report"] {
        assert!(names.contains(&step), "{names:?}");
    }
    assert!(steps.iter().all(|s| s["status"] == "succeeded"), "{report}");
    // The JavaScript report saw the Rust image and both Python thumbnails.
    let report_json = find_file(out.path(), "report.json").expect("report_js wrote report.json");
    let rows: Value = serde_json::from_slice(&std::fs::read(report_json).unwrap()).unwrap();
    let text = rows.to_string();
    let widths: Vec<u64> = collect_numbers(&rows, "width");
    assert!(widths.contains(&256) && widths.contains(&64) && widths.contains(&96), "{text}");
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

fn collect_numbers(value: &Value, key: &str) -> Vec<u64> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| if k == key { v.as_u64().into_iter().collect() } else { collect_numbers(v, key) })
            .collect(),
        Value::Array(items) => items.iter().flat_map(|v| collect_numbers(v, key)).collect(),
        _ => Vec::new(),
    }
}

/// Reads `stagecraft dev`'s stdout and stderr lines on two threads.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    for stream in [stdout, stderr] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("dev: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// The next line containing `needle` (panics after `timeout`).
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with {needle:?} within {timeout:?}"),
        }
    }
}

/// Kills the child when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Invokes `stage` on a small PNG (the JS template works on images).
async fn http_invoke(base: &str, stage: &str, _label: &[u8]) -> (u16, Value) {
    let r = Api::new(base).invoke(stage, "?name=picture.png", "image/png", picture(16, 16).data).await;
    (r.status.as_u16(), r.json())
}

#[tokio::test]
async fn dev_rebuilds_on_save_and_swaps_the_new_version_in() {
    let parent = tempfile::tempdir().unwrap();
    for (name, lang, extra) in [("dev_py", "python", &[][..]), ("dev_qjs", "js", &["--quickjs"][..])] {
        let dir = new_project(parent.path(), name, lang, extra);
        let mut child = Command::new(stagecraft_bin())
            .arg("dev")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0", "--plugins", "no-bundled-stages-here", "--home"])
            .arg(parent.path().join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        let _child = KillOnDrop(child);
        let first = wait_for(&lines, "dev server on http://", Duration::from_secs(60));
        let base = first.split("dev server on ").nth(1).unwrap().split(';').next().unwrap().to_owned();
        wait_for(&lines, " live: built in ", Duration::from_secs(120));
        let (status, answer) = http_invoke(&base, name, b"hello").await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["version"], "0.1.0", "{answer}");

        // The author saves a change: a new version number.
        let entry = if lang == "python" { "app.py" } else { "app.js" };
        let source = std::fs::read_to_string(dir.join(entry)).unwrap();
        assert!(source.contains("\"0.1.0\""), "the {lang} template's version moved; update this test");
        let saved = Instant::now();
        std::fs::write(dir.join(entry), source.replace("\"0.1.0\"", "\"0.1.1\"")).unwrap();
        let live = wait_for(&lines, "0.1.1 (digest", Duration::from_secs(120));
        eprintln!("{name}: edit to live in {:.1} s ({live})", saved.elapsed().as_secs_f64());
        let (status, answer) = http_invoke(&base, name, b"hello").await;
        assert_eq!((status, answer["version"].as_str()), (200, Some("0.1.1")), "{answer}");
        // Each invocation is printed, with the stage and its version.
        // (Field names may come wrapped in colour codes: match the values.)
        let printed = wait_for(&lines, "invocations", Duration::from_secs(10));
        assert!(printed.contains(name) && printed.contains("0.1.1"), "{printed}");

        // A broken save keeps the last good version live.
        std::fs::write(dir.join(entry), "this is not code (\n").unwrap();
        wait_for(&lines, "build failed, the previous version stays live", Duration::from_secs(120));
        let (status, answer) = http_invoke(&base, name, b"hello").await;
        assert_eq!((status, answer["version"].as_str()), (200, Some("0.1.1")), "{answer}");
    }
}

/// `stagecraft push COMPONENT --server BASE` with `token`, off the async
/// threads (the server under test runs in this process).
async fn push(component: PathBuf, base: String, token: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(stagecraft_bin())
            .arg("push")
            .arg(&component)
            .args(["--server", &base])
            .env("STAGECRAFT_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_uploads_a_version_and_prints_what_the_server_serves() {
    let home = tempfile::tempdir().unwrap();
    let h = Harness::with_config(server_config(home.path()), runtime()).await;
    let component = guest_dir().join("echo_qjs.wasm");
    let out = push(component.clone(), h.base.clone(), TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("pushed echo_qjs 0.1.0 (digest "), "{stdout}");
    assert!(stdout.contains("\"params_schema\""), "{stdout}");

    // A wrong token: one line saying the server refused it.
    let out = push(component, h.base.clone(), "wrong").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("the server refused echo_qjs: 401"), "{stderr}");
}

/// The per-language benchmark (one table, one run): the same small stage
/// (return the inputs) in Rust (`noop`), Python (`echo_py`), JavaScript on
/// SpiderMonkey (`echo_js`) and on QuickJS (`echo_qjs`). Run with
/// `cargo test --workspace --test guest_stages -- --ignored --nocapture bench_languages`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: prints a table"]
async fn bench_languages() {
    let work = tempfile::tempdir().unwrap();
    // (label, stage, project to rebuild: the example, or a new Rust project)
    // The Rust edit is made in a new project (`bench_rs`): its first build
    // is what the server runs before the edit, as the examples' are.
    let rust_project = new_project(work.path(), "bench_rs", "rust", &[]);
    let rust_before_edit = build(&rust_project);
    let cases = [
        ("Rust", "noop", plugins_dir().join("noop.wasm"), rust_project, "src/lib.rs", Some(rust_before_edit)),
        (
            "Python",
            "echo_py",
            guest_dir().join("echo_py.wasm"),
            copy_example("lang-bench/python", work.path()),
            "app.py",
            None,
        ),
        (
            "JS SpiderMonkey",
            "echo_js",
            guest_dir().join("echo_js.wasm"),
            copy_example("lang-bench/js", work.path()),
            "app.js",
            None,
        ),
        (
            "JS QuickJS",
            "echo_qjs",
            guest_dir().join("echo_qjs.wasm"),
            copy_example("lang-bench/qjs", work.path()),
            "app.js",
            None,
        ),
    ];
    let mut rows = Vec::new();
    for (label, stage, component, project, entry, before_edit) in cases {
        let size = std::fs::metadata(&component).unwrap().len();
        // An edit: a comment line more, then the build that makes the component.
        let source = project.join(entry);
        let text = std::fs::read_to_string(&source).unwrap();
        let comment = if entry.ends_with(".py") { "#" } else { "//" };
        std::fs::write(&source, format!("{text}\n{comment} edited\n")).unwrap();
        let started = Instant::now();
        let rebuilt = build(&project);
        let rebuild = started.elapsed();

        // Compile with a cold cache, then load again from the cache.
        let cache = work.path().join(format!("cache-{stage}"));
        let config = || {
            let mut c = test_config();
            c.cache_dir = Some(cache.clone());
            c
        };
        let rt = Runtime::new(config()).unwrap();
        let started = Instant::now();
        rt.install_file(&component).unwrap();
        let cold = started.elapsed();
        let rt = Arc::new(Runtime::new(config()).unwrap());
        let started = Instant::now();
        rt.install_file(&component).unwrap();
        let cached = started.elapsed();

        // The server runs as `stagecraft dev`'s does: with the function
        // cache, filled by compiling what runs before the edit.
        let dev_rt = {
            let mut c = test_config();
            c.cache_dir = Some(work.path().join(format!("dev-cache-{stage}")));
            c.function_cache_bytes = Some(256 << 20);
            Arc::new(Runtime::new(c).unwrap())
        };
        dev_rt.install_file(before_edit.as_ref().unwrap_or(&component)).unwrap();
        if before_edit.is_some() {
            dev_rt.install_file(&component).unwrap();
        }

        // Instantiate + call, one at a time.
        let payload = Artifact::new("data.bin", "application/octet-stream", vec![1u8; 1024]);
        let mut calls = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            rt.invoke(stage, StageInput::new(vec![payload.clone()], json!({})), InvokeOptions::default())
                .await
                .unwrap();
            calls.push(started.elapsed().as_secs_f64() * 1e3);
        }
        calls.sort_by(f64::total_cmp);
        let p50 = calls[calls.len() / 2];
        let p99 = calls[calls.len() * 99 / 100];

        // Calls per second over HTTP: 8 clients for 3 s, distinct bodies.
        let home = tempfile::tempdir().unwrap();
        let mut config = server_config(home.path());
        config.invoke_cache_bytes = 0;
        let h = Arc::new(Harness::with_config(config, dev_rt).await);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut clients = Vec::new();
        for client in 0..8 {
            let h = h.clone();
            clients.push(tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let r = h.invoke(stage, "", "text/plain", format!("{client} {done}").into_bytes()).await;
                    assert!(r.status.is_success(), "{}", r.text());
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for c in clients {
            total += c.await.unwrap();
        }
        let per_sec = total as f64 / 3.0;

        // Edit to live: the rebuild above plus swapping it into the server.
        let live = rebuilt.file_stem().unwrap().to_str().unwrap();
        let bytes = std::fs::read(&rebuilt).unwrap();
        let auth = format!("Bearer {TOKEN}");
        let started = Instant::now();
        let r = h.call(Method::PUT, &format!("/v1/stages/{live}"), &[("authorization", &auth)], bytes).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let swap = started.elapsed();
        rows.push((label, stage, size, rebuild, cold, cached, p50, p99, per_sec, rebuild + swap));
    }
    let rust_p50 = rows[0].6;
    println!();
    println!("| language | stage | size | build after an edit | compile (cold cache) | load (cached) | call p50 | call p99 | calls/s over HTTP (8 clients) | edit to live (build + swap, as `stagecraft dev`) | p50 vs Rust |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, stage, size, rebuild, cold, cached, p50, p99, per_sec, live) in &rows {
        println!(
            "| {label} | `{stage}` | {:.2} MB | {:.1} s | {:.2} s | {:.0} ms | {p50:.2} ms | {p99:.2} ms | {per_sec:.0} | {:.1} s | {:.1}x |",
            *size as f64 / 1e6,
            rebuild.as_secs_f64(),
            cold.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            live.as_secs_f64(),
            p50 / rust_p50
        );
    }
}

/// A copy of `examples/<rel>` to build in place.
fn copy_example(rel: &str, work: &Path) -> PathBuf {
    let src = repo_root().join("examples").join(rel);
    let dir = work.join(rel.replace('/', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    dir
}
