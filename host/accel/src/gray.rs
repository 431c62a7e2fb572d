//! Single-channel input images (8 or 16 bits per sample) and their validation.

use crate::segment::SegmentError;

/// A gray image as the segmentation import receives it: row-major samples,
/// 8 or 16 bits each (16-bit samples are little-endian in the wire format).
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    pub width: u32,
    pub height: u32,
    /// 8 or 16.
    pub bits: u8,
    /// One value per pixel, in `0..2^bits`.
    pub samples: Vec<u16>,
}

/// The largest image accepted (pixels), so a bad caller cannot make the host
/// allocate without bound.
pub const MAX_PIXELS: u64 = 100_000_000;

impl GrayImage {
    /// Checks the size against the byte count and the bit depth, then reads
    /// the samples. Every failure is the caller's fault.
    pub fn from_bytes(width: u32, height: u32, bits: u8, data: &[u8]) -> Result<Self, SegmentError> {
        if width == 0 || height == 0 {
            return Err(SegmentError::InvalidInput(format!("image has zero size ({width}x{height})")));
        }
        let pixels = width as u64 * height as u64;
        if pixels > MAX_PIXELS {
            return Err(SegmentError::InvalidInput(format!(
                "image of {width}x{height} exceeds the limit of {MAX_PIXELS} pixels"
            )));
        }
        let bytes_per_sample = match bits {
            8 => 1u64,
            16 => 2,
            other => return Err(SegmentError::InvalidInput(format!("bits-per-sample must be 8 or 16, got {other}"))),
        };
        let expected = pixels * bytes_per_sample;
        if data.len() as u64 != expected {
            return Err(SegmentError::InvalidInput(format!(
                "a {width}x{height} image at {bits} bits needs {expected} bytes of data, got {}",
                data.len()
            )));
        }
        let samples = if bits == 8 {
            data.iter().map(|&v| v as u16).collect()
        } else {
            data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
        };
        Ok(Self { width, height, bits, samples })
    }

    /// An 8-bit image from samples.
    pub fn from_u8(width: u32, height: u32, data: &[u8]) -> Self {
        assert_eq!(data.len(), width as usize * height as usize);
        Self { width, height, bits: 8, samples: data.iter().map(|&v| v as u16).collect() }
    }

    /// The samples as f32, in their own units (0..255 or 0..65535).
    pub fn to_f32(&self) -> Vec<f32> {
        self.samples.iter().map(|&v| v as f32).collect()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}
