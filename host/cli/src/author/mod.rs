//! The plugin author's side of the CLI: stage projects (`stagecraft.toml`),
//! the toolchains that turn them into components, and the SDKs and
//! templates embedded in the binary so that `new` and `build` work away
//! from the source tree.

pub mod embedded;
pub mod project;
pub mod toolchain;

pub use project::{Lang, Project};
