//! Regression cases for hostile pipeline sources: every file under
//! `tests/hostile/` (the reported crashes, and each crash the fuzz targets
//! found, kept as the input that crashed) must load to a clean error or a
//! pipeline, never a panic or a stack overflow. Cargo's test threads have a
//! 2 MiB stack, the size of a tokio worker's, where the first of these
//! killed `stagecraft serve`.
//!
//! A file's first line may say what the error must contain: `# expect: …`
//! for YAML; otherwise the error must name a limit or the file must load.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

fn catalog() -> BTreeMap<String, Value> {
    [("noop".to_owned(), json!({})), ("generate".to_owned(), json!({"type": "object"}))].into()
}

#[test]
fn every_kept_hostile_input_loads_or_fails_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 2, "the reported crashes are kept in {}", dir.display());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let Ok(source) = String::from_utf8(bytes) else { continue };
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let expect = source.lines().next().and_then(|l| l.strip_prefix("# expect: ")).map(str::to_owned);
        match stagecraft_pipeline::load(&source, &name, &catalog()) {
            Ok(_) => assert!(expect.is_none(), "{name} loaded but should fail with '{}'", expect.unwrap()),
            Err(d) => {
                let text = d.to_string();
                if let Some(expect) = expect {
                    assert!(text.contains(&expect), "{name}: expected '{expect}' in: {text}");
                }
                assert!(d.len() <= stagecraft_pipeline::diag::MAX_DIAGNOSTICS + 1, "{name}");
            }
        }
    }
}

#[test]
fn the_reported_crashes_name_the_depth_limit_with_line_and_column() {
    let catalog = catalog();
    // 5000 levels (10 KB) killed `stagecraft serve`; 100,000 (200 KB) `stagecraft run`.
    for n in [5000, 100_000] {
        let err = stagecraft_pipeline::load(&("- ".repeat(n) + "x\n"), "deep.yaml", &catalog).unwrap_err();
        assert_eq!(err.to_string(), "deep.yaml:1:129: pipeline nesting is deeper than 64 levels (the limit)");
    }
    let flow =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/deep-flow-10000.json"))
            .unwrap();
    // Flow collections: the scanner reads ahead and stops at 255 levels
    // itself, so the position is there; the message is the same.
    let err = stagecraft_pipeline::load(&flow, "deep.json", &catalog).unwrap_err();
    assert_eq!(err.to_string(), "deep.json:1:278: pipeline nesting is deeper than 64 levels (the limit)");
}
