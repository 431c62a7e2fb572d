//! Imaging shared by the stagecraft stages: colour spaces, the one hex
//! colour grammar every colour param uses ([`color::parse_hex`]),
//! deterministic k-means quantisation and Lanczos3 resampling with
//! premultiplied alpha.
//!
//! Pure Rust, no host imports: usable natively (tests, benchmarks) and in
//! the wasm32-wasip2 components alike.

pub mod color;
pub mod kmeans;
/// Lanczos3 resampling of raw 8-bit RGB/RGBA pixel buffers (what `upscale`
/// runs, and what the host's benchmark compiles natively to compare).
pub mod lanczos;
pub mod quantize;
pub mod resize;

pub use color::ColorSpace;
pub use quantize::{quantize, QuantizeOptions, Quantized, Swatch, SwatchFrom, TRANSPARENT};
