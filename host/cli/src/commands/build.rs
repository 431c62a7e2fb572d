//! `stagecraft build [DIR]`: builds a stage project into a component with
//! its language's toolchain (see [`crate::author::toolchain`]).

use crate::author::{toolchain, Project};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The stage project (a folder with stagecraft.toml, or a Rust crate).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the component (default: DIR/target/NAME.wasm).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let project = Project::open(&args.dir)?;
    let out = args.out.unwrap_or_else(|| project.default_output());
    let built = toolchain::build(&project, &out)?;
    println!(
        "built {} ({:?}, {}) -> {} ({:.1} MB) in {:.1} s",
        project.name,
        project.lang,
        built.tool,
        built.component.display(),
        built.bytes as f64 / 1e6,
        built.elapsed.as_secs_f64()
    );
    Ok(())
}
