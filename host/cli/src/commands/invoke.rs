//! `stagecraft invoke`: run one stage on files, write its artifacts.

use crate::host::HostArgs;
use anyhow::Context;
use stagecraft_orchestrator::output::safe_file_name;
use stagecraft_orchestrator::{InvokeRequest, Orchestrator};
use stagecraft_runtime::{StageEvent, StageInput};
use stagecraft_scheduler::Scheduler;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn run(host: &HostArgs, stage: &str, inputs: &[PathBuf], params: &str, out: &Path) -> anyhow::Result<()> {
    let params: serde_json::Value =
        serde_json::from_str(params).with_context(|| format!("--params is not valid JSON: {params}"))?;
    if !params.is_object() {
        anyhow::bail!("--params must be a JSON object, got {params}");
    }
    let artifacts = crate::host::read_inputs(inputs)?;
    let runtime = Arc::new(host.runtime()?);
    if runtime.stage(stage).is_none() {
        let known: Vec<_> = runtime.stages().iter().map(|s| s.info.name.clone()).collect();
        anyhow::bail!("unknown stage '{stage}' (loaded: {})", known.join(", "));
    }
    // The same path as the HTTP service and pipeline steps: a scheduler task.
    let orchestrator = Orchestrator::new(runtime, Scheduler::new(host.scheduler()?), None);
    let request = InvokeRequest::default().events(|event| match event {
        StageEvent::Progress { fraction, message } => eprintln!("  {:>3.0}% {message}", fraction * 100.0),
        StageEvent::Log { level, message } => eprintln!("  [{level}] {message}"),
    });
    let started = std::time::Instant::now();
    let output = orchestrator.invoke(stage, StageInput::new(artifacts, params), request).await?;
    let elapsed = started.elapsed();

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // Names come normalised (plain, bounded, unique) from the runtime; one
    // that still cannot be written is reported and the others written.
    let mut failed = Vec::new();
    for artifact in &output.artifacts {
        let path = out.join(safe_file_name(&artifact.name));
        match std::fs::write(&path, &artifact.data) {
            Ok(()) => println!("wrote {} ({}, {} bytes)", path.display(), artifact.media_type, artifact.data.len()),
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                failed.push(artifact.name.clone());
            }
        }
    }
    println!("{} {} ran in {:.1} ms", output.stage, output.version, elapsed.as_secs_f64() * 1e3);
    println!("metadata: {}", output.metadata);
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} artifacts could not be written: {}",
            failed.len(),
            output.artifacts.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
