//! The standard `wasi:nn` interface (`wasi:nn@0.2.0-rc-2024-10-28`, the
//! version wasmtime 48's wasi-nn serves; WIT vendored in
//! `wit/deps/wasi-nn/`), answered from the runtime's model repository, so
//! plugins written for wasmtime's wasi-nn run here unchanged.
//!
//! `graph.load-by-name(name)` names a repository model; `compute` goes
//! through [`stagecraft_inference::Models::infer`], so wasi:nn calls are
//! checked against the model's config and batched with every other caller
//! (the `inference` import included). `graph.load` (model bytes from the
//! guest) answers `unsupported-operation`: this host runs only the models
//! its operator put in the repository. Tensors: fp32, u8, i32 and i64;
//! fp16, bf16 and fp64 get `invalid-argument`.
//!
//! Every graph, context, tensor and error lives in the store's resource
//! table and is charged to the stage's memory limit (see
//! [`crate::sandbox::MemoryLimiter`]) until the guest drops it, so a guest
//! cannot park more data on the host than it could hold itself.

use crate::sandbox::StoreState;
use bindings::wasi::nn::{errors, graph, inference, tensor};
use errors::ErrorCode;
use stagecraft_inference::{DType, InferError};
use tensor::TensorType;
use wasmtime::component::Resource;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/wasi-nn",
        world: "ml",
        with: {
            "wasi:nn/graph.graph": super::Graph,
            "wasi:nn/tensor.tensor": super::NnTensor,
            "wasi:nn/inference.graph-execution-context": super::ExecutionContext,
            "wasi:nn/errors.error": super::NnError,
        },
        imports: {
            "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
            default: trappable,
        },
    });
}

/// A repository model, by name (the `graph` resource). Calls resolve the
/// name each time, so a reloaded model serves graphs loaded before.
pub struct Graph {
    model: String,
}

/// The `graph-execution-context` resource: a graph ready to compute.
pub struct ExecutionContext {
    model: String,
}

/// The `tensor` resource: dimensions, element type and row-major
/// little-endian bytes, as the guest built it or a model returned it.
pub struct NnTensor {
    dimensions: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

/// The `error` resource: a wasi-nn code and a message for people.
pub struct NnError {
    code: ErrorCode,
    message: String,
}

/// Host bytes charged per resource beyond its contents (the table entry).
const ENTRY_BYTES: u64 = 64;

/// What a resource costs the stage's memory budget while it lives.
trait Charged: Send + 'static {
    fn bytes(&self) -> u64;
}

impl Charged for Graph {
    fn bytes(&self) -> u64 {
        ENTRY_BYTES + self.model.len() as u64
    }
}

impl Charged for ExecutionContext {
    fn bytes(&self) -> u64 {
        ENTRY_BYTES + self.model.len() as u64
    }
}

impl Charged for NnTensor {
    fn bytes(&self) -> u64 {
        ENTRY_BYTES + self.data.len() as u64 + 4 * self.dimensions.len() as u64
    }
}

impl Charged for NnError {
    fn bytes(&self) -> u64 {
        ENTRY_BYTES + self.message.len() as u64
    }
}

/// A wasi-nn call's answer: the value, or an `error` resource.
type NnResult<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl StoreState {
    /// Puts a resource in the table, charged to the memory limit; over the
    /// limit the guest traps as it would growing its own memory.
    fn nn_push<T: Charged>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        let bytes = value.bytes();
        self.limiter.charge_host(bytes).map_err(wasmtime::Error::new)?;
        self.nn_push_charged(value, bytes)
    }

    /// Like [`StoreState::nn_push`] for a value already charged.
    fn nn_push_charged<T: Charged>(&mut self, value: T, bytes: u64) -> wasmtime::Result<Resource<T>> {
        self.table.push(value).map_err(|e| {
            self.limiter.release_host(bytes);
            wasmtime::Error::from(e)
        })
    }

    /// Takes a resource out of the table and returns its charge.
    fn nn_delete<T: Charged>(&mut self, resource: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(resource)?;
        self.limiter.release_host(value.bytes());
        Ok(value)
    }

    /// Answers with a wasi-nn `error` resource.
    fn nn_error<T>(&mut self, code: ErrorCode, message: String) -> NnResult<T> {
        tracing::debug!(target: "wasi_nn", stage = self.events.stage(), ?code, "{message}");
        let error = self.nn_push(NnError { code, message })?;
        Ok(Err(error))
    }
}

impl graph::Host for StoreState {
    fn load(
        &mut self,
        builders: Vec<graph::GraphBuilder>,
        encoding: graph::GraphEncoding,
        target: graph::ExecutionTarget,
    ) -> NnResult<Resource<Graph>> {
        let bytes: usize = builders.iter().map(Vec::len).sum();
        drop(builders);
        let models = match &self.models {
            Some(models) => models.list().into_iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
            None => "none: this host has no model repository (start it with --models DIR)".to_owned(),
        };
        self.nn_error(
            ErrorCode::UnsupportedOperation,
            format!(
                "graph.load ({encoding:?} for {target:?}, {bytes} bytes) is not supported: this host runs only \
                 the models in its repository; use graph.load-by-name (models: {models})"
            ),
        )
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<Graph>> {
        let Some(models) = self.models.clone() else {
            return self.nn_error(
                ErrorCode::UnsupportedOperation,
                format!("this host has no model repository (start it with --models DIR); model '{name}'"),
            );
        };
        if let Err(e) = models.ensure_loaded(&name) {
            return self.nn_error(code_of(&e), e.to_string());
        }
        tracing::debug!(target: "wasi_nn", stage = self.events.stage(), model = %name, "graph loaded by name");
        Ok(Ok(self.nn_push(Graph { model: name })?))
    }
}

impl graph::HostGraph for StoreState {
    fn init_execution_context(&mut self, graph: Resource<Graph>) -> NnResult<Resource<ExecutionContext>> {
        let model = self.table.get(&graph)?.model.clone();
        Ok(Ok(self.nn_push(ExecutionContext { model })?))
    }

    fn drop(&mut self, graph: Resource<Graph>) -> wasmtime::Result<()> {
        self.nn_delete(graph).map(|_| ())
    }
}

impl inference::Host for StoreState {}

impl inference::HostGraphExecutionContext for StoreState {
    async fn compute(
        &mut self,
        context: Resource<ExecutionContext>,
        inputs: Vec<inference::NamedTensor>,
    ) -> NnResult<Vec<inference::NamedTensor>> {
        let model = self.table.get(&context)?.model.clone();
        // The inputs are owned handles: they are the host's now, and their
        // charge is returned once the call no longer needs their data.
        let mut given = Vec::with_capacity(inputs.len());
        let mut held = 0;
        for (name, resource) in inputs {
            let t = self.table.delete(resource)?;
            held += t.bytes();
            given.push((name, t));
        }
        let outputs = self.nn_compute(&model, given).await;
        self.limiter.release_host(held);
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err((code, message)) => return self.nn_error(code, message),
        };
        let tensors: Vec<(String, NnTensor)> = outputs.into_iter().map(tensor_out).collect();
        let total: u64 = tensors.iter().map(|(_, t)| t.bytes()).sum();
        if let Err(over) = self.limiter.charge_host(total) {
            return self.nn_error(
                ErrorCode::TooLarge,
                format!(
                    "model '{model}' returned {total} bytes of tensors; with what this stage already holds that is \
                     {} bytes, over its memory limit of {} bytes",
                    over.requested, over.limit
                ),
            );
        }
        let mut named = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let bytes = t.bytes();
            named.push((name, self.nn_push_charged(t, bytes)?));
        }
        Ok(Ok(named))
    }

    fn drop(&mut self, context: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.nn_delete(context).map(|_| ())
    }
}

impl StoreState {
    /// Checks the guest's tensors and runs them through the repository.
    async fn nn_compute(
        &mut self,
        model: &str,
        given: Vec<(String, NnTensor)>,
    ) -> Result<Vec<stagecraft_inference::Tensor>, (ErrorCode, String)> {
        let models = self.models.clone().ok_or_else(|| {
            (
                ErrorCode::UnsupportedOperation,
                format!("this host has no model repository (start it with --models DIR); model '{model}'"),
            )
        })?;
        let inputs = given
            .into_iter()
            .map(|(name, t)| tensor_in(model, name, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| (ErrorCode::InvalidArgument, m))?;
        let span = tracing::debug_span!("wasi_nn.compute", stage = self.events.stage(), model = %model);
        let _parked = self.meter.waiting(crate::capacity::WaitKind::WasiNn);
        tracing::Instrument::instrument(models.infer(model, inputs), span)
            .await
            .map_err(|e| (code_of(&e), e.to_string()))
    }
}

/// The repository's errors as wasi-nn codes (the message keeps the kind:
/// `unavailable: ...` tells a transient refusal from a failure).
fn code_of(e: &InferError) -> ErrorCode {
    match e {
        InferError::UnknownModel(_) => ErrorCode::NotFound,
        InferError::InvalidInput(_) => ErrorCode::InvalidArgument,
        InferError::Unavailable(_) | InferError::Failed(_) => ErrorCode::RuntimeError,
    }
}

/// A guest tensor as the repository takes it, with its size checked here
/// (the dimensions are the guest's, so their product may overflow).
fn tensor_in(model: &str, name: String, t: NnTensor) -> Result<stagecraft_inference::Tensor, String> {
    let dtype = match t.ty {
        TensorType::Fp32 => DType::F32,
        TensorType::U8 => DType::U8,
        TensorType::I32 => DType::I32,
        TensorType::I64 => DType::I64,
        TensorType::Fp16 | TensorType::Bf16 | TensorType::Fp64 => {
            return Err(format!(
                "model '{model}': tensor '{name}' is {}; this host's CPU engine takes FP32, U8, I32 and I64 \
                 tensors (convert to FP32)",
                type_name(t.ty)
            ))
        }
    };
    let shape: Vec<usize> = t.dimensions.iter().map(|&d| d as usize).collect();
    let bytes = shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d));
    if bytes != Some(t.data.len()) {
        return Err(format!(
            "model '{model}': tensor '{name}' of {} {:?} needs {} bytes, got {}",
            type_name(t.ty),
            t.dimensions,
            bytes.map_or_else(|| "more than addressable".to_owned(), |b| b.to_string()),
            t.data.len()
        ));
    }
    Ok(stagecraft_inference::Tensor { name, shape, dtype, data: t.data })
}

/// The WIT spelling of a tensor type, for messages.
fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "FP16",
        TensorType::Fp32 => "FP32",
        TensorType::Fp64 => "FP64",
        TensorType::Bf16 => "BF16",
        TensorType::U8 => "U8",
        TensorType::I32 => "I32",
        TensorType::I64 => "I64",
    }
}

fn tensor_out(t: stagecraft_inference::Tensor) -> (String, NnTensor) {
    let ty = match t.dtype {
        DType::F16 => TensorType::Fp16,
        DType::F32 => TensorType::Fp32,
        DType::Bf16 => TensorType::Bf16,
        DType::U8 => TensorType::U8,
        DType::I32 => TensorType::I32,
        DType::I64 => TensorType::I64,
    };
    let dimensions = t.shape.iter().map(|&d| d as u32).collect();
    (t.name, NnTensor { dimensions, ty, data: t.data })
}

impl tensor::Host for StoreState {}

impl tensor::HostTensor for StoreState {
    fn new(&mut self, dimensions: Vec<u32>, ty: TensorType, data: Vec<u8>) -> wasmtime::Result<Resource<NnTensor>> {
        self.nn_push(NnTensor { dimensions, ty, data })
    }

    fn dimensions(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    fn ty(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&tensor)?.ty)
    }

    fn data(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    fn drop(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.nn_delete(tensor).map(|_| ())
    }
}

impl errors::Host for StoreState {}

impl errors::HostError for StoreState {
    fn code(&mut self, error: Resource<NnError>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<NnError>) -> wasmtime::Result<()> {
        self.nn_delete(error).map(|_| ())
    }
}

/// Adds the four wasi:nn interfaces to the runtime's linker. Components
/// that do not import them are unaffected.
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<StoreState>) -> wasmtime::Result<()> {
    bindings::Ml::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)
}
