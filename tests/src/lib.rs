//! Shared fixtures for the end-to-end tests: build the plugins once per
//! test process (incremental, so fast when up to date), and share one
//! runtime with every bundled stage and test plugin loaded.

pub mod http;
pub mod slow_api;

use stagecraft_runtime::{Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repo root")
}

/// Runs `scripts/build-plugins` once per process and returns the folder of
/// bundled stage components. Set `STAGECRAFT_SKIP_PLUGIN_BUILD=1` to use
/// what is already built.
pub fn plugins_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = repo_root();
        if std::env::var_os("STAGECRAFT_SKIP_PLUGIN_BUILD").is_none() {
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/build-plugins"))
                .status()
                .expect("running scripts/build-plugins");
            assert!(status.success(), "scripts/build-plugins failed; run scripts/setup-wasm first");
        }
        root.join("target/plugins")
    })
}

/// The `stagecraft` binary: `$STAGECRAFT_BIN`, or built once per test
/// process (incremental, so quick when up to date) into target/debug.
pub fn stagecraft_bin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STAGECRAFT_BIN") {
            return bin.into();
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", "stagecraft", "--bin", "stagecraft"]).current_dir(repo_root());
        // Not the variables cargo set for this test: build scripts that watch
        // them (ring watches CARGO_MANIFEST_DIR) would rerun here, and again
        // in the next `cargo test`, recompiling rustls and all above it.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo_for_tests = name.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref());
            if set_by_cargo_for_tests {
                build.env_remove(name.as_ref());
            }
        }
        let status = build.status().expect("running cargo build -p stagecraft");
        assert!(status.success(), "cargo build -p stagecraft failed");
        repo_root().join("target/debug/stagecraft")
    })
}

/// Starts `stagecraft serve --listen 127.0.0.1:0 --plugins PLUGINS EXTRA...`
/// with `STAGECRAFT_HOME=home` and waits for the line naming its port;
/// returns the process and its base URL. The server's stderr goes on to
/// `log` (at `RUST_LOG=info`), or to this test's stderr without one.
pub fn spawn_serve(home: &Path, plugins: &Path, extra: &[&str], log: Option<&Path>) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader, Write};
    let mut command = std::process::Command::new(stagecraft_bin());
    command.args(["serve", "--listen", "127.0.0.1:0"]).args(extra).arg("--plugins").arg(plugins);
    command.env("STAGECRAFT_HOME", home).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    if log.is_some() {
        command.env("RUST_LOG", "info");
    }
    let mut child = command.spawn().expect("starting stagecraft serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = log.map(|log| std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap());
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("serving on http://").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_owned());
            }
            match &mut out {
                Some(out) => {
                    let _ = writeln!(out, "{line}");
                }
                None => eprintln!("serve: {line}"),
            }
        }
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap_or_else(|_| match log {
        Some(log) => panic!("stagecraft serve did not start (its stderr is in {})", log.display()),
        None => panic!("stagecraft serve did not start"),
    });
    (child, format!("http://{addr}"))
}

/// The misbehaving plugins (spin, hog, escape).
pub fn test_plugins_dir() -> PathBuf {
    plugins_dir();
    repo_root().join("target/test-plugins")
}

/// Runtime settings for tests: short deadlines, a modest memory cap, a
/// private cache and scratch area under target/.
pub fn test_config() -> RuntimeConfig {
    let home = repo_root().join("target/test-home");
    let mut config = RuntimeConfig {
        cache_dir: Some(home.join("cache")),
        scratch_dir: home.join("scratch"),
        ..RuntimeConfig::default()
    };
    // Fewer instance slots than a server's 1024: test binaries run several
    // runtimes side by side, each reserving its pool's address space.
    config.max_instances = 256;
    config.limits.timeout = std::time::Duration::from_secs(30);
    config.limits.memory_bytes = 256 << 20;
    config
}

/// One runtime per test process with the bundled stages and the test
/// plugins loaded. Panics listing any bundled stage that failed to load.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = Runtime::new(test_config()).expect("runtime starts");
            let report = runtime.load_dir(plugins_dir());
            assert!(report.failed.is_empty(), "bundled stages failed to load: {:?}", report.failed);
            let report = runtime.load_dir(test_plugins_dir());
            assert!(report.failed.is_empty(), "test plugins failed to load: {:?}", report.failed);
            Arc::new(runtime)
        })
        .clone()
}

/// Encodes an RGB image as PNG.
pub fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("encode png");
    out
}

/// The bundled `noop` component with a custom section holding `payload`
/// appended: the same stage, another digest (a real swap for upload tests).
pub fn noop_with_section(payload: &[u8]) -> Vec<u8> {
    let mut bytes = std::fs::read(plugins_dir().join("noop.wasm")).unwrap();
    let name = b"stagecraft-test";
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "the section's size is written as one LEB128 byte");
    bytes.extend_from_slice(&[0, size as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

/// A deterministic test picture with gradients, edges and texture.
pub fn test_picture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let checker = if (x / 8 + y / 8) % 2 == 0 { 40 } else { 0 };
        image::Rgb([
            (x * 255 / w.max(1)) as u8,
            ((y * 200 / h.max(1)) as u8).saturating_add(checker),
            (((x ^ y) & 63) as u8).saturating_add(100),
        ])
    })
}
