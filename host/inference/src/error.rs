//! The errors an inference call can end with; they map one to one onto the
//! WIT `inference-error` variants.

/// Why a call to [`crate::Models::infer`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    /// No model of that name in the repository (or it failed to load).
    #[error("unknown model: {0}")]
    UnknownModel(String),
    /// The tensors do not match the model's inputs (names, types, shapes).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Transient: the model's queue is full, or the call timed out; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The model itself failed while running.
    #[error("failed: {0}")]
    Failed(String),
}
