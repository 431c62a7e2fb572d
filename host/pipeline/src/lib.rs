//! # stagecraft-pipeline
//!
//! Pure pipeline logic for stagecraft, independent of how a step is executed:
//!
//! 1. [`spec`]: YAML (or JSON) → [`PipelineSpec`], every node with its line and column,
//!    after [`limits`] checked the source's size and nesting without recursing;
//! 2. [`validate`](mod@validate): spec → [`Pipeline`] (a validated DAG), all problems
//!    reported at once as [`Diagnostics`] (`file:line:column: step 'x': message`);
//! 3. [`template`]: `{{input}}`, `{{steps.<name>.metadata.<path>}}`, ... rendered
//!    just before a step runs;
//! 4. [`engine`]: runs the DAG with a host-provided [`StepRunner`], with worker
//!    limits, fail-fast groups, timeouts, cancellation and [`Event`]s;
//! 5. [`report`]: per-step statuses and timings, makespan, speedup and critical path.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use stagecraft_pipeline::*;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog: HashMap<String, serde_json::Value> =
//!     [("generate".to_string(), serde_json::json!({"type": "object"}))].into();
//! let yaml = "name: demo\nsteps:\n  - { name: a, type: generate, params: { prompt: '{{input}}' } }\n";
//! let pipeline = load(yaml, "demo.yaml", &catalog)?;
//!
//! // Any Fn(ReadyStep<A>) -> BoxFuture<Result<StepOutput<A>, StepFailure>> is a runner.
//! let runner = |step: ReadyStep<String>| -> BoxFuture<'static, Result<StepOutput<String>, StepFailure>> {
//!     Box::pin(async move { Ok(StepOutput::new(vec![step.name], serde_json::json!({}))) })
//! };
//! let outcome = DagExecutor::new(runner)
//!     .run(&pipeline, RunInput::text("a cat"), RunOptions::default())
//!     .await;
//! println!("{}", outcome.report.to_json());
//! # Ok(()) }
//! ```

pub mod dag;
pub mod diag;
pub mod engine;
pub mod event;
pub mod limits;
pub mod report;
pub mod spec;
pub mod template;
pub mod validate;

pub use dag::{Pipeline, PlannedGroup, PlannedStep, Settings};
pub use diag::{Diagnostic, Diagnostics, Position};
pub use engine::{
    BoxFuture, DagExecutor, ReadyStep, RunInput, RunOptions, RunOutcome, StepFailure, StepOutput, StepRunner,
};
pub use event::{channel_observer, Event, Observer};
pub use limits::SourceLimits;
pub use report::{Execution, RunReport, RunStatus, StepReport, StepStatus};
pub use spec::PipelineSpec;
pub use tokio_util::sync::CancellationToken;
pub use validate::{load, load_with_limits, validate, StageCatalog};

impl Pipeline {
    /// Parses and validates pipeline source; see [`load`].
    pub fn load(source: &str, file: &str, catalog: &dyn StageCatalog) -> Result<Pipeline, Diagnostics> {
        validate::load(source, file, catalog)
    }
}
