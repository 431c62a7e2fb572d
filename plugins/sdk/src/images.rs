//! Image artifacts: decode PNG/JPEG input with errors that map to
//! `invalid-input`, encode PNG/JPEG output.

use crate::{Artifact, StageError};
use image::{DynamicImage, ImageFormat};

/// Output encodings a stage can pick from a `format` param.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Png,
    Jpeg,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpg",
        }
    }
    /// The format an artifact is in, from its bytes (then its media type).
    pub fn of(artifact: &Artifact) -> Option<Format> {
        match image::guess_format(&artifact.data).ok() {
            Some(ImageFormat::Png) => Some(Format::Png),
            Some(ImageFormat::Jpeg) => Some(Format::Jpeg),
            _ => match artifact.media_type.as_str() {
                "image/png" => Some(Format::Png),
                "image/jpeg" | "image/jpg" => Some(Format::Jpeg),
                _ => None,
            },
        }
    }
}

/// Decodes a PNG or JPEG artifact. Anything else, or corrupt data, is the
/// caller's fault: `invalid-input` naming the artifact.
pub fn decode(artifact: &Artifact) -> Result<DynamicImage, StageError> {
    let format = Format::of(artifact).ok_or_else(|| {
        StageError::invalid_input(format!(
            "{}: not a PNG or JPEG image (media type {:?})",
            artifact.name, artifact.media_type
        ))
    })?;
    let format = match format {
        Format::Png => ImageFormat::Png,
        Format::Jpeg => ImageFormat::Jpeg,
    };
    image::load_from_memory_with_format(&artifact.data, format)
        .map_err(|e| StageError::invalid_input(format!("{}: cannot decode image: {e}", artifact.name)))
}

/// Encodes an image; JPEG drops alpha and uses `jpeg_quality` (1-100).
pub fn encode(image: &DynamicImage, format: Format, jpeg_quality: u8) -> Result<Vec<u8>, StageError> {
    let mut out = Vec::new();
    let result = match format {
        Format::Png => image.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png),
        Format::Jpeg => {
            let rgb = image.to_rgb8();
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, jpeg_quality.clamp(1, 100));
            rgb.write_with_encoder(encoder)
        }
    };
    result.map_err(|e| StageError::failed(format!("cannot encode {format:?}: {e}")))?;
    Ok(out)
}

/// An output name `{base}{suffix}` not yet in `used` (then recorded there):
/// `{base}-2{suffix}`, `{base}-3{suffix}`... when inputs share a stem, so
/// no output overwrites another. The one way stages name their outputs:
/// `unique_name(&mut used, stem(&input.name), "_x2.png")`, or with an empty
/// suffix for a unique stem that several outputs of one input then share.
pub fn unique_name(used: &mut std::collections::BTreeSet<String>, base: &str, suffix: &str) -> String {
    let mut name = format!("{base}{suffix}");
    let mut k = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{k}{suffix}");
        k += 1;
    }
    name
}

/// The file stem of an artifact name (`photo.png` -> `photo`), for naming outputs.
pub fn stem(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_follow_the_input_and_stay_unique() {
        let mut used = std::collections::BTreeSet::new();
        assert_eq!(unique_name(&mut used, stem("logo.png"), ".svg"), "logo.svg");
        assert_eq!(unique_name(&mut used, stem("logo.jpg"), ".svg"), "logo-2.svg");
        assert_eq!(unique_name(&mut used, stem("logo"), ".svg"), "logo-3.svg");
        assert_eq!(unique_name(&mut used, stem("logo.png"), "_x2.png"), "logo_x2.png");
        // An empty suffix hands out unique stems.
        let mut stems = std::collections::BTreeSet::new();
        assert_eq!(unique_name(&mut stems, "a", ""), "a");
        assert_eq!(unique_name(&mut stems, "a", ""), "a-2");
    }

    #[test]
    fn stems() {
        assert_eq!(stem("photo.png"), "photo");
        assert_eq!(stem("archive.tar.gz"), "archive.tar");
        assert_eq!(stem(".hidden"), ".hidden");
        assert_eq!(stem("plain"), "plain");
    }
}
