//! One module per subcommand.

pub mod bench;
pub mod bench_pipeline;
pub mod bench_stages;
pub mod invoke;
pub mod live;
pub mod models;
pub mod run;
pub mod serve;
pub mod stages;
