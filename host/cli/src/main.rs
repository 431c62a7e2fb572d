//! `stagecraft`: the command-line entry point.
//!
//! Subcommands live in [`commands`], one module each; this file parses the
//! command line, sets up logging, builds the runtime, and turns any error
//! into one clear line and a non-zero exit.

mod author;
mod capacity;
mod commands;
mod host;
mod http_client;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "stagecraft", version, about = "A WebAssembly host for AI content pipelines")]
struct Cli {
    #[command(flatten)]
    host: host::HostArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the loaded stages and what they describe themselves as.
    Stages {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the models of the model repository (--models) and their batching.
    Models {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run one stage on some files and write what it produces.
    Invoke {
        /// The stage's name (see `stagecraft stages`).
        stage: String,
        /// Input files, passed to the stage as artifacts in this order.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<PathBuf>,
        /// Stage parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Where to write the output artifacts (created if missing).
        #[arg(long, short = 'o', default_value = "out")]
        out: PathBuf,
    },
    /// Run a pipeline file: live progress, then a table of steps and totals.
    Run(commands::run::RunArgs),
    /// Measure invocation overhead and upscale throughput; prints a table.
    Bench(commands::bench::BenchArgs),
    /// Serve the HTTP API: invoke stages, run pipelines as jobs, hot-swap components.
    Serve(commands::serve::ServeArgs),
    /// Start a stage project in Rust, Python or JavaScript that builds as it is.
    New(commands::new::NewArgs),
    /// Build a stage project into a component (NAME.wasm).
    Build(commands::build::BuildArgs),
    /// Rebuild a stage project on every change and swap it into a local server.
    Dev(commands::dev::DevArgs),
    /// Upload a component as a new version of its stage on a running server.
    Push(commands::push::PushArgs),
    /// Run pipeline jobs pulled from a Redis queue (scale-out; see docs/cluster.md).
    Worker(commands::cluster::WorkerArgs),
    /// Put a pipeline job on a Redis queue (inputs into the shared blob store); --wait follows it.
    Submit(commands::cluster::SubmitArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `dev` shows each invocation and the stage's own log lines.
    let default_filter =
        if matches!(cli.command, Command::Dev(_)) { "warn,invocations=info,stage=info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAGECRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Stages { json } => commands::stages::run(&cli.host, json),
            Command::Models { json } => commands::models::run(&cli.host, json),
            Command::Invoke { stage, inputs, params, out } => {
                commands::invoke::run(&cli.host, &stage, &inputs, &params, &out).await
            }
            Command::Run(args) => commands::run::run(&cli.host, args).await,
            Command::Bench(args) => commands::bench::run(&cli.host, args).await,
            Command::Serve(args) => commands::serve::run(&cli.host, args).await,
            Command::New(args) => commands::new::run(args),
            Command::Build(args) => commands::build::run(args),
            Command::Dev(args) => commands::dev::run(&cli.host, args).await,
            Command::Push(args) => commands::push::run(args).await,
            Command::Worker(args) => commands::cluster::worker(&cli.host, args).await,
            Command::Submit(args) => commands::cluster::submit(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    format!("{e:#}").replace('\n', " ")
}
