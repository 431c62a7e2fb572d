//! `flood`: misbehaves in one of many ways, chosen by `attack`, so that the
//! tests can check the host holds against each (its quotas, the artifact
//! name rules, crash reports). `count` and `size` scale the attack.
//!
//! - `progress`: reports progress `count` times.
//! - `log`: logs `count` lines of `size` bytes.
//! - `disk-bytes`: writes `count` chunks of `size` bytes into one scratch file.
//! - `disk-one-write`: one write of `size` bytes (a single huge write).
//! - `disk-files`: creates `count` small files in scratch.
//! - `disk-grow`: grows a scratch file to `size` bytes with `set_len`.
//! - `output`: returns `count` artifacts of `size` bytes each.
//! - `error`: fails with a message of `size` bytes.
//! - `metadata`: returns a metadata string of `size` bytes.
//! - `names`: returns artifacts with bad and duplicate names.
//! - `panic`: panics with the message `the flood broke the dam`.
//! - anything else: succeeds at once (a well-behaved call, for soak runs).

use stagecraft_sdk::prelude::*;
use std::io::Write;

#[derive(Deserialize, JsonSchema)]
struct Params {
    attack: String,
    #[serde(default = "one")]
    count: u64,
    #[serde(default = "one")]
    size: u64,
}

fn one() -> u64 {
    1
}

fn io(what: &str, e: std::io::Error) -> StageError {
    StageError::failed(format!("{what}: {e}"))
}

struct Flood;

impl Stage for Flood {
    type Params = Params;
    const NAME: &'static str = "flood";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Floods the host in a way of the caller's choosing (test plugin)";

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let Params { attack, count, size } = input.params;
        let size = size as usize;
        match attack.as_str() {
            "progress" => {
                for i in 0..count {
                    progress(i as f32 / count as f32, &format!("step {i}"));
                }
                Ok(Output::new().meta("reported", count))
            }
            "log" => {
                let line = "L".repeat(size);
                for _ in 0..count {
                    log::info(&line);
                }
                Ok(Output::new().meta("logged", count))
            }
            "disk-bytes" => {
                let mut file = std::fs::File::create("/scratch/bomb").map_err(|e| io("create", e))?;
                let chunk = vec![0x5A; size];
                for i in 0..count {
                    file.write_all(&chunk).map_err(|e| io(&format!("write {i}"), e))?;
                }
                Ok(Output::new().meta("written", count * size as u64))
            }
            "disk-one-write" => {
                std::fs::write("/scratch/bomb", vec![0x5A; size]).map_err(|e| io("write", e))?;
                Ok(Output::new().meta("written", size))
            }
            "disk-files" => {
                for i in 0..count {
                    std::fs::write(format!("/scratch/f{i}"), b"x").map_err(|e| io(&format!("file {i}"), e))?;
                }
                Ok(Output::new().meta("files", count))
            }
            "disk-grow" => {
                let file = std::fs::File::create("/scratch/sparse").map_err(|e| io("create", e))?;
                file.set_len(size as u64).map_err(|e| io("set_len", e))?;
                Ok(Output::new().meta("grown", size))
            }
            "output" => {
                let mut out = Output::new();
                for i in 0..count {
                    out = out.artifact(format!("out-{i}.bin"), "application/octet-stream", vec![7; size]);
                }
                Ok(out)
            }
            "error" => Err(StageError::failed("E".repeat(size))),
            "metadata" => Ok(Output::new().meta("blob", "M".repeat(size))),
            "names" => {
                let long = format!("{}.png", "n".repeat(5000));
                let names = [long.as_str(), "dup.png", "dup.png", "DUP.png", "../../etc/passwd", "", "tab\there\n.txt"];
                let mut out = Output::new();
                for (i, name) in names.iter().enumerate() {
                    out = out.artifact(*name, "application/octet-stream", vec![i as u8; 4]);
                }
                Ok(out)
            }
            "panic" => panic!("the flood broke the dam"),
            _ => Ok(Output::new().meta("attack", attack).meta("artifacts", input.artifacts.len())),
        }
    }
}

export_stage!(Flood);
