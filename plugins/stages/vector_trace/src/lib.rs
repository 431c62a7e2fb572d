//! `vector_trace`: bitmap -> SVG.
//!
//! The algorithm ([`vectorize()`]) touches no host import: native tests and
//! benchmarks call it directly.

pub mod contour;
pub mod geom;
pub mod vectorize;

pub use vectorize::{vectorize, Mode, Params, Traced};

use stagecraft_sdk::images;
use stagecraft_sdk::prelude::*;

pub struct VectorTrace;

/// Images larger than this are refused: tracing is linear in pixels but the
/// SVG of a noisy photo at this size is already unwieldy.
const MAX_PIXELS: u64 = 64 * 1024 * 1024;

impl Stage for VectorTrace {
    type Params = Params;
    const NAME: &'static str = "vector_trace";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Traces a bitmap (logo, line art, icon) into an SVG: binary threshold with Otsu's automatic level, \
         or one layer per colour after k-means quantisation; boundaries with holes, Ramer-Douglas-Peucker simplification and cubic Bezier fitting";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/svg+xml"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let params = input.params;
        params.validate().map_err(StageError::invalid_input)?;
        input
            .artifacts
            .first()
            .ok_or_else(|| StageError::invalid_input("vector_trace needs an image artifact (PNG or JPEG)"))?;
        let mut output = Output::new();
        let mut results = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        let total = input.artifacts.len();
        for (n, artifact) in input.artifacts.iter().enumerate() {
            let rgba = images::decode(artifact)?.to_rgba8();
            let pixels = rgba.width() as u64 * rgba.height() as u64;
            if pixels == 0 {
                return Err(StageError::invalid_input(format!("{}: the image is empty", artifact.name)));
            }
            if pixels > MAX_PIXELS {
                return Err(StageError::invalid_input(format!(
                    "{}: {}x{} is over the {} megapixel limit of vector_trace",
                    artifact.name,
                    rgba.width(),
                    rgba.height(),
                    MAX_PIXELS / (1024 * 1024)
                )));
            }
            progress(n as f32 / total as f32, &format!("tracing {}", artifact.name));
            let traced = vectorize(&rgba, &params, &artifact.name);
            let name = images::unique_name(&mut used, images::stem(&artifact.name), ".svg");
            let mut warnings = Vec::new();
            if traced.layers.iter().all(|l| l.contours == 0) {
                warnings.push(format!("{}: nothing was traced (no foreground at this threshold)", artifact.name));
            }
            results.push(json!({
                "source": artifact.name,
                "svg": name,
                "width": traced.width,
                "height": traced.height,
                "threshold": traced.threshold,
                "otsu": traced.otsu,
                "layers": traced.layers,
                "contours": traced.layers.iter().map(|l| l.contours).sum::<usize>(),
                "segments": traced.layers.iter().map(|l| l.segments).sum::<usize>(),
                "speckles_dropped": traced.speckles_dropped,
                "svg_bytes": traced.svg.len(),
                "warnings": warnings,
            }));
            output = output.artifact(name, "image/svg+xml", traced.svg.into_bytes());
        }
        progress(1.0, "done");
        let first = results[0].clone();
        Ok(output
            .meta("mode", params.mode)
            .meta("threshold", &first["threshold"])
            .meta("layers", &first["layers"])
            .meta("contours", &first["contours"])
            .meta("segments", &first["segments"])
            .meta("images", results))
    }
}

#[cfg(target_arch = "wasm32")]
export_stage!(VectorTrace);

#[cfg(test)]
mod tests;
