//! One module per subcommand.

pub mod bench;
pub mod invoke;
pub mod run;
pub mod serve;
pub mod stages;
