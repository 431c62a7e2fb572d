//! Imaging shared by the stagecraft stages: colour spaces, the one hex
//! colour grammar every colour param uses ([`color::parse_hex`]),
//! and deterministic k-means quantisation.
//!
//! Pure Rust, no host imports: usable natively (tests, benchmarks) and in
//! the wasm32-wasip2 components alike.

pub mod color;
pub mod kmeans;
pub mod quantize;

pub use color::ColorSpace;
pub use quantize::{quantize, QuantizeOptions, Quantized, Swatch, SwatchFrom, TRANSPARENT};
