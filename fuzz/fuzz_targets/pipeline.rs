//! Pipeline source (YAML or JSON) through parsing, validation against a
//! catalog with schemas, and template rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    stagecraft_fuzz::load_and_render(source, &serde_json::json!({ "width": 3, "sizes": [{ "w": 1 }] }));
});
