//! One module per subcommand.

pub mod bench;
pub mod bench_pipeline;
pub mod bench_stages;
pub mod build;
pub mod cluster;
pub mod dev;
pub mod invoke;
pub mod live;
pub mod models;
pub mod new;
pub mod push;
pub mod run;
pub mod serve;
pub mod stages;
