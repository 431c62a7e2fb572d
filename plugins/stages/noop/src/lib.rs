//! `noop`: passes its input artifacts through unchanged.

use stagecraft_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {}

struct Noop;

impl Stage for Noop {
    type Params = Params;
    const NAME: &'static str = "noop";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Returns its input artifacts unchanged";
    const ACCEPTS: &'static [&'static str] = &["*/*"];
    const PRODUCES: &'static [&'static str] = &["*/*"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        Ok(Output { artifacts: input.artifacts, ..Output::new() })
    }
}

export_stage!(Noop);
