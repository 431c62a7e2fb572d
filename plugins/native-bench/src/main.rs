//! `stage-bench-native STAGE PARAMS_JSON RUNS FILE...`: runs a stage's
//! `Stage::run` natively — the same crate the component is built from, the
//! same params parsing, decode and encode — on the given input files, once
//! to warm up and then RUNS times, and prints one JSON line:
//! `{"stage", "runs", "median_s", "min_s", "artifacts", "output_bytes"}`.
//!
//! `stagecraft bench stages --native <this binary>` calls it with the same
//! inputs it hands the component, to show what the sandbox costs.

use stagecraft_sdk::bindings::stagecraft::stage::types::{Artifact, StageInput, StageOutput};

// The stages' own sources, compiled natively with this workspace's release
// profile (their components are built from these same files).
#[allow(dead_code, unused_imports)]
#[path = "../../stages/color_separations/src/lib.rs"]
mod color_separations;
#[allow(dead_code, unused_imports)]
#[path = "../../stages/upscale/src/lib.rs"]
mod upscale;
use std::time::Instant;

type Runner = fn(StageInput) -> Result<StageOutput, String>;

fn runner(stage: &str) -> Option<Runner> {
    fn wrap<S: stagecraft_sdk::Stage>(input: StageInput) -> Result<StageOutput, String> {
        stagecraft_sdk::run::<S>(input).map_err(|e| format!("{e:?}"))
    }
    match stage {
        "upscale" => Some(wrap::<upscale::Upscale>),
        "color_separations" => Some(wrap::<color_separations::ColorSeparations>),
        _ => None,
    }
}

fn media_type(path: &str) -> &'static str {
    match path.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: stage-bench-native STAGE PARAMS_JSON RUNS FILE...");
        std::process::exit(2);
    }
    let (stage, params, runs) = (&args[0], &args[1], args[2].parse::<usize>().unwrap_or(5).max(1));
    let Some(run) = runner(stage) else {
        eprintln!("stage-bench-native: no native build of '{stage}' (it has upscale and color_separations)");
        std::process::exit(2);
    };
    let artifacts: Vec<Artifact> = args[3..]
        .iter()
        .map(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
            let name = std::path::Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
            Artifact { name, media_type: media_type(path).to_owned(), data }
        })
        .collect();
    // The component receives its input by copy each call; so does this.
    let call = || {
        let input = StageInput { artifacts: artifacts.clone(), params: params.clone() };
        let started = Instant::now();
        let out = run(input).unwrap_or_else(|e| panic!("{stage} failed natively: {e}"));
        (started.elapsed().as_secs_f64(), out)
    };
    let (_, out) = call();
    let mut times: Vec<f64> = (0..runs).map(|_| call().0).collect();
    times.sort_by(f64::total_cmp);
    let bytes: usize = out.artifacts.iter().map(|a| a.data.len()).sum();
    println!(
        "{}",
        serde_json::json!({
            "stage": stage,
            "runs": runs,
            "median_s": times[times.len() / 2],
            "min_s": times[0],
            "artifacts": out.artifacts.len(),
            "output_bytes": bytes,
        })
    );
}
