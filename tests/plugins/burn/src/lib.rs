//! `burn`: a stage with a known cost, for scheduler tests and the makespan
//! benchmark. It burns `iterations` rounds of integer work (CPU, not
//! sleep, so parallel steps really compete for cores; `sleep_ms` adds a
//! known wait that holds no CPU), lists the inputs it
//! was given in order, and can be told to fail in each of the WIT ways.

use stagecraft_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Rounds of integer work to do (about a nanosecond each).
    #[serde(default)]
    iterations: u64,
    /// Name of the output artifact (`<tag>.txt`).
    #[serde(default = "default_tag")]
    tag: String,
    /// Milliseconds to sleep (a WASI wait, no CPU) before burning.
    #[serde(default)]
    sleep_ms: u64,
    /// Fail instead of succeeding: `unavailable` (retryable), `invalid` or `failed`.
    #[serde(default)]
    fail: Option<String>,
}

fn default_tag() -> String {
    "burn".into()
}

struct Burn;

impl Stage for Burn {
    type Params = Params;
    const NAME: &'static str = "burn";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Burns a given amount of CPU and lists its inputs (test plugin)";
    const ACCEPTS: &'static [&'static str] = &["*/*"];
    const PRODUCES: &'static [&'static str] = &["text/plain"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let p = &input.params;
        if p.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(p.sleep_ms));
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..p.iterations {
            // Opaque to the optimiser, so the loop is not folded away.
            x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x2545_F491_4F6C_DD1D));
        }
        match p.fail.as_deref() {
            None => {}
            Some("unavailable") => return Err(StageError::unavailable(format!("{} is unavailable (as asked)", p.tag))),
            Some("invalid") => {
                return Err(StageError::invalid_input(format!("{} refuses its input (as asked)", p.tag)))
            }
            Some(other) => return Err(StageError::failed(format!("{} failed (as asked: {other})", p.tag))),
        }
        let names: Vec<&str> = input.artifacts.iter().map(|a| a.name.as_str()).collect();
        let text = format!("{}: inputs {}\n", p.tag, names.join(","));
        Ok(Output::new()
            .artifact(format!("{}.txt", p.tag), "text/plain", text.into_bytes())
            .meta("tag", &p.tag)
            .meta("inputs", &names)
            .meta("checksum", x))
    }
}

export_stage!(Burn);
