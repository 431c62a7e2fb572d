//! `stagecraft models`: the model repository's models, their tensors,
//! batching settings, the engine each runs on (ONNX Runtime, CUDA or
//! tract, and why), and the models that failed to load.

use crate::host::HostArgs;

pub fn run(host: &HostArgs, json: bool) -> anyhow::Result<()> {
    let Some(models) = host.models()? else {
        anyhow::bail!("no model repository: pass --models DIR (or set STAGECRAFT_MODELS)");
    };
    let list = models.list();
    if json {
        let failed: Vec<_> = models
            .failures()
            .into_iter()
            .map(|(name, error)| serde_json::json!({"name": name, "error": error}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"models": list, "failed": failed}))?);
        return Ok(());
    }
    println!("model repository: {}", models.dir().display());
    match stagecraft_inference::ort_engine::runtime() {
        Ok(rt) => println!(
            "onnx runtime: {} from {} (found by {}{})",
            rt.version,
            rt.path.display(),
            rt.found_by,
            if rt.has_cuda { "; has the CUDA provider" } else { "" }
        ),
        Err(why) => println!("onnx runtime: not loaded: {why}"),
    }
    if list.is_empty() {
        println!("no models loaded");
        return Ok(());
    }
    println!("{:<16} {:>9} {:>9} {:>8}  {:<36} OUTPUTS", "MODEL", "MAX_BATCH", "INSTANCES", "DELAY_MS", "INPUTS");
    for m in &list {
        println!(
            "{:<16} {:>9} {:>9} {:>8}  {:<36} {}",
            m.name,
            m.max_batch,
            m.instances,
            m.batch_delay_ms,
            m.inputs.join("; "),
            m.outputs.join("; ")
        );
    }
    println!("\n{:<16} {:<17} WHY", "MODEL", "ENGINE");
    for m in &list {
        println!("{:<16} {:<17} {}", m.name, m.engine_kind, m.engine);
    }
    Ok(())
}
