//! `stagecraft bench pipeline`: how close the scheduler and the DAG engine
//! get to the best possible makespan. Pipelines of `burn` steps (a test
//! stage doing a known amount of CPU work) in wide, deep and mixed shapes
//! are run in parallel and one step at a time, side by side, and compared
//! with the lower bound `max(critical path, total work / cores)`. The
//! bound is taken from the step durations measured in the sequential run
//! just before (same machine, same moment), so a busy machine moves both.

use crate::host::HostArgs;
use anyhow::Context;
use stagecraft_orchestrator::Orchestrator;
use stagecraft_pipeline::{RunInput, RunOptions, RunStatus};
use stagecraft_runtime::{InvokeOptions, StageInput};
use stagecraft_scheduler::{Scheduler, SchedulerConfig};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct PipelineBenchArgs {
    /// Folder holding the `burn` test component.
    #[arg(long, default_value = "target/test-plugins")]
    pub test_plugins: PathBuf,
    /// Runs of each shape and mode (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// A step of a synthetic pipeline: its cost and what it waits for.
struct Node {
    cost_ms: u64,
    deps: Vec<usize>,
}

fn shapes() -> Vec<(&'static str, Vec<Node>)> {
    let wide = (0..16).map(|_| Node { cost_ms: 100, deps: vec![] }).collect();
    let deep = (0..8).map(|i| Node { cost_ms: 50, deps: if i == 0 { vec![] } else { vec![i - 1] } }).collect();
    // Fan out from one source to eight branches of varied cost, then join.
    let mut diamond = vec![Node { cost_ms: 60, deps: vec![] }];
    for cost in [200, 150, 120, 100, 80, 60, 40, 30] {
        diamond.push(Node { cost_ms: cost, deps: vec![0] });
    }
    diamond.push(Node { cost_ms: 60, deps: (1..=8).collect() });
    // Four independent chains of different lengths.
    let mut chains = Vec::new();
    for len in [6usize, 4, 3, 2] {
        let start = chains.len();
        for j in 0..len {
            chains.push(Node { cost_ms: 60, deps: if j == 0 { vec![] } else { vec![start + j - 1] } });
        }
    }
    vec![
        ("wide (16 x 100 ms)", wide),
        ("deep (chain of 8 x 50 ms)", deep),
        ("fan-out/fan-in (1 -> 8 -> 1)", diamond),
        ("4 uneven chains", chains),
    ]
}

fn yaml(nodes: &[Node], iterations_per_ms: f64) -> String {
    let mut out = String::from("name: bench\nsettings: { parallel: true }\nsteps:\n");
    for (i, n) in nodes.iter().enumerate() {
        let deps: Vec<String> = n.deps.iter().map(|d| format!("s{d}")).collect();
        let iterations = (n.cost_ms as f64 * iterations_per_ms) as u64;
        let _ = writeln!(
            out,
            "  - {{ name: s{i}, type: burn, input_from: [{}], params: {{ tag: s{i}, iterations: {iterations} }} }}",
            deps.join(", ")
        );
    }
    out
}

/// Longest path through the DAG, by nominal cost.
fn critical_path_ms(nodes: &[Node]) -> u64 {
    let mut finish = vec![0u64; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        finish[i] = n.cost_ms + n.deps.iter().map(|&d| finish[d]).max().unwrap_or(0);
    }
    finish.into_iter().max().unwrap_or(0)
}

/// Makespan of a list schedule on `cores` workers by nominal cost, longest
/// remaining path first (what the engine does): a schedule that exists, so
/// the best possible makespan is at most this. Where it sits above the
/// lower bound, the shape itself keeps cores idle (a serial source or sink),
/// and no scheduler can reach the bound.
fn list_schedule_ms(nodes: &[Node], cores: usize) -> u64 {
    let mut tail = vec![0u64; nodes.len()]; // longest path from a node to the end
    for i in (0..nodes.len()).rev() {
        let below = (i + 1..nodes.len()).filter(|&j| nodes[j].deps.contains(&i)).map(|j| tail[j]).max().unwrap_or(0);
        tail[i] = nodes[i].cost_ms + below;
    }
    let mut finish: Vec<Option<u64>> = vec![None; nodes.len()];
    let mut free = vec![0u64; cores]; // when each core is next free
    let mut done = 0;
    while done < nodes.len() {
        // The earliest a core frees up; start the best ready node there.
        let (core, &now) = free.iter().enumerate().min_by_key(|(_, &t)| t).expect("cores > 0");
        let ready = (0..nodes.len())
            .filter(|&i| finish[i].is_none() && nodes[i].deps.iter().all(|&d| finish[d].is_some_and(|f| f <= now)))
            .max_by_key(|&i| (tail[i], std::cmp::Reverse(i)));
        match ready {
            Some(i) => {
                finish[i] = Some(now + nodes[i].cost_ms);
                free[core] = now + nodes[i].cost_ms;
                done += 1;
            }
            // Nothing ready yet: this core waits for the next running node to end.
            None => {
                free[core] = finish.iter().flatten().copied().filter(|&f| f > now).min().unwrap_or(now + 1);
            }
        }
    }
    finish.into_iter().flatten().max().unwrap_or(0)
}

pub async fn run(host: &HostArgs, args: PipelineBenchArgs) -> anyhow::Result<()> {
    let runtime = Arc::new(host.runtime()?);
    runtime
        .install_file(args.test_plugins.join("burn.wasm"))
        .context("loading the burn test stage (build it with scripts/build-plugins)")?;
    let cores = stagecraft_scheduler::available_cores();

    // Calibrate: iterations per millisecond of one burn call on an idle core.
    let probe = 20_000_000u64;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let input = StageInput::new(vec![], serde_json::json!({ "iterations": probe }));
        let t = Instant::now();
        runtime.invoke("burn", input, InvokeOptions::default()).await.context("calibrating burn")?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let per_ms = probe as f64 / (samples[samples.len() / 2].as_secs_f64() * 1e3);
    println!("stagecraft bench pipeline ({cores} cores; burn calibrated at {:.1}M iterations/ms)\n", per_ms / 1e6);

    let orchestrator = Orchestrator::new(runtime, Scheduler::new(SchedulerConfig::default()), None);
    println!("| shape | steps | work (s) | critical path (s) | lower bound (s) | makespan, parallel (s) | vs bound | makespan, sequential (s) | speedup | step time, parallel / alone | vs bound from parallel step times | best schedule vs bound, nominal |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, nodes) in shapes() {
        let pipeline =
            orchestrator.load_pipeline(&yaml(&nodes, per_ms), "bench.yaml").map_err(|d| anyhow::anyhow!("{d}"))?;
        let nominal = critical_path_ms(&nodes) as f64 / 1e3;
        let work_ms: u64 = nodes.iter().map(|n| n.cost_ms).sum();
        let nominal_bound = (critical_path_ms(&nodes) as f64).max(work_ms as f64 / cores as f64);
        let best_vs_bound = list_schedule_ms(&nodes, cores) as f64 / nominal_bound;
        let (mut work, mut cp, mut bound, mut par, mut seq) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut ratios, mut inflation, mut own_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let makespan = |parallel: bool| {
                let options =
                    RunOptions { parallel: Some(parallel), max_workers: Some(cores), ..RunOptions::default() };
                orchestrator.run(&pipeline, RunInput::default(), options, None)
            };
            let sequential = makespan(false).await;
            let parallel = makespan(true).await;
            for outcome in [&sequential, &parallel] {
                if outcome.report.status != RunStatus::Succeeded {
                    anyhow::bail!("{name}: run did not succeed: {}", outcome.report.to_json());
                }
            }
            let r = &sequential.report;
            let (w, c) = (r.sequential_estimate.as_secs_f64(), r.critical_path_duration.as_secs_f64());
            let b = c.max(w / cores as f64);
            let p = &parallel.report;
            ratios.push(p.makespan.as_secs_f64() / b);
            // The same bound from the parallel run's own step durations:
            // what the engine and scheduler leave on the table once the
            // cores' slowdown from running side by side is taken out.
            let own_work = p.sequential_estimate.as_secs_f64();
            inflation.push(own_work / w);
            own_ratios
                .push(p.makespan.as_secs_f64() / p.critical_path_duration.as_secs_f64().max(own_work / cores as f64));
            work.push(w);
            cp.push(c);
            bound.push(b);
            par.push(parallel.report.makespan.as_secs_f64());
            seq.push(r.makespan.as_secs_f64());
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (par, seq) = (median(par), median(seq));
        println!(
            "| {name} | {} | {:.2} | {:.2} (nominal {nominal:.2}) | {:.3} | {par:.3} | {:+.1}% | {seq:.3} | {:.2}x | {:.3} | {:+.1}% | {:+.1}% |",
            nodes.len(),
            median(work),
            median(cp),
            median(bound),
            (median(ratios) - 1.0) * 100.0,
            seq / par,
            median(inflation),
            (median(own_ratios) - 1.0) * 100.0,
            (best_vs_bound - 1.0) * 100.0,
        );
    }
    println!("\nwork and critical path from the step durations of the sequential run just before each parallel one;");
    println!("lower bound = max(critical path, work / {cores} cores); 'vs bound' is the median of the per-run ratios; goal: within +10%");
    println!("step time, parallel / alone: total step time in the parallel run over the sequential run's (cores slowing each other down);");
    println!("'vs bound from parallel step times': the makespan against the bound computed from the parallel run's own step times;");
    println!("'best schedule vs bound, nominal': a longest-path-first schedule of the nominal costs against their bound (above 0 where the shape leaves cores idle).");
    Ok(())
}
