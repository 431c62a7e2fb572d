//! Lanczos3 resampling of raw 8-bit RGB/RGBA pixels: the shared code in
//! `stagecraft-imaging` (`plugins/imaging/src/lanczos.rs`), pulled in as
//! source rather than as a dependency because the host's benchmark
//! (`host/cli/src/commands/bench.rs`) compiles this very file by path, to
//! measure the sandbox's cost against the code the stage runs. Once the
//! bench points at the imaging file, this shim can go.

include!("../../../imaging/src/lanczos.rs");
