//! `hog`: allocates without bound. The host must stop it at its memory limit.

use stagecraft_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Params {}

struct Hog;

impl Stage for Hog {
    type Params = Params;
    const NAME: &'static str = "hog";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Allocates memory until stopped (test plugin)";

    fn run(_: Input<Params>) -> Result<Output, StageError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            hoard.push(vec![0xA5; 8 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export_stage!(Hog);
