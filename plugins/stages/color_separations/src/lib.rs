//! `color_separations`: reduces a logo (or any image) to N spot colours and
//! writes one layer per colour, for screen printing, vinyl cutting or
//! vectorising.
//!
//! The algorithm lives in [`separate`](mod@separate) and touches no host
//! import, so a native benchmark can run the very same code:
//! `color_separations::separate(&rgba, &color_separations::Params::default())`.

pub mod separate;

pub use separate::{separate, Params, Separation};

use stagecraft_imaging::color;
use stagecraft_sdk::images;
use stagecraft_sdk::prelude::*;

pub struct ColorSeparations;

impl Stage for ColorSeparations {
    type Params = Params;
    const NAME: &'static str = "color_separations";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Reduces a logo or image to N spot colours by seeded k-means++ in a perceptual colour space \
         (OKLab or CIE Lab), ignoring transparent pixels; returns one PNG layer per colour, the recomposed image and the palette as JSON";
    const ACCEPTS: &'static [&'static str] = &["image/png", "image/jpeg"];
    const PRODUCES: &'static [&'static str] = &["image/png", "application/json"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let params = input.params;
        params.validate().map_err(StageError::invalid_input)?;
        input
            .artifacts
            .first()
            .ok_or_else(|| StageError::invalid_input("color_separations needs an image artifact (PNG or JPEG)"))?;

        let mut output = Output::new();
        let mut results = Vec::new();
        // One stem per input, unique (`logo`, `logo-2`...), then several outputs each.
        let mut stems = std::collections::BTreeSet::new();
        let total = input.artifacts.len();
        for (n, artifact) in input.artifacts.iter().enumerate() {
            let rgba = images::decode(artifact)?.to_rgba8();
            if rgba.width() == 0 || rgba.height() == 0 {
                return Err(StageError::invalid_input(format!("{}: the image is empty", artifact.name)));
            }
            progress(n as f32 / total as f32, &format!("separating {}", artifact.name));
            let sep = separate(&rgba, &params);
            if sep.is_empty() {
                return Err(StageError::invalid_input(format!(
                    "{}: no pixel has alpha >= {} (alpha_threshold); nothing to separate",
                    artifact.name, params.alpha_threshold
                )));
            }
            let stem = images::unique_name(&mut stems, images::stem(&artifact.name), "");
            let layer_names: Vec<String> = sep
                .quantized
                .palette
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{stem}-sep-{:02}-{}.png", i + 1, &color::hex(s.rgb)[1..]))
                .collect();
            let composite = format!("{stem}-composite.png");
            output = output.artifact(composite.clone(), "image/png", sep.composite_png().map_err(StageError::failed)?);
            for (i, name) in layer_names.iter().enumerate() {
                output = output.artifact(name.clone(), "image/png", sep.layer_png(i).map_err(StageError::failed)?);
            }
            let mut palette = sep.palette_json(&layer_names);
            palette["source"] = json!(artifact.name);
            palette["composite"] = json!(composite);
            let palette_name = format!("{stem}-palette.json");
            let palette_bytes = serde_json::to_vec_pretty(&palette).map_err(|e| StageError::failed(e.to_string()))?;
            output = output.artifact(palette_name.clone(), "application/json", palette_bytes);

            let q = &sep.quantized;
            let mut warnings = Vec::new();
            if sep.len() < params.colors as usize {
                warnings.push(format!(
                    "{}: only {} distinct colours, fewer than the {} requested",
                    artifact.name,
                    sep.len(),
                    params.colors
                ));
            }
            if let Some(d) = sep.min_delta_e().filter(|&d| d < 5.0) {
                warnings.push(format!(
                    "{}: two separations are nearly the same colour (ΔE {:.1}); fewer colours may suit",
                    artifact.name, d
                ));
            }
            results.push(json!({
                "source": artifact.name,
                "width": sep.width(),
                "height": sep.height(),
                "colors": sep.len(),
                "opaque_pixels": q.opaque_pixels,
                "transparent_pixels": q.labels.len() as u64 - q.opaque_pixels,
                "distinct_colors": q.distinct_colors,
                "binned": q.binned,
                "iterations": q.iterations,
                "converged": q.converged,
                "mean_delta_e": separate::round(q.mean_sq_error.sqrt(), 3),
                "min_delta_e_between_colors": sep.min_delta_e().map(|d| separate::round(d as f64, 2)),
                "palette": palette["colors"],
                "composite": composite,
                "layers": layer_names,
                "palette_json": palette_name,
                "warnings": warnings,
            }));
        }
        progress(1.0, "done");
        let first = results[0].clone();
        Ok(output
            .meta("colors_requested", params.colors)
            .meta("color_space", params.color_space.name())
            .meta("seed", params.seed)
            .meta("colors", &first["colors"])
            .meta("palette", &first["palette"])
            .meta("images", results))
    }
}

#[cfg(target_arch = "wasm32")]
export_stage!(ColorSeparations);

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: &image::RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn artifact(name: &str, data: Vec<u8>) -> Artifact {
        Artifact { name: name.into(), media_type: "image/png".into(), data }
    }

    #[test]
    fn run_produces_layers_composite_and_palette() {
        let img = image::RgbaImage::from_fn(40, 30, |x, _| {
            if x < 20 {
                image::Rgba([255, 0, 0, 255])
            } else {
                image::Rgba([0, 0, 255, 255])
            }
        });
        let out = ColorSeparations::run(Input {
            artifacts: vec![artifact("logo.png", png(&img))],
            params: Params { colors: 2, ..Params::default() },
        })
        .unwrap();
        let names: Vec<&str> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["logo-composite.png", "logo-sep-01-0000ff.png", "logo-sep-02-ff0000.png", "logo-palette.json"]
        );
        assert_eq!(out.metadata["colors"], 2);
        let palette: serde_json::Value = serde_json::from_slice(&out.artifacts[3].data).unwrap();
        assert_eq!(palette["source"], "logo.png");
        assert_eq!(palette["colors"][0]["share"], 0.5);
    }

    #[test]
    fn invalid_inputs() {
        let err = ColorSeparations::run(Input { artifacts: vec![], params: Params::default() }).err().unwrap();
        assert!(matches!(err, StageError::InvalidInput(_)));
        let err = ColorSeparations::run(Input {
            artifacts: vec![artifact("x.png", b"not a png".to_vec())],
            params: Params::default(),
        })
        .err()
        .unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("x.png")), "{err:?}");
        let clear = image::RgbaImage::new(4, 4);
        let err = ColorSeparations::run(Input {
            artifacts: vec![artifact("clear.png", png(&clear))],
            params: Params::default(),
        })
        .err()
        .unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("alpha")), "{err:?}");
        let err = ColorSeparations::run(Input {
            artifacts: vec![artifact("a.png", png(&clear))],
            params: Params { colors: 1, ..Params::default() },
        })
        .err()
        .unwrap();
        assert!(matches!(err, StageError::InvalidInput(ref m) if m.contains("colors")), "{err:?}");
    }
}
