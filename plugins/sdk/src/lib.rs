//! The stagecraft guest SDK: write a pipeline stage as a short Rust file.
//!
//! A stage is a type implementing [`Stage`]: typed params (serde +
//! schemars, so the host gets a JSON Schema for free), a `run` that takes
//! [`Input`] and returns [`Output`] or a [`StageError`]. [`export_stage!`]
//! wires it to the `stagecraft:stage/stage` export of the WIT world.
//!
//! ```ignore
//! use stagecraft_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Params { factor: u32 }
//!
//! struct Double;
//! impl Stage for Double {
//!     type Params = Params;
//!     const NAME: &'static str = "double";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "Doubles things";
//!     fn run(input: Input<Params>) -> Result<Output, StageError> { ... }
//! }
//! export_stage!(Double);
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "image")]
pub mod images;

/// Bindings generated from `wit/` (the `plugin` world). Plugin code rarely
/// needs them directly; they are public for the export macro and for
/// stages that call host services with their raw types.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "stagecraft_sdk::bindings",
    });
}

use bindings::stagecraft::stage::types as wit;
pub use bindings::stagecraft::stage::types::Artifact;

/// Re-exports for `use stagecraft_sdk::prelude::*`.
pub mod prelude {
    pub use crate::{export_stage, log, progress, Artifact, Input, Output, Stage, StageError};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::json;
}

/// A pipeline stage. Implement it and call [`export_stage!`] once.
pub trait Stage {
    /// Typed parameters, deserialised from the caller's JSON. Unknown fields
    /// should be refused (`#[serde(deny_unknown_fields)]`) so typos surface.
    type Params: DeserializeOwned + schemars::JsonSchema;

    const NAME: &'static str;
    /// Usually `env!("CARGO_PKG_VERSION")` of the plugin crate.
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    /// Media types accepted as input artifacts; `image/*` style wildcards allowed.
    const ACCEPTS: &'static [&'static str] = &[];
    /// Media types this stage can produce.
    const PRODUCES: &'static [&'static str] = &[];

    fn run(input: Input<Self::Params>) -> Result<Output, StageError>;
}

/// What a stage receives: the input artifacts and its parsed params.
pub struct Input<P> {
    pub artifacts: Vec<Artifact>,
    pub params: P,
}

impl<P> Input<P> {
    /// The first artifact, or `invalid-input` when there is none.
    pub fn first(&self) -> Result<&Artifact, StageError> {
        self.artifacts.first().ok_or_else(|| StageError::invalid_input("this stage needs at least one input artifact"))
    }
}

/// What a stage returns: artifacts plus a JSON metadata object.
#[derive(Default)]
pub struct Output {
    pub artifacts: Vec<Artifact>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Output {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an artifact.
    pub fn artifact(mut self, name: impl Into<String>, media_type: impl Into<String>, data: Vec<u8>) -> Self {
        self.artifacts.push(Artifact { name: name.into(), media_type: media_type.into(), data });
        self
    }

    /// Sets one metadata field.
    pub fn meta(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.metadata.insert(key.to_owned(), value);
        self
    }
}

/// An f32 as a short decimal for metadata (0.3, not 0.30000001192).
pub fn round4(v: f32) -> f64 {
    (v as f64 * 1e4).round() / 1e4
}

/// A stage failure, mapped one to one onto the WIT `stage-error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StageError {
    /// The caller's fault: never retried.
    InvalidInput(String),
    /// Transient: retried with backoff by the scheduler.
    Unavailable(String),
    /// The stage's own failure.
    Failed(String),
}

impl StageError {
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::Unavailable(msg.into())
    }
    pub fn failed(msg: impl Into<String>) -> Self {
        Self::Failed(msg.into())
    }
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Unavailable(m) => write!(f, "unavailable: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl From<StageError> for wit::StageError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::InvalidInput(m) => Self::InvalidInput(m),
            StageError::Unavailable(m) => Self::Unavailable(m),
            StageError::Failed(m) => Self::Failed(m),
        }
    }
}

/// Logging into the host's tracing pipeline. Off wasm32 (a stage's native
/// unit tests) there is no host, and these do nothing.
pub mod log {
    pub use crate::bindings::stagecraft::stage::log::Level;

    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::stagecraft::stage::log::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (level, message);
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Reports progress (`fraction` in 0..=1) to whoever watches the invocation.
/// Off wasm32 (a stage's native unit tests) there is no host: it does nothing.
pub fn progress(fraction: f32, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::stagecraft::stage::progress::report(fraction.clamp(0.0, 1.0), message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (fraction, message);
}

/// Instance segmentation of cell images by the host
/// (`stagecraft:stage/segmentation`): labels and per-object measurements.
pub mod segmentation {
    pub use crate::bindings::stagecraft::stage::segmentation::{
        Cell, GrayImage, SegmentOptions, SegmentationError, SegmentationResult,
    };
    use crate::StageError;

    /// Segments `image` on the host. The host's errors map onto the stage's
    /// own: its `invalid-input` is the caller's fault here too. Off wasm32
    /// (native unit tests) there is no host: `unavailable`.
    pub fn segment(image: &GrayImage, options: &SegmentOptions) -> Result<SegmentationResult, StageError> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::stagecraft::stage::segmentation::segment(image, options).map_err(|e| match e {
                SegmentationError::InvalidInput(m) => StageError::invalid_input(format!("segmentation: {m}")),
                SegmentationError::Unavailable(m) => StageError::unavailable(format!("segmentation: {m}")),
                SegmentationError::Failed(m) => StageError::failed(format!("segmentation: {m}")),
            })
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (image, options);
            Err(StageError::unavailable("segmentation: no host outside WebAssembly"))
        }
    }
}

/// Tensor inference on named models of the host's model repository
/// (`stagecraft:stage/inference`), with helpers for fp32 tensors.
pub mod inference {
    pub use crate::bindings::stagecraft::stage::inference::{InferenceError, Tensor, TensorType};
    use crate::StageError;

    /// An fp32 tensor from row-major values.
    pub fn f32_tensor(name: &str, dimensions: &[u32], values: &[f32]) -> Tensor {
        Tensor {
            name: name.to_owned(),
            dimensions: dimensions.to_vec(),
            ty: TensorType::Fp32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The values of an fp32 tensor; `failed` for another type or a byte
    /// count that does not match its dimensions (the host's fault).
    pub fn f32_values(tensor: &Tensor) -> Result<Vec<f32>, StageError> {
        if tensor.ty != TensorType::Fp32 {
            return Err(StageError::failed(format!("tensor '{}' is {:?}, not fp32", tensor.name, tensor.ty)));
        }
        let elements: u64 = tensor.dimensions.iter().map(|&d| d as u64).product();
        if tensor.data.len() as u64 != elements * 4 {
            return Err(StageError::failed(format!(
                "tensor '{}' of shape {:?} has {} bytes, not {}",
                tensor.name,
                tensor.dimensions,
                tensor.data.len(),
                elements * 4
            )));
        }
        Ok(tensor.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Runs `model` on the host. The raw error comes back so a stage can
    /// tell an unknown model or a host without inference (`unavailable`)
    /// from other failures; [`to_stage_error`] maps it. Off wasm32 (native
    /// unit tests) there is no host: `unavailable`.
    pub fn infer(model: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferenceError> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::stagecraft::stage::inference::infer(model, inputs)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = inputs;
            Err(InferenceError::Unavailable(format!("model '{model}': no host outside WebAssembly")))
        }
    }

    /// The stage error for an inference error: an unknown model or refused
    /// tensors are the caller's choice (`invalid-input`), `unavailable`
    /// stays retryable, the rest is `failed`.
    pub fn to_stage_error(model: &str, e: InferenceError) -> StageError {
        match e {
            InferenceError::UnknownModel(m) => {
                StageError::invalid_input(format!("inference: unknown model '{model}': {m}"))
            }
            InferenceError::InvalidInput(m) => {
                StageError::invalid_input(format!("inference: model '{model}' refused the input: {m}"))
            }
            InferenceError::Unavailable(m) => StageError::unavailable(format!("inference: model '{model}': {m}")),
            InferenceError::Failed(m) => StageError::failed(format!("inference: model '{model}': {m}")),
        }
    }
}

/// Builds the WIT `stage-info` for `S`. Used by [`export_stage!`].
#[doc(hidden)]
pub fn describe<S: Stage>() -> wit::StageInfo {
    let schema = schemars::schema_for!(S::Params);
    wit::StageInfo {
        name: S::NAME.to_owned(),
        version: S::VERSION.to_owned(),
        description: S::DESCRIPTION.to_owned(),
        params_schema: serde_json::to_string(&schema).expect("a schema serialises"),
        accepts: S::ACCEPTS.iter().map(|s| s.to_string()).collect(),
        produces: S::PRODUCES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Parses params, runs `S`, converts the result. Used by [`export_stage!`].
#[doc(hidden)]
pub fn run<S: Stage>(input: wit::StageInput) -> Result<wit::StageOutput, wit::StageError> {
    let params_text = if input.params.trim().is_empty() { "{}" } else { input.params.as_str() };
    let params: S::Params =
        serde_json::from_str(params_text).map_err(|e| wit::StageError::InvalidInput(format!("params: {e}")))?;
    let output = S::run(Input { artifacts: input.artifacts, params }).map_err(wit::StageError::from)?;
    Ok(wit::StageOutput {
        artifacts: output.artifacts,
        metadata: serde_json::Value::Object(output.metadata).to_string(),
    })
}

/// Exports a [`Stage`] implementation as this component's `stage` interface.
/// Only on wasm32: a native build of the stage (its unit tests, the native
/// benchmark) calls [`run`] directly, and the component's export names
/// (`stagecraft:stage/stage@0.1.0#run`) are not valid native symbols.
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        #[cfg(target_arch = "wasm32")]
        struct __StagecraftExport;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::stagecraft::stage::stage::Guest for __StagecraftExport {
            fn describe() -> $crate::bindings::stagecraft::stage::types::StageInfo {
                $crate::describe::<$stage>()
            }
            fn run(
                input: $crate::bindings::stagecraft::stage::types::StageInput,
            ) -> ::core::result::Result<
                $crate::bindings::stagecraft::stage::types::StageOutput,
                $crate::bindings::stagecraft::stage::types::StageError,
            > {
                $crate::run::<$stage>(input)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin!(__StagecraftExport with_types_in $crate::bindings);
    };
}
