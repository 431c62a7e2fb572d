//! One module per subcommand.

pub mod bench;
pub mod bench_pipeline;
pub mod invoke;
pub mod models;
pub mod run;
pub mod serve;
pub mod stages;
