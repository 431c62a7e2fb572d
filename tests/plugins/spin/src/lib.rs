//! `spin`: loops forever. The host must stop it at its deadline.

use stagecraft_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Params {}

struct Spin;

impl Stage for Spin {
    type Params = Params;
    const NAME: &'static str = "spin";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Never returns (test plugin)";

    fn run(_: Input<Params>) -> Result<Output, StageError> {
        let mut x: u64 = 1;
        loop {
            // Opaque to the optimiser, so the loop is not removed.
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_stage!(Spin);
