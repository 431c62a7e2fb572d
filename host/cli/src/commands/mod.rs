//! One module per subcommand.

pub mod bench;
pub mod bench_pipeline;
pub mod invoke;
pub mod run;
pub mod serve;
pub mod stages;
