//! The operator console (`GET /`) in a real browser: headless Chromium
//! driven through chromedriver (WebDriver, with `fantoccini`) against a
//! server on loopback. Each test takes its page's screenshot for
//! `docs/console/` (the README shows them).
//!
//! Needs `chromium` and `chromium-driver` (Debian; `.ci/run` installs them).

use fantoccini::{Client, ClientBuilder, Locator};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use stagecraft_runtime::Runtime;
use stagecraft_server::ServerConfig;
use stagecraft_tests::http::Harness;
use stagecraft_tests::{plugins_dir, png, test_config, test_picture, test_plugins_dir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "console-admin-token";

/// A server with `noop`, `upscale` and `spin` (a 4 s deadline, so a spin
/// step ends on its own) and an admin token.
async fn server() -> Harness {
    let home = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.limits.timeout = Duration::from_secs(4);
    let rt = Runtime::new(config).unwrap();
    for name in ["noop", "upscale"] {
        rt.install_file(plugins_dir().join(format!("{name}.wasm"))).unwrap();
    }
    rt.install_file(test_plugins_dir().join("spin.wasm")).unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), home.path());
    config.admin_token = Some(TOKEN.to_owned());
    let mut h = Harness::with_config(config, Arc::new(rt)).await;
    h.home = Some(home);
    h
}

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: apt-get install chromium chromium-driver (see .ci/run)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, url: format!("http://127.0.0.1:{port}") }
}

/// A browser session: headless Chromium with a fixed window, so the
/// screenshots are alike from run to run.
async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
    });
    if let Some(binary) = binary {
        options["binary"] = json!(binary);
    }
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("starting a Chromium session")
}

/// Waits (up to 20 s) until `check` gives a value; panics with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, if there is one.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.ok(),
        Err(_) => None,
    }
}

/// Saves a screenshot as `target/console/NAME.png`; with
/// `STAGECRAFT_UPDATE_SCREENSHOTS=1` it replaces the README's copy in
/// `docs/console/` instead, so a plain test run leaves the tree clean.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if std::env::var_os("STAGECRAFT_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs/console")
    } else {
        root.join("target/console")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// A file for the browser to upload.
fn file_in(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_lists_the_stages_and_its_slots_move_while_a_job_runs() {
    let h = server().await;
    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&format!("{}/", h.base)).await.unwrap();
    // The live stream is connected and every loaded stage has a row.
    eventually("the live status", || async { (text_of(&c, "#live").await? == "live").then_some(()) }).await;
    for stage in ["noop", "upscale", "spin"] {
        eventually(&format!("a row for {stage}"), || async {
            c.find(Locator::Css(&format!("#stage-table tr[data-stage='{stage}']"))).await.ok()
        })
        .await;
    }
    // A job that computes for a while: its stage's slot turns busy, live.
    let r = h.run_pipeline(json!({ "name": "busy", "steps": [{ "name": "loop", "type": "spin" }] })).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    eventually("a busy spin slot", || async {
        let slots = c.find(Locator::Css("#stage-table tr[data-stage='spin'] .slots")).await.ok()?;
        let busy: u32 = slots.attr("data-busy").await.ok()??.parse().ok()?;
        (busy > 0).then_some(())
    })
    .await;
    eventually("the CPU slot busy", || async {
        let slots = c.find(Locator::Css("#cpu-card .slots")).await.ok()?;
        (slots.attr("data-busy").await.ok()??.parse::<u32>().ok()? > 0).then_some(())
    })
    .await;
    screenshot(&c, "overview").await;
    // The deadline stops it; the slot is free again.
    eventually("the spin slot free again", || async {
        let slots = c.find(Locator::Css("#stage-table tr[data-stage='spin'] .slots")).await.ok()?;
        (slots.attr("data-busy").await.ok()?? == "0").then_some(())
    })
    .await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_pipeline_shows_errors_at_their_line_then_runs_to_a_timeline() {
    let h = server().await;
    let files = tempfile::tempdir().unwrap();
    let picture = file_in(files.path(), "picture.png", &png(&test_picture(48, 32)));
    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&format!("{}/#/submit", h.base)).await.unwrap();
    c.wait().for_element(Locator::Css("#pipeline")).await.unwrap();

    // An unknown stage on line 5: the error names line 5, the line is marked.
    let invalid = "name: broken\nsteps:\n  - name: first\n    type: noop\n  - name: second\n    type: no_such_stage\n";
    c.execute("document.querySelector('#pipeline').value = arguments[0];", vec![json!(invalid)]).await.unwrap();
    c.find(Locator::Css("#validate")).await.unwrap().click().await.unwrap();
    let diagnostic = c.wait().for_element(Locator::Css("#diagnostics .diagnostic")).await.unwrap();
    let line: usize = diagnostic.attr("data-line").await.unwrap().unwrap().parse().unwrap();
    let text = diagnostic.text().await.unwrap();
    assert!((5..=6).contains(&line), "{text}");
    assert!(text.starts_with(&format!("line {line}, column ")), "{text}");
    assert!(text.contains("no_such_stage"), "{text}");
    let marked = c.find(Locator::Css(&format!("#source li[data-line='{line}']"))).await.unwrap();
    assert_eq!(marked.attr("class").await.unwrap().as_deref(), Some("bad"));
    screenshot(&c, "submit").await;

    // A valid three-step pipeline with an input image: it runs, and the
    // job page shows every step on the timeline and ends succeeded.
    let valid = "name: thumbs\nsettings: { parallel: true }\nsteps:\n  - name: take\n    type: noop\n  - name: big\n    type: upscale\n    input_from: take\n    params: { factor: 2 }\n  - name: bigger\n    type: upscale\n    input_from: take\n    params: { factor: 3 }\n";
    c.execute("document.querySelector('#pipeline').value = arguments[0];", vec![json!(valid)]).await.unwrap();
    c.find(Locator::Css("#input-file")).await.unwrap().send_keys(&picture.to_string_lossy()).await.unwrap();
    c.find(Locator::Css("#run")).await.unwrap().click().await.unwrap();
    eventually("the job page", || async { c.find(Locator::Css("section#job")).await.ok() }).await;
    eventually("succeeded", || async { (text_of(&c, "#job-state").await?.trim() == "succeeded").then_some(()) }).await;
    for step in ["take", "big", "bigger"] {
        let row = eventually(&format!("the row of {step}"), || async {
            c.find(Locator::Css(&format!("#timeline tr[data-step='{step}']"))).await.ok()
        })
        .await;
        assert_eq!(row.attr("data-status").await.unwrap().as_deref(), Some("succeeded"), "{step}");
    }
    // The critical path is marked, and the upscaled images are thumbnails.
    assert!(!c.find_all(Locator::Css("#timeline tr.critical")).await.unwrap().is_empty());
    let thumbnails = c.find_all(Locator::Css("#artifacts img")).await.unwrap();
    assert!(thumbnails.len() >= 2, "{} thumbnails", thumbnails.len());
    let loaded: Value = c
        .execute(
            "return [...document.querySelectorAll('#artifacts img')].every(i => i.complete && i.naturalWidth > 0);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(loaded, json!(true), "every thumbnail is a decoded image");
    screenshot(&c, "job").await;
    c.close().await.unwrap();
}

/// The `noop` component with a custom section added: the same stage, a new digest.
fn noop_v2() -> Vec<u8> {
    stagecraft_tests::noop_with_section(b"console upload")
}

async fn shown_digest(c: &Client) -> String {
    let card = c.find(Locator::Css("article.stage[data-stage='noop']")).await.unwrap();
    card.attr("data-digest").await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_needs_the_token_and_swaps_the_version_shown() {
    let h = server().await;
    let files = tempfile::tempdir().unwrap();
    let component = file_in(files.path(), "noop.wasm", &noop_v2());
    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&format!("{}/#/stages", h.base)).await.unwrap();
    if c.wait().for_element(Locator::Css("article.stage[data-stage='noop']")).await.is_err() {
        panic!("no noop card; the page says: {:?}", text_of(&c, "body").await);
    }
    let before = shown_digest(&c).await;

    // Without the token: the server's refusal is shown, nothing changes.
    c.find(Locator::Css("#component-file")).await.unwrap().send_keys(&component.to_string_lossy()).await.unwrap();
    c.find(Locator::Css("#upload")).await.unwrap().click().await.unwrap();
    let refused =
        eventually("the refusal", || async { text_of(&c, "#admin-answer").await.filter(|t| t.contains("401")) }).await;
    assert!(refused.contains("unauthorized"), "{refused}");
    assert_eq!(shown_digest(&c).await, before);

    // With the token (kept in the tab, never in the URL): swapped.
    c.find(Locator::Css("#token")).await.unwrap().send_keys(TOKEN).await.unwrap();
    c.find(Locator::Css("#token-save")).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("#component-file")).await.unwrap().send_keys(&component.to_string_lossy()).await.unwrap();
    c.find(Locator::Css("#upload")).await.unwrap().click().await.unwrap();
    eventually("the new digest shown", || async {
        let card = c.find(Locator::Css("article.stage[data-stage='noop']")).await.ok()?;
        let digest = card.attr("data-digest").await.ok()??;
        (digest != before).then_some(())
    })
    .await;
    let served: Value = h.get("/v1/stages").await.json();
    let noop = served["stages"].as_array().unwrap().iter().find(|s| s["name"] == "noop").unwrap();
    assert_eq!(shown_digest(&c).await, noop["digest"].as_str().unwrap());
    assert!(!c.current_url().await.unwrap().as_str().contains(TOKEN));
    assert_eq!(noop["previous"][0]["digest"].as_str(), Some(before.as_str()));
    screenshot(&c, "stages").await;

    // Roll back from the page: the old digest is shown again.
    c.find(Locator::Css("article.stage[data-stage='noop'] button.rollback")).await.unwrap().click().await.unwrap();
    eventually("the old digest back", || async {
        let card = c.find(Locator::Css("article.stage[data-stage='noop']")).await.ok()?;
        (card.attr("data-digest").await.ok()?? == before).then_some(())
    })
    .await;
    // Forgotten token: a rollback is refused and says so.
    c.find(Locator::Css("#token-forget")).await.unwrap().click().await.unwrap();
    let r = h.call(Method::GET, "/", &[], bytes::Bytes::new()).await;
    assert!(r.header("content-security-policy").unwrap().contains("script-src 'self'"));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_html_artifact_does_not_run_its_script() {
    let h = server().await;
    let driver = chromedriver();
    let c = browser(&driver).await;
    // An HTML input passed through `noop`: a job artifact of type text/html
    // whose script would mark the page and this origin's storage.
    let evil = "<html><body><script>document.title='pwned';localStorage.setItem('pwned','1');\
                parent.postMessage('pwned','*')</script><img src=x onerror=\"localStorage.setItem('pwned','2')\"></body></html>";
    let form = json!({
        "pipeline": "name: evil\nsteps:\n  - name: pass\n    type: noop\n",
        "files": [{ "name": "evil.html", "media_type": "text/html",
                    "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, evil) }]
    });
    let r = h.call(Method::POST, "/v1/pipelines/run", &[("content-type", "application/json")], form.to_string()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    h.wait_job(&id).await;

    c.goto(&format!("{}/#/jobs/{id}", h.base)).await.unwrap();
    let link =
        eventually("the artifact's link", || async { c.find(Locator::Css("#artifacts a[download]")).await.ok() }).await;
    let url = link.attr("href").await.unwrap().unwrap();
    // Listed as a download, never drawn inline.
    assert!(c
        .find_all(Locator::Css("#artifacts iframe, #artifacts object, #artifacts embed"))
        .await
        .unwrap()
        .is_empty());
    // Opened directly, as an operator clicking it might: nothing runs.
    let _ = c.goto(&format!("{}{url}", h.base)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.goto(&format!("{}/", h.base)).await.unwrap();
    let pwned: Value = c.execute("return [document.title, localStorage.getItem('pwned')];", vec![]).await.unwrap();
    assert_eq!(pwned, json!(["stagecraft console", null]));
    // What keeps it so: a download, a sandbox without scripts, no sniffing.
    let r = h.get(&url).await;
    assert!(r.header("content-disposition").unwrap().starts_with("attachment"));
    assert!(r.header("content-security-policy").unwrap().contains("sandbox"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    c.close().await.unwrap();
}
