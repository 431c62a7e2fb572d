//! `escape`: tries to reach outside its sandbox and reports what happened.
//!
//! Returns a JSON metadata object `{ "<attempt>": "refused: <error>" | "ALLOWED" }`.
//! The tests assert every attempt was refused, and that the scratch
//! directory (the one place it may write) works.

use stagecraft_sdk::prelude::*;
use std::collections::BTreeMap;

#[derive(Deserialize, JsonSchema)]
struct Params {}

struct Escape;

fn attempt(results: &mut BTreeMap<String, String>, what: &str, result: std::io::Result<()>) {
    let verdict = match result {
        Ok(()) => "ALLOWED".to_owned(),
        Err(e) => format!("refused: {e}"),
    };
    results.insert(what.to_owned(), verdict);
}

impl Stage for Escape {
    type Params = Params;
    const NAME: &'static str = "escape";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Tries to break out of the sandbox (test plugin)";

    fn run(_: Input<Params>) -> Result<Output, StageError> {
        let mut r = BTreeMap::new();
        attempt(&mut r, "read /etc/passwd", std::fs::read("/etc/passwd").map(drop));
        attempt(&mut r, "read ../etc/passwd", std::fs::read("../etc/passwd").map(drop));
        attempt(&mut r, "read /scratch/../../etc/passwd", std::fs::read("/scratch/../../etc/passwd").map(drop));
        attempt(&mut r, "list ..", std::fs::read_dir("..").map(drop));
        attempt(&mut r, "list /", std::fs::read_dir("/").map(drop));
        attempt(&mut r, "write /tmp/escape", std::fs::write("/tmp/escape", b"x"));
        attempt(
            &mut r,
            "read via scratch subdir ../../..",
            std::fs::create_dir_all("/scratch/sub")
                .and_then(|_| std::fs::read("/scratch/sub/../../../etc/passwd").map(drop)),
        );
        attempt(&mut r, "env HOME", std::env::var("HOME").map(drop).map_err(|e| std::io::Error::other(e)));

        // The scratch directory is the one place a stage may write.
        let scratch = std::fs::write("/scratch/ok.txt", b"hello")
            .and_then(|_| std::fs::read("/scratch/ok.txt"))
            .map(|d| d == b"hello");
        let scratch = match scratch {
            Ok(true) => "works".to_owned(),
            Ok(false) => "corrupt".to_owned(),
            Err(e) => format!("broken: {e}"),
        };
        Ok(Output::new().meta("attempts", r).meta("scratch", scratch))
    }
}

export_stage!(Escape);
