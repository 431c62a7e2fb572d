"""echo_py: returns its inputs unchanged; the per-language benchmark's small stage
(Rust's counterpart is the bundled `noop`)."""

from stagecraft_sdk import Input, Output, stage


def run(input: Input[None]) -> Output:
    out = Output().extend(input.artifacts)
    return out.meta("count", len(input.artifacts)).meta("bytes", sum(len(a.data) for a in input.artifacts))


Stage = stage(run, None, name="echo_py", version="0.1.0",
              description="Returns its input artifacts unchanged (benchmark stage)", accepts=["*/*"], produces=["*/*"])
