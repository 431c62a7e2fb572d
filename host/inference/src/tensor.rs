//! Tensors as they cross the host boundary: a name, a shape, an element
//! type and row-major little-endian bytes (the WIT `tensor` record's shape,
//! free of wasmtime types so this crate does not depend on the runtime).

use std::fmt;

/// Element types the WIT interface names. The engine runs fp32, u8, i32 and
/// i64; fp16 and bf16 are refused with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    F32,
    Bf16,
    U8,
    I32,
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F16 | DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
        }
    }

    /// Parses the names a `config.json` may use (`fp32`, `float32`,
    /// Triton's `TYPE_FP32`...).
    pub fn parse(s: &str) -> Option<DType> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("type_").unwrap_or(&s);
        Some(match s {
            "fp16" | "f16" | "float16" | "half" => DType::F16,
            "fp32" | "f32" | "float32" | "float" => DType::F32,
            "bf16" | "bfloat16" => DType::Bf16,
            "u8" | "uint8" => DType::U8,
            "i32" | "int32" => DType::I32,
            "i64" | "int64" => DType::I64,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F16 => "fp16",
            DType::F32 => "fp32",
            DType::Bf16 => "bf16",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
        })
    }
}

/// One named tensor. `data` holds `shape.iter().product() * dtype.size()`
/// bytes, row-major, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

impl Tensor {
    /// An fp32 tensor from values (convenient for callers and tests).
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor { name: name.into(), shape, dtype: DType::F32, data }
    }

    /// The values of an fp32 tensor, or `None` for another type.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32)
            .then(|| self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Bytes the shape and type call for, or `None` when that overflows
    /// `usize` (a caller's shape is not trusted: `[2^40, 2^40]` must be an
    /// error, not a panic).
    pub fn expected_bytes(&self) -> Option<usize> {
        self.shape.iter().try_fold(self.dtype.size(), |acc, &d| acc.checked_mul(d))
    }
}

/// `[1, 3, 64, 64]`, for messages.
pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_bytes_counts_the_type_and_refuses_overflow() {
        let t = Tensor { name: "x".into(), shape: vec![2, 3, 4], dtype: DType::I64, data: Vec::new() };
        assert_eq!(t.expected_bytes(), Some(2 * 3 * 4 * 8));
        let huge = Tensor { shape: vec![1 << 40, 1 << 40], ..t };
        assert_eq!(huge.expected_bytes(), None);
    }
}
