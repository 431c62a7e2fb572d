//! One invocation: a fresh instance from the stage's `InstancePre`, in a
//! fresh store with its own limits and scratch directory, running `run`
//! under an epoch deadline, with the failure classified.

use crate::capacity::InvocationMeter;
use crate::config::InvocationLimits;
use crate::error::InvokeError;
use crate::host::bindings::{stagecraft::stage::types as wit, PluginPre};
use crate::registry::StageVersion;
use crate::sandbox::{MemoryLimitExceeded, StoreState};
use crate::types::{Artifact, StageInfo, StageInput, StageOutput};
use crate::Runtime;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use wasmtime::{Store, UpdateDeadline};

/// Per-call settings. Anything left `None` takes the runtime's default.
#[derive(Clone, Default)]
pub struct InvokeOptions {
    pub timeout: Option<Duration>,
    pub memory_bytes: Option<u64>,
    /// Receives progress and log events while the stage runs.
    pub on_event: Option<Arc<dyn Fn(StageEvent) + Send + Sync>>,
}

impl InvokeOptions {
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }
    pub fn with_events(mut self, f: impl Fn(StageEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }
}

/// Something a running stage told the host.
#[derive(Debug, Clone, PartialEq)]
pub enum StageEvent {
    Progress { fraction: f32, message: String },
    Log { level: &'static str, message: String },
}

/// Where a store's events go.
pub struct EventSink {
    stage: Arc<str>,
    sink: Option<Arc<dyn Fn(StageEvent) + Send + Sync>>,
}

impl EventSink {
    pub(crate) fn stage(&self) -> &str {
        &self.stage
    }
    pub(crate) fn emit(&self, event: StageEvent) {
        if let Some(sink) = &self.sink {
            sink(event);
        }
    }
}

/// Raised from the epoch callback when the deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Builds a store with limits and a deadline; every epoch tick before the
/// deadline yields to the executor, so long stages share threads fairly
/// (and the CPU-slot wrapper learns that the instance is still computing).
fn new_store(
    rt: &Runtime,
    stage: &str,
    limits: InvocationLimits,
    sink: Option<Arc<dyn Fn(StageEvent) + Send + Sync>>,
    scratch: &std::path::Path,
    meter: Arc<InvocationMeter>,
) -> anyhow::Result<(Store<StoreState>, Instant)> {
    let events = EventSink { stage: Arc::from(stage), sink };
    let quotas = &rt.inner.config.quotas;
    let mut state = StoreState::new(scratch, limits.memory_bytes, quotas, events)?;
    state.http_hooks = rt.inner.http.hooks_for(stage, meter.clone());
    state.models = rt.inner.config.models.clone();
    state.meter = meter.clone();
    let mut store = Store::new(rt.inner.engine.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // What the guest may hand the host in one call (the output of `run`
    // included): just above the output quota, so that [`crate::output`]
    // names the quota for outputs up to there, and a larger one fails in
    // the copy, before the host allocates it ([`classify`] names it too).
    store.set_hostcall_fuel(hostcall_fuel(quotas));
    let deadline = Instant::now() + limits.timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            meter.epoch_yield();
            Ok(UpdateDeadline::Yield(1))
        }
    });
    Ok((store, deadline))
}

/// Runs one invocation on the runtime's CPU slots: it queues for a slot
/// before its instance exists, and gives the slot back whenever it waits
/// in a host call (see [`crate::capacity`]).
pub(crate) async fn invoke(
    rt: &Runtime,
    version: &Arc<StageVersion>,
    input: StageInput,
    options: InvokeOptions,
) -> Result<StageOutput, InvokeError> {
    let meter = Arc::new(InvocationMeter::default());
    rt.inner.cpu.run(meter.clone(), run_instance(rt, version, input, options, meter)).await
}

async fn run_instance(
    rt: &Runtime,
    version: &Arc<StageVersion>,
    input: StageInput,
    options: InvokeOptions,
    meter: Arc<InvocationMeter>,
) -> Result<StageOutput, InvokeError> {
    let defaults = rt.inner.config.limits;
    let limits = InvocationLimits {
        timeout: options.timeout.unwrap_or(defaults.timeout),
        memory_bytes: options.memory_bytes.unwrap_or(defaults.memory_bytes).min(rt.inner.config.max_memory_bytes),
    };
    let span = tracing::debug_span!("invoke", stage = %version.info.name, version = %version.info.version);
    async move {
        let scratch = rt.inner.scratch.acquire().map_err(InvokeError::Host)?;
        // The deadline starts now, with the first CPU slot, and covers
        // waiting in host calls as well as computing.
        let (mut store, deadline) = new_store(rt, &version.info.name, limits, options.on_event, scratch.path(), meter)
            .map_err(InvokeError::Host)?;
        let params = if input.params.is_null() { "{}".to_owned() } else { input.params.to_string() };
        let wit_input = wit::StageInput {
            artifacts: input
                .artifacts
                .into_iter()
                .map(|a| wit::Artifact { name: a.name, media_type: a.media_type, data: a.data })
                .collect(),
            params,
        };
        let call = async {
            let plugin = version.pre.instantiate_async(&mut store).await?;
            rt.inner.engine.count_instantiation();
            plugin.stagecraft_stage_stage().call_run(&mut store, &wit_input).await
        };
        // Epoch checks stop a stage that computes; this stops one that waits.
        let result = match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
        };
        rt.saw_memory(&version.digest, store.data().limiter.peak_linear());
        finish_events(store.data_mut());
        let quotas = &rt.inner.config.quotas;
        let cut = |m: String| crate::output::truncate_message(&m, quotas.error_bytes);
        match result {
            Ok(Ok(out)) => {
                let artifacts = out
                    .artifacts
                    .into_iter()
                    .map(|a| Artifact { name: a.name, media_type: a.media_type, data: a.data })
                    .collect();
                let (artifacts, metadata) =
                    crate::output::finish(artifacts, &out.metadata, quotas).map_err(InvokeError::Quota)?;
                Ok(StageOutput {
                    artifacts,
                    metadata,
                    stage: version.info.name.clone(),
                    version: version.info.version.clone(),
                    digest: version.digest.clone(),
                })
            }
            Ok(Err(wit::StageError::InvalidInput(m))) => Err(InvokeError::InvalidInput(cut(m))),
            Ok(Err(wit::StageError::Unavailable(m))) => Err(InvokeError::Unavailable(cut(m))),
            Ok(Err(wit::StageError::Failed(m))) => Err(InvokeError::Failed(cut(m))),
            Err(e) => Err(classify(e, limits, quotas, &store.data().stderr)),
        }
    }
    .instrument(span)
    .await
}

/// The guest-to-host copy budget for one call (see [`Store::set_hostcall_fuel`]).
fn hostcall_fuel(quotas: &crate::config::Quotas) -> usize {
    let fuel = quotas.output_bytes.saturating_add(quotas.metadata_bytes).saturating_add(1 << 20);
    usize::try_from(fuel).unwrap_or(usize::MAX)
}

/// Delivers what the event gate held back when the call ends: the latest
/// progress report, and one line saying how many log lines were dropped.
fn finish_events(state: &mut StoreState) {
    let end = state.gate.finish();
    if let Some((fraction, message)) = end.progress {
        state.events.emit(StageEvent::Progress { fraction, message });
    }
    if let Some(summary) = end.summary {
        crate::host::emit_log(state, crate::host::bindings::stagecraft::stage::log::Level::Warn, summary);
    }
}

/// Tells apart a deadline, a memory hog, a quota, a panic, a crash and a
/// host failure. A crash is one line; its wasm backtrace and the stage's
/// stderr go to the log.
fn classify(
    e: wasmtime::Error,
    limits: InvocationLimits,
    quotas: &crate::config::Quotas,
    stderr: &crate::stderr::StderrTail,
) -> InvokeError {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        return InvokeError::Timeout(limits.timeout);
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return InvokeError::MemoryLimit { requested: m.requested, limit: m.limit };
    }
    if let Some(q) = e.downcast_ref::<crate::quota::QuotaExceeded>() {
        return InvokeError::Quota(q.clone());
    }
    let text = format!("{e:#}");
    if text.contains("fuel allocated for hostcalls has been exhausted") {
        return InvokeError::Quota(crate::quota::QuotaExceeded::new(
            crate::quota::QuotaKind::OutputBytes,
            quotas.output_bytes,
        ));
    }
    if text.contains("maximum concurrent") || text.contains("pooling allocator") {
        // Every slot is in use: transient.
        return InvokeError::Unavailable(format!("no free instance slot: {text}"));
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        let stderr = stderr.text();
        if !stderr.trim().is_empty() {
            tracing::info!(target: "stage", "stderr before the crash: {}", stderr.trim_end());
        }
        tracing::debug!("the stage trapped: {e:?}");
        if let Some(message) = crate::stderr::panic_message(&stderr) {
            return InvokeError::Panicked(crate::output::truncate_message(&message, quotas.error_bytes));
        }
        // The trap itself in one line; the backtrace is in the debug log.
        return InvokeError::Trap(trap.to_string());
    }
    InvokeError::Host(e.into())
}

/// Calls `describe` on a fresh instance (at load time, outside any async
/// context the caller may or may not be in).
pub(crate) fn describe(rt: &Runtime, pre: &PluginPre<StoreState>) -> anyhow::Result<StageInfo> {
    let scratch = rt.inner.scratch.acquire()?;
    let limits = InvocationLimits { timeout: Duration::from_secs(10), ..rt.inner.config.limits };
    let (mut store, _) = new_store(rt, "describe", limits, None, scratch.path(), Default::default())?;
    let info = block_on(async {
        let plugin = pre.instantiate_async(&mut store).await?;
        plugin.stagecraft_stage_stage().call_describe(&mut store).await
    })
    .map_err(|e| anyhow::anyhow!("{}", classify(e, limits, &rt.inner.config.quotas, &store.data().stderr)))?;
    let params_schema = serde_json::from_str(&info.params_schema)
        .map_err(|e| anyhow::anyhow!("describe() returned a params schema that is not JSON: {e}"))?;
    Ok(StageInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        params_schema,
        accepts: info.accepts,
        produces: info.produces,
    })
}

/// A minimal executor for the synchronous load path: wasmtime's async calls
/// only wait on epoch yields there, which wake immediately.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}
