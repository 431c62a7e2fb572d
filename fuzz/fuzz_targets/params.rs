//! Params and stage metadata as JSON: parsed as a caller's or a stage's
//! JSON is, measured, put into a pipeline as a step's params (schema checks,
//! template references), and rendered against the fuzzer's metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // Two documents: params, then (after the first NUL) a stage's metadata.
    let mut parts = data.splitn(2, |b| *b == 0);
    let params = parts.next().unwrap_or_default();
    let metadata = parts.next().unwrap_or_default();
    let Ok(params) = serde_json::from_slice::<Value>(params) else { return };
    let metadata = serde_json::from_slice::<Value>(metadata).unwrap_or(Value::Null);
    // serde_json allows 128 levels; the pipeline path allows 64.
    let _ = stagecraft_pipeline::limits::json_depth(&params);
    let pipeline = serde_json::json!({
        "name": "fuzz",
        "steps": [
            { "name": "a", "type": "generate" },
            { "name": "b", "type": "generate", "input_from": "a", "params": params },
            { "name": "c", "type": "report", "params": { "all": "{{run.steps}}", "p": params } }
        ]
    });
    stagecraft_fuzz::load_and_render(&pipeline.to_string(), &metadata);
});
