//! `stagecraft stages`: what is loaded, as the stages describe themselves.

use crate::host::HostArgs;

pub fn run(host: &HostArgs, json: bool) -> anyhow::Result<()> {
    let runtime = host.runtime()?;
    let stages = runtime.stages();
    if json {
        let list: Vec<_> = stages
            .iter()
            .map(|s| serde_json::json!({ "info": s.info, "digest": s.digest, "origin": s.origin }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    // Where the host's segmentation import runs (--device / STAGECRAFT_DEVICE).
    println!("segmentation device: {}", host.device()?);
    let capacity = host.capacity.resolve()?;
    println!(
        "capacity: {} CPU slots (instances computing), {} in flight (instances existing){}",
        capacity.cpu_slots,
        capacity.max_in_flight,
        if capacity.park_policy == stagecraft_runtime::ParkPolicy::HoldWhileWaiting {
            "; waiting instances hold their CPU slot (--waiting-holds-cpu)"
        } else {
            "; waiting instances hold no CPU slot"
        }
    );
    for (stage, n) in &capacity.stage_limits {
        println!("  stage limit: {stage} {n} in flight");
    }
    for (stage, n) in &capacity.http_per_stage {
        println!("  outgoing HTTP: {stage} {n} requests in flight");
    }
    println!();
    if stages.is_empty() {
        println!("no stages loaded from {}", host.plugins.display());
        return Ok(());
    }
    println!("{:<20} {:<9} {:<14} {:<28} DESCRIPTION", "STAGE", "VERSION", "DIGEST", "ACCEPTS -> PRODUCES");
    for s in &stages {
        let io = format!("{} -> {}", s.info.accepts.join(","), s.info.produces.join(","));
        println!("{:<20} {:<9} {:<14} {:<28} {}", s.info.name, s.info.version, &s.digest[..12], io, s.info.description);
    }
    match runtime.models() {
        Some(models) => println!(
            "\nmodels: {} loaded from {} (see `stagecraft models`)",
            models.list().len(),
            models.dir().display()
        ),
        None => println!("\nmodels: none (no model repository; pass --models DIR)"),
    }
    Ok(())
}
