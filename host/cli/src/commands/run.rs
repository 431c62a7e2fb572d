//! `stagecraft run PIPELINE.yaml`: validate a pipeline against the loaded
//! stages, run it with live progress on stderr (bars on a terminal, lines
//! otherwise; see [`super::live`]), write the artifacts and `report.json`
//! to `--out`, and end with a table of steps and totals.

use super::live::Live;
use crate::host::HostArgs;
use anyhow::Context;
use serde_json::Value;
use stagecraft_orchestrator::output::write_run;
use stagecraft_orchestrator::{Orchestrator, ResultCache, RunEvent};
use stagecraft_pipeline::{CancellationToken, RunInput, RunOptions, RunStatus};
use stagecraft_scheduler::Scheduler;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline file (YAML or JSON).
    pipeline: PathBuf,
    /// Text input, reachable in params as `{{input}}`.
    #[arg(long, short = 'i')]
    input: Option<String>,
    /// Input files, handed to steps that take no `input_from` (repeatable).
    #[arg(long = "input-file", short = 'f')]
    input_files: Vec<PathBuf>,
    /// Where to write artifacts and report.json.
    #[arg(long, short = 'o', default_value = "out")]
    out: PathBuf,
    /// Run every step even if an identical result is cached.
    #[arg(long)]
    no_cache: bool,
    /// Override `settings.parallel` (also: STAGECRAFT_PARALLEL=false).
    #[arg(long, env = "STAGECRAFT_PARALLEL")]
    parallel: Option<bool>,
    /// Override `settings.max_workers`.
    #[arg(long)]
    max_workers: Option<usize>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn run(host: &HostArgs, args: RunArgs) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline {}", args.pipeline.display()))?;
    let files = crate::host::read_inputs(&args.input_files)?.into_iter().map(Arc::new).collect();

    let runtime = Arc::new(host.runtime()?);
    let cache = (!args.no_cache).then(|| ResultCache::new(host.home().join("results")));
    let orchestrator = Orchestrator::new(runtime, Scheduler::new(host.scheduler()?), cache).with_reuse(host.reuse()?);
    let file = args.pipeline.display().to_string();
    let pipeline = match orchestrator.load_pipeline(&source, &file) {
        Ok(p) => p,
        Err(diagnostics) => {
            for d in diagnostics.iter() {
                eprintln!("{d}");
            }
            anyhow::bail!("{file} is not a valid pipeline ({} problem(s)); nothing ran", diagnostics.len());
        }
    };

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: cancelling the run");
            on_ctrl_c.cancel();
        }
    });
    let options =
        RunOptions { parallel: args.parallel, max_workers: args.max_workers, cancel, ..RunOptions::default() };
    let input = RunInput { text: args.input.clone(), files };
    let live = Arc::new(Live::for_stderr(pipeline.steps().iter().map(|s| s.name.as_str())));
    let observer = {
        let live = live.clone();
        Arc::new(move |e: &RunEvent| live.show(e))
    };
    eprintln!("running {} ({} steps)", pipeline.name(), pipeline.steps().len());
    let outcome = orchestrator.run(&pipeline, input, options, Some(observer)).await;
    let report = write_run(&args.out, &outcome)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
        println!("artifacts and report.json in {}", args.out.display());
    }
    match outcome.report.status {
        RunStatus::Succeeded => Ok(()),
        status => anyhow::bail!("the run ended {}", serde_json::to_value(status)?.as_str().unwrap_or("badly")),
    }
}

fn print_table(report: &Value) {
    let rows: Vec<[String; 8]> = report["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let exec = &s["execution"];
                    let secs = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.3}"));
                    [
                        s["name"].as_str().unwrap_or_default().to_owned(),
                        match exec["version"].as_str() {
                            Some(v) => format!("{}@{v}", s["stage"].as_str().unwrap_or_default()),
                            None => s["stage"].as_str().unwrap_or_default().to_owned(),
                        },
                        s["status"].as_str().unwrap_or_default().to_owned(),
                        exec["attempts"].as_u64().map_or("-".to_owned(), |a| a.to_string()),
                        secs(&s["started"]),
                        secs(&s["duration"]),
                        exec["cache"].as_str().unwrap_or("-").to_owned(),
                        exec["artifacts"].as_array().map_or("-".to_owned(), |a| a.len().to_string()),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let header = ["step", "stage@version", "status", "attempts", "start s", "duration s", "cache", "artifacts"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line =
        |cells: &[String]| cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
    println!("{}", line(&header.map(String::from)));
    println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for row in &rows {
        println!("{}", line(row));
    }
    let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
    let path: Vec<&str> =
        report["critical_path"].as_array().map(|p| p.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    println!();
    println!(
        "status {}  makespan {:.3}s  sequential estimate {:.3}s  speedup {}",
        report["status"].as_str().unwrap_or("?"),
        f("makespan"),
        f("sequential_estimate"),
        report["speedup"].as_f64().map_or("-".to_owned(), |s| format!("{s:.2}x")),
    );
    println!("critical path {:.3}s: {}", f("critical_path_duration"), path.join(" -> "));
}
