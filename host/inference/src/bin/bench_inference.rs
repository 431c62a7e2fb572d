//! Dynamic batching against batch size 1, side by side in one run, on
//! tract and (when its library loads) ONNX Runtime: see
//! `stagecraft_inference::bench`. Prints calls/s, p50/p95/p99 latency and
//! the mean batch size per mode, and the ratios.
//!
//! `cargo run --release -p stagecraft-inference --bin bench_inference -- --callers 32 --seconds 5`

use stagecraft_inference::bench::{self, BatchingArgs};
use stagecraft_inference::{ort_engine, EngineChoice, EngineOptions};

fn args() -> anyhow::Result<(BatchingArgs, Vec<EngineChoice>)> {
    let mut a = BatchingArgs::default();
    let mut engines = vec![EngineChoice::Tract, EngineChoice::Ort];
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--callers" => a.callers = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--width" => a.width = value.parse()?,
            "--delay-ms" => a.delay_ms = value.parse()?,
            "--instances" => a.instances = value.parse()?,
            "--preferred" => a.preferred = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--engines" => {
                engines = value
                    .split(',')
                    .map(|e| match e {
                        "tract" => Ok(EngineChoice::Tract),
                        "ort" => Ok(EngineChoice::Ort),
                        other => anyhow::bail!("--engines: {other} is neither tract nor ort"),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => anyhow::bail!(
                "unknown flag {other} (--callers --seconds --width --delay-ms --instances --preferred 8,16 --engines tract,ort)"
            ),
        }
    }
    Ok((a, engines))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let (a, mut engines) = args()?;
    if let Err(why) = ort_engine::runtime() {
        println!("ONNX Runtime: {why}; tract only");
        engines.retain(|e| *e != EngineChoice::Ort);
    }
    let cpus = EngineOptions::from_env().cpus;
    let rows = bench::batching(&a, &engines, cpus).await?;
    bench::print_batching(&a, &rows);
    Ok(())
}
