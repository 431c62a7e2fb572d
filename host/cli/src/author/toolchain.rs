//! Building a stage project into a component with its language's toolchain:
//! cargo for Rust (the wasm32-wasip2 setups of `scripts/wasm-env`),
//! componentize-py for Python, componentize-js (SpiderMonkey) or
//! componentize-qjs (QuickJS) for JavaScript. The Python and JS tools come
//! from the package registries (`scripts/setup-stage-tools` pins them); the
//! guest WIT and the SDKs are the copies embedded in this binary, written
//! to the project's `.stagecraft/` folder before each build.

use super::embedded;
use super::project::{JsEngine, Lang, Project};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a build made.
pub struct Built {
    pub component: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
    /// The tool that built it, e.g. `componentize-py`.
    pub tool: &'static str,
}

/// Builds `project` into the component file `out` (written whole or not at all).
pub fn build(project: &Project, out: &Path) -> anyhow::Result<Built> {
    let started = Instant::now();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let staging = project.dir.join(".stagecraft");
    let partial = out.with_extension("wasm.partial");
    let tool = match project.lang {
        Lang::Python => build_python(project, &staging, &partial)?,
        Lang::Js => build_js(project, &staging, &partial)?,
        Lang::Rust => build_rust(project, &partial)?,
    };
    std::fs::rename(&partial, out).with_context(|| format!("moving the component to {}", out.display()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Built { component: out.to_owned(), bytes, elapsed: started.elapsed(), tool })
}

fn build_python(project: &Project, staging: &Path, out: &Path) -> anyhow::Result<&'static str> {
    let tool = find_tool("componentize-py", "py/bin/componentize-py", "pip install componentize-py==0.25.1")?;
    let wit = staging.join("wit");
    let sdk = staging.join("python-sdk");
    embedded::write_tree("wit", &wit)?;
    embedded::write_tree("python-sdk", &sdk)?;
    let module = project.entry.trim_end_matches(".py");
    let mut command = Command::new(&tool);
    command
        .current_dir(&project.dir)
        .arg("-d")
        .arg(&wit)
        .args(["-w", &project.world, "componentize", module, "-p"])
        .arg(&project.dir)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(out);
    run_tool(command, "componentize-py", project)?;
    Ok("componentize-py")
}

fn build_js(project: &Project, staging: &Path, out: &Path) -> anyhow::Result<&'static str> {
    let (name, rel, install) = match project.engine {
        JsEngine::Spidermonkey => (
            "componentize-js",
            "js/node_modules/.bin/componentize-js",
            "npm install @bytecodealliance/componentize-js@0.23.0",
        ),
        JsEngine::Quickjs => {
            ("componentize-qjs", "js/node_modules/.bin/componentize-qjs", "npm install componentize-qjs@0.4.5")
        }
    };
    let tool = find_tool(name, rel, install)?;
    let wit = staging.join("wit");
    embedded::write_tree("wit", &wit)?;
    // The engines resolve `./stagecraft.js` next to the entry: build from a
    // copy of the project with the SDK's modules beside it.
    let build = staging.join("js-build");
    if build.exists() {
        std::fs::remove_dir_all(&build).with_context(|| format!("clearing {}", build.display()))?;
    }
    for source in project.sources() {
        let rel = source.strip_prefix(&project.dir).expect("sources are under the project");
        let dest = build.join(rel);
        std::fs::create_dir_all(dest.parent().expect("a file has a parent"))?;
        std::fs::copy(&source, &dest).with_context(|| format!("copying {}", source.display()))?;
    }
    for (rel, data) in embedded::tree("js-sdk").filter(|(rel, _)| !rel.contains('/') && rel.ends_with(".js")) {
        std::fs::write(build.join(rel), data)?;
    }
    let entry = build.join(&project.entry);
    let mut command = Command::new(&tool);
    command.current_dir(&build);
    match project.engine {
        // -d http fetch-event: without it StarlingMonkey imports wasi:http
        // (for `fetch`, which a synchronous `run` cannot await) in every
        // component, and the host then treats the stage as calling out. An
        // http-stage's own imports (stagecraft-http.js) are kept.
        JsEngine::Spidermonkey => {
            command
                .arg("--wit")
                .arg(&wit)
                .args(["-n", &project.world, "-d", "http", "fetch-event", "-o"])
                .arg(out)
                .arg(&entry);
        }
        // --sync: the default QuickJS runtime uses the component-model async
        // ABI, which this host does not enable.
        JsEngine::Quickjs => {
            command
                .arg("--sync")
                .arg("-w")
                .arg(&wit)
                .args(["-n", &project.world, "-j"])
                .arg(&entry)
                .arg("--module-root")
                .arg(&build)
                .arg("-o")
                .arg(out);
        }
    }
    run_tool(command, name, project)?;
    Ok(name)
}

fn build_rust(project: &Project, out: &Path) -> anyhow::Result<&'static str> {
    let (mut command, rustflags) = rust_wasm_cargo()?;
    // Inside a stagecraft checkout, share its wasm target folder: the
    // standard library and the SDK's dependencies are built there already.
    let target_dir = source_tree()
        .map(|root| root.join("target/wasm"))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| project.dir.join("target"));
    command.current_dir(&project.dir).env("CARGO_TARGET_DIR", &target_dir).env("RUSTFLAGS", rustflags);
    run_tool(command, "cargo", project)?;
    let built = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", project.name.replace('-', "_")));
    std::fs::copy(&built, out)
        .with_context(|| format!("cargo built no {} (is the crate a cdylib?)", built.display()))?;
    Ok("cargo")
}

/// The cargo command line for wasm32-wasip2 on this machine, as
/// `scripts/wasm-env` picks it: a rustup toolchain with the target, else
/// Debian's rustc-web building std from source.
fn rust_wasm_cargo() -> anyhow::Result<(Command, String)> {
    let rustup_has_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2"));
    if rustup_has_target {
        let mut command = Command::new("cargo");
        command.args(["build", "--release", "--target", "wasm32-wasip2"]);
        return Ok((command, "-C target-feature=+simd128".into()));
    }
    let debian = Path::new("/usr/bin/rustc").is_file()
        && Path::new("/usr/lib/wasm32-wasi").is_dir()
        && Path::new("/usr/lib/llvm-22/bin/wasm-ld").is_file()
        && which("wasm-component-ld").is_some();
    anyhow::ensure!(
        debian,
        "no wasm32-wasip2 toolchain: `rustup target add wasm32-wasip2`, or run scripts/setup-wasm in a stagecraft checkout"
    );
    let mut command = Command::new("/usr/bin/cargo");
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "-Zbuild-std=std,panic_abort"])
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default()));
    Ok((command, "-L /usr/lib/wasm32-wasi -C target-feature=+simd128".into()))
}

/// Runs a build tool; on failure, shows the end of what it printed and
/// says so in one line.
fn run_tool(mut command: Command, name: &str, project: &Project) -> anyhow::Result<()> {
    // The Rust-built tools (componentize-py, wasm-component-ld) would bury
    // their error under a backtrace of their own internals.
    command.env("RUST_BACKTRACE", "0");
    let output = command.output().with_context(|| format!("cannot run {name}"))?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("  {line}");
    }
    let summary = summary_line(&lines).unwrap_or("no output");
    anyhow::bail!("{name} could not build {} ({}): {summary}", project.name, output.status)
}

/// The line that says what went wrong: the last error heading the tool
/// printed (`SyntaxError: ...`, `error[E0425]: ...`, `Error: ...`), not the
/// cause chain or the frames under it; else its last line.
fn summary_line<'a>(lines: &[&'a str]) -> Option<&'a str> {
    let heading = |line: &&&str| {
        let line = line.trim();
        let lower = line.to_ascii_lowercase();
        lower.starts_with("error:")
            || lower.starts_with("error[")
            || line.split_once(": ").is_some_and(|(kind, _)| {
                kind.ends_with("Error") && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            })
    };
    lines.iter().rev().find(heading).or(lines.last()).map(|l| l.trim())
}

/// Finds a build tool: under `$STAGECRAFT_TOOLS`, under the stagecraft
/// checkout this binary was built in (`target/stage-tools`, where
/// `scripts/setup-stage-tools` installs), else on PATH.
fn find_tool(name: &str, rel: &str, install: &str) -> anyhow::Result<PathBuf> {
    let roots = std::env::var_os("STAGECRAFT_TOOLS")
        .map(PathBuf::from)
        .into_iter()
        .chain(source_tree().map(|root| root.join("target/stage-tools")));
    for root in roots {
        let candidate = root.join(rel);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    which(name).with_context(|| {
        format!("{name} not found: run scripts/setup-stage-tools in the stagecraft checkout, or `{install}` and put {name} on PATH (or set STAGECRAFT_TOOLS)")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The stagecraft checkout whose `target/` holds this binary, if any.
pub fn source_tree() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().find(|d| d.join("Cargo.toml").is_file() && d.join("wit/stage.wit").is_file()).map(Path::to_owned)
}
