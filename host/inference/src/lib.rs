//! The stagecraft model repository and inference service.
//!
//! A folder of ONNX models ([`repository`], with each model's
//! `config.json` parsed by [`config`]), run by ONNX Runtime loaded at run
//! time ([`ort_engine`]: CPU, or its CUDA provider), by the five-op GPU
//! engine ([`gpu`]) or by tract, the pure-Rust reference and fallback
//! ([`engine`] decides), behind a dynamic batcher per model ([`batcher`]). Callers
//! hand [`Models::infer`] named [`Tensor`]s and get the model's outputs or
//! an [`InferError`] that maps onto the WIT `inference-error`.

pub mod batcher;
pub mod bench;
pub mod config;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod onnx_build;
pub mod ort_engine;
pub mod repository;
pub mod tensor;

pub use batcher::ModelStats;
pub use config::ModelConfig;
pub use engine::{EngineChoice, EngineKind, EngineOptions};
pub use error::InferError;
pub use gpu::Placement;
pub use repository::{ModelInfo, Models, ScanReport, Watcher};
pub use tensor::{DType, Tensor};
