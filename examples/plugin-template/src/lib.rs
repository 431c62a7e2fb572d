//! `brighten`: the plugin template. Brightens PNG/JPEG images by `amount`.

use stagecraft_sdk::images::{self, Format};
use stagecraft_sdk::prelude::*;

/// Params are typed; their JSON Schema (with these doc comments) is what
/// `describe` returns and what callers are validated against.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// How much to brighten, 0-255.
    amount: u8,
}

struct Brighten;

impl Stage for Brighten {
    type Params = Params;
    const NAME: &'static str = "brighten";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Brightens images (the plugin template)";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        input.first()?;
        let mut output = Output::new();
        for artifact in &input.artifacts {
            // Undecodable bytes become `invalid-input` naming the artifact.
            let img = images::decode(artifact)?.brighten(input.params.amount as i32);
            let name = format!("{}_bright.png", images::stem(&artifact.name));
            output = output.artifact(name, "image/png", images::encode(&img, Format::Png, 90)?);
        }
        progress(1.0, "done");
        Ok(output.meta("count", input.artifacts.len()))
    }
}

export_stage!(Brighten);
