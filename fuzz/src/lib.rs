//! Helpers shared by the fuzz targets: a stage catalog with real-looking
//! params schemas, and a render context whose step metadata comes from the
//! fuzzer.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Stages with schemas like the bundled ones (types, bounds, enums, nested
/// objects, `anyOf`), so validation and schema checks run on every input.
pub fn catalog() -> BTreeMap<String, Value> {
    let mut c = BTreeMap::new();
    c.insert("noop".to_owned(), json!(true));
    c.insert(
        "generate".to_owned(),
        json!({
            "type": "object",
            "properties": {
                "prompt": { "type": "string", "maxLength": 2000 },
                "width": { "type": "integer", "minimum": 1, "maximum": 4096 },
                "style": { "enum": ["photo", "sketch"] },
                "sizes": { "type": "array", "items": { "type": "object", "properties": { "w": { "type": "integer" } } } },
                "seed": { "anyOf": [{ "type": "integer" }, { "type": "string", "pattern": "^[a-z]+$" }] }
            },
            "additionalProperties": false
        }),
    );
    c.insert("report".to_owned(), json!({ "type": "object" }));
    c
}

/// Renders templates against fuzzer-made metadata for every step.
pub struct Ctx {
    pub metadata: Value,
}

impl stagecraft_pipeline::template::RenderContext for Ctx {
    fn input(&self) -> Option<&str> {
        Some("input text")
    }
    fn pipeline_name(&self) -> &str {
        "fuzz"
    }
    fn run_id(&self) -> &str {
        "run-1"
    }
    fn step_output(&self, _step: &str) -> Option<(&Value, usize)> {
        Some((&self.metadata, 2))
    }
}

/// Loads `source` as a pipeline and, when it is valid, renders every step's
/// params: the whole path a pipeline takes before a step runs.
pub fn load_and_render(source: &str, metadata: &Value) {
    let catalog = catalog();
    match stagecraft_pipeline::load(source, "fuzz.yaml", &catalog) {
        Ok(pipeline) => {
            let ctx = Ctx { metadata: metadata.clone() };
            for step in pipeline.steps() {
                let _ = stagecraft_pipeline::template::render_value(&step.params, &ctx);
            }
        }
        Err(diagnostics) => {
            // Every problem is reported, at most 100 and one line each.
            assert!(diagnostics.len() <= stagecraft_pipeline::diag::MAX_DIAGNOSTICS + 1);
            let _ = diagnostics.to_string();
        }
    }
}
