//! The execution engine: runs a validated [`Pipeline`] as a DAG, generic over
//! how one step is executed ([`StepRunner`]) and over the artifact type `A`.
//!
//! Semantics:
//! - a step starts as soon as every dependency has succeeded (no barriers
//!   between groups); among ready steps, higher `priority` first, then (in
//!   parallel runs) the step with the longest chain of steps still waiting
//!   on it, then declaration order. Starting the longest chain first is
//!   Hu's rule, optimal for unit-cost chains and trees, and what keeps a
//!   long tail from running alone at the end;
//! - concurrency: each enclosing group's `max_workers`, and the run's
//!   `max_workers` (1 when not parallel), must all have a free slot;
//! - `rate_limit_delay` spaces step starts;
//! - a step that does not succeed makes its dependents `skipped` (the reason
//!   names the dependency); in a `fail_fast` group (nested groups included:
//!   every fail-fast ancestor applies) the first failure cancels the group's
//!   running steps and skips its waiting ones;
//! - group and run timeouts end the unfinished steps they cover as `timed_out`;
//!   a group's clock starts when its first step starts, the run's at once;
//! - the cancellation token ends everything as `cancelled`.
//!
//! Cancelling a running step drops its future (inside its task, before the
//! engine records the end), which the host treats as cancellation. The engine
//! calls [`StepRunner::run_step`] once per step: retries and the per-attempt
//! `timeout` are passed along in [`ReadyStep`] for the runner (the host's
//! scheduler) to apply. Step futures run as tokio tasks, so they run in
//! parallel on a multi-threaded runtime.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dag::Pipeline;
use crate::event::{Event, Observer};
use crate::report::{Execution, RunReport, RunStatus, StepReport, StepStatus};
use crate::template::{render_value, RenderContext};

/// A boxed, sendable future (the same shape as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A step whose dependencies are done, handed to the [`StepRunner`].
#[derive(Debug, Clone)]
pub struct ReadyStep<A> {
    /// The run's id.
    pub run_id: String,
    /// Step name.
    pub name: String,
    /// Stage to run.
    pub stage: String,
    /// Params with templates rendered.
    pub params: Value,
    /// Per-attempt timeout from the spec, for the runner to apply.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt, for the runner to apply.
    pub retries: u32,
    /// The step's priority (default 0), for the runner's queues.
    pub priority: i64,
    /// The step's `cache:` (None: the stage decides), for the runner.
    pub cache: Option<bool>,
    /// Artifacts of the `input_from` steps in order, or the pipeline's input files.
    pub inputs: Vec<A>,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput<A> {
    /// Output artifacts, passed to dependents that take input from this step.
    pub artifacts: Vec<A>,
    /// Output metadata, reachable from templates as `steps.<name>.metadata`.
    pub metadata: Value,
    /// How the runner executed it, copied into the step's report.
    pub execution: Option<Execution>,
}

impl<A> StepOutput<A> {
    /// An output with artifacts and metadata.
    pub fn new(artifacts: Vec<A>, metadata: Value) -> Self {
        Self { artifacts, metadata, execution: None }
    }

    /// Attaches execution details for the report.
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.execution = Some(execution);
        self
    }
}

/// Why a step failed (after whatever retries the runner did).
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    /// What went wrong.
    pub message: String,
    /// Whether a later attempt might succeed (informational for the report).
    pub retryable: bool,
    /// How the runner executed it (attempts made...), copied into the report.
    pub execution: Option<Execution>,
}

impl StepFailure {
    /// A failure that retrying would not fix.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, execution: None }
    }

    /// A transient failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, execution: None }
    }

    /// Attaches execution details for the report.
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.execution = Some(execution);
        self
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepFailure {}

/// Executes one step. Implemented by the host (on top of its scheduler and
/// runtime) and by test fakes; closures `Fn(ReadyStep<A>) -> BoxFuture<..>`
/// implement it too.
pub trait StepRunner<A>: Send + Sync + 'static {
    /// Runs one step. Inputs are the outputs of the steps in `input_from` (in
    /// order), or the pipeline inputs. Dropping the future cancels the step.
    fn run_step(&self, step: ReadyStep<A>) -> BoxFuture<'static, Result<StepOutput<A>, StepFailure>>;
}

impl<A, F> StepRunner<A> for F
where
    F: Fn(ReadyStep<A>) -> BoxFuture<'static, Result<StepOutput<A>, StepFailure>> + Send + Sync + 'static,
{
    fn run_step(&self, step: ReadyStep<A>) -> BoxFuture<'static, Result<StepOutput<A>, StepFailure>> {
        self(step)
    }
}

/// The caller's input to a run.
#[derive(Debug, Clone)]
pub struct RunInput<A> {
    /// Text for `{{input}}`; referencing it when None fails the step.
    pub text: Option<String>,
    /// Input files for steps without `input_from`.
    pub files: Vec<A>,
}

impl<A> Default for RunInput<A> {
    fn default() -> Self {
        Self { text: None, files: Vec::new() }
    }
}

impl<A> RunInput<A> {
    /// Input text only.
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: Some(text.into()), files: Vec::new() }
    }
}

/// How to run: overrides, cancellation and observation.
#[derive(Clone)]
pub struct RunOptions {
    /// Id for `{{run.id}}` and the report.
    pub run_id: String,
    /// Overrides `settings.parallel` (the caller maps `STAGECRAFT_PARALLEL` here).
    pub parallel: Option<bool>,
    /// Overrides `settings.max_workers`.
    pub max_workers: Option<usize>,
    /// Cancels the whole run.
    pub cancel: CancellationToken,
    /// Receives [`Event`]s.
    pub observer: Option<Observer>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            run_id: "run".to_owned(),
            parallel: None,
            max_workers: None,
            cancel: CancellationToken::new(),
            observer: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_id", &self.run_id)
            .field("parallel", &self.parallel)
            .field("max_workers", &self.max_workers)
            .field("cancelled", &self.cancel.is_cancelled())
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// A finished run: the report, and the outputs of the steps that succeeded.
#[derive(Debug)]
pub struct RunOutcome<A> {
    /// Statuses, timings, critical path.
    pub report: RunReport,
    /// Outputs by step name (succeeded steps only).
    pub outputs: HashMap<String, StepOutput<A>>,
}

/// Runs pipelines with a [`StepRunner`].
pub struct DagExecutor<R> {
    runner: Arc<R>,
}

impl<R> Clone for DagExecutor<R> {
    fn clone(&self) -> Self {
        Self { runner: self.runner.clone() }
    }
}

impl<R> DagExecutor<R> {
    /// An engine that executes steps with `runner`.
    pub fn new(runner: R) -> Self {
        Self { runner: Arc::new(runner) }
    }

    /// An engine sharing an existing runner.
    pub fn from_arc(runner: Arc<R>) -> Self {
        Self { runner }
    }

    /// The runner.
    pub fn runner(&self) -> &Arc<R> {
        &self.runner
    }

    /// Runs `pipeline` to the end (every step succeeded, failed, timed out,
    /// was cancelled or skipped) and reports. Needs a tokio runtime.
    pub async fn run<A>(&self, pipeline: &Pipeline, input: RunInput<A>, options: RunOptions) -> RunOutcome<A>
    where
        R: StepRunner<A>,
        A: Clone + Send + Sync + 'static,
    {
        let span = tracing::info_span!("pipeline_run", pipeline = pipeline.name(), run_id = %options.run_id);
        Run::new(pipeline, input, &options).execute(&self.runner, &options).instrument(span).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Ready,
    Running,
    Done,
}

struct StepState {
    phase: Phase,
    remaining: usize,
    /// Decided status; for a running step, decided before its task has ended.
    status: Option<StepStatus>,
    error: Option<String>,
    retryable: bool,
    /// When the runner was handed the step.
    queued: Option<Instant>,
    started: Option<Instant>,
    finished: Option<Instant>,
    stop: Option<CancellationToken>,
    execution: Option<Execution>,
}

struct GroupState {
    running: usize,
    deadline: Option<Instant>,
    expired: bool,
}

/// What a step's task returns.
enum StepEnd<A> {
    Done(Result<StepOutput<A>, StepFailure>),
    Stopped,
}

struct Run<'p, A> {
    pipeline: &'p Pipeline,
    run_id: String,
    input: RunInput<A>,
    observer: Option<Observer>,
    start: Instant,
    root_limit: Option<usize>,
    steps: Vec<StepState>,
    groups: Vec<GroupState>,
    ready: Vec<usize>,
    /// Per step: the longest chain of steps it heads (itself included), in
    /// parallel runs; all 0 when sequential, which keeps declaration order.
    chain: Vec<usize>,
    outputs: Vec<Option<StepOutput<A>>>,
    last_start: Option<Instant>,
    cancelled: bool,
    timed_out: bool,
}

/// For each step, the number of steps on the longest path from it through
/// its dependents (itself included). The graph is acyclic (validated).
fn chain_lengths(pipeline: &Pipeline) -> Vec<usize> {
    fn visit(steps: &[crate::dag::PlannedStep], s: usize, memo: &mut [usize]) -> usize {
        if memo[s] == 0 {
            let below = steps[s].dependents.iter().map(|&d| visit(steps, d, memo)).max().unwrap_or(0);
            memo[s] = 1 + below;
        }
        memo[s]
    }
    let steps = pipeline.steps();
    let mut memo = vec![0; steps.len()];
    for s in 0..steps.len() {
        visit(steps, s, &mut memo);
    }
    memo
}

impl<'p, A: Clone + Send + Sync + 'static> Run<'p, A> {
    fn new(pipeline: &'p Pipeline, input: RunInput<A>, options: &RunOptions) -> Self {
        let parallel = options.parallel.unwrap_or(pipeline.settings().parallel);
        let root_limit = if parallel { options.max_workers.or(pipeline.settings().max_workers) } else { Some(1) };
        let start = Instant::now();
        Run {
            pipeline,
            run_id: options.run_id.clone(),
            input,
            observer: options.observer.clone(),
            start,
            root_limit,
            steps: pipeline
                .steps()
                .iter()
                .map(|s| StepState {
                    phase: Phase::Waiting,
                    remaining: s.deps.len(),
                    status: None,
                    error: None,
                    retryable: false,
                    queued: None,
                    started: None,
                    finished: None,
                    execution: None,
                    stop: None,
                })
                .collect(),
            groups: pipeline
                .groups()
                .iter()
                .enumerate()
                .map(|(i, g)| GroupState {
                    running: 0,
                    deadline: if i == 0 { g.timeout.map(|t| start + t) } else { None },
                    expired: false,
                })
                .collect(),
            ready: Vec::new(),
            chain: if parallel { chain_lengths(pipeline) } else { vec![0; pipeline.steps().len()] },
            outputs: pipeline.steps().iter().map(|_| None).collect(),
            last_start: None,
            cancelled: false,
            timed_out: false,
        }
    }

    async fn execute<R: StepRunner<A>>(mut self, runner: &Arc<R>, options: &RunOptions) -> RunOutcome<A> {
        let mut tasks: JoinSet<StepEnd<A>> = JoinSet::new();
        let mut ids: HashMap<Id, usize> = HashMap::new();
        for i in 0..self.steps.len() {
            if self.steps[i].remaining == 0 {
                self.make_ready(i);
            }
        }
        loop {
            if options.cancel.is_cancelled() && !self.cancelled {
                self.cancel_all();
            }
            self.expire_groups(Instant::now());
            let rate_wake = if self.cancelled { None } else { self.start_ready(runner, &mut tasks, &mut ids) };
            if tasks.is_empty() && (self.ready.is_empty() || rate_wake.is_none()) {
                debug_assert!(self.ready.is_empty(), "ready steps left with nothing running");
                break;
            }
            let wake = self.next_deadline().into_iter().chain(rate_wake).min();
            let far = Instant::now() + Duration::from_secs(86_400 * 365);
            tokio::select! {
                biased;
                _ = options.cancel.cancelled(), if !self.cancelled => {}
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => self.on_joined(joined, &mut ids),
                _ = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => {}
            }
        }
        self.finish()
    }

    fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    fn emit(&self, event: Event) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    fn name(&self, s: usize) -> &'p str {
        &self.pipeline.steps()[s].name
    }

    fn make_ready(&mut self, s: usize) {
        self.steps[s].phase = Phase::Ready;
        self.ready.push(s);
        let at = self.at(Instant::now());
        self.emit(Event::Queued { step: self.name(s).to_owned(), at });
    }

    fn limit(&self, g: usize) -> Option<usize> {
        if g == 0 {
            self.root_limit
        } else {
            self.pipeline.groups()[g].max_workers
        }
    }

    fn has_slot(&self, s: usize) -> bool {
        self.pipeline.steps()[s].groups.iter().all(|&g| self.limit(g).is_none_or(|l| self.groups[g].running < l))
    }

    /// Starts ready steps while slots allow; returns when the rate limit next
    /// allows a start, if it is what holds a step back.
    fn start_ready<R: StepRunner<A>>(
        &mut self,
        runner: &Arc<R>,
        tasks: &mut JoinSet<StepEnd<A>>,
        ids: &mut HashMap<Id, usize>,
    ) -> Option<Instant> {
        let steps = self.pipeline.steps();
        let delay = self.pipeline.settings().rate_limit_delay;
        loop {
            let chain = &self.chain;
            self.ready.sort_by_key(|&s| (std::cmp::Reverse(steps[s].priority), std::cmp::Reverse(chain[s]), s));
            // Nothing can start until a running step ends.
            let pos = self.ready.iter().position(|&s| self.has_slot(s))?;
            let now = Instant::now();
            if let Some(last) = self.last_start {
                if !delay.is_zero() && now < last + delay {
                    return Some(last + delay);
                }
            }
            let s = self.ready.remove(pos);
            self.launch(s, now, runner, tasks, ids);
        }
    }

    /// Renders a step's params and spawns its task (or fails it if rendering fails).
    fn launch<R: StepRunner<A>>(
        &mut self,
        s: usize,
        now: Instant,
        runner: &Arc<R>,
        tasks: &mut JoinSet<StepEnd<A>>,
        ids: &mut HashMap<Id, usize>,
    ) {
        let step = &self.pipeline.steps()[s];
        let params = match self.render(s) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(step = %step.name, error = %e, "step params could not be rendered");
                self.settle(s, StepStatus::Failed, Some(e));
                return;
            }
        };
        let inputs = if step.input_from.is_empty() {
            self.input.files.clone()
        } else {
            step.input_from
                .iter()
                .flat_map(|&d| self.outputs[d].as_ref().map(|o| o.artifacts.clone()).unwrap_or_default())
                .collect()
        };
        let ready = ReadyStep {
            run_id: self.run_id.clone(),
            name: step.name.clone(),
            stage: step.stage.clone(),
            params,
            timeout: step.timeout,
            retries: step.retries,
            priority: step.priority,
            cache: step.cache,
            inputs,
        };
        let stop = CancellationToken::new();
        let st = &mut self.steps[s];
        st.phase = Phase::Running;
        st.queued = Some(now);
        st.started = Some(now);
        st.stop = Some(stop.clone());
        self.last_start = Some(now);
        for &g in &step.groups {
            let gs = &mut self.groups[g];
            gs.running += 1;
            if gs.deadline.is_none() {
                gs.deadline = self.pipeline.groups()[g].timeout.map(|t| now + t);
            }
        }
        self.emit(Event::Started { step: step.name.clone(), stage: step.stage.clone(), at: self.at(now) });
        let span = tracing::info_span!("pipeline_step", step = %step.name, stage = %step.stage);
        let runner = runner.clone();
        let task = async move {
            tracing::debug!("step started");
            let work = runner.run_step(ready);
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => StepEnd::Stopped,
                r = work => StepEnd::Done(r),
            };
            match &result {
                StepEnd::Done(Ok(_)) => tracing::debug!("step succeeded"),
                StepEnd::Done(Err(e)) => tracing::debug!(error = %e.message, "step failed"),
                StepEnd::Stopped => tracing::debug!("step stopped; its future was dropped"),
            }
            result
        }
        .instrument(span);
        let handle = tasks.spawn(task);
        ids.insert(handle.id(), s);
    }

    /// The step's params with templates rendered and, if templated, checked
    /// against the stage's schema.
    fn render(&self, s: usize) -> Result<Value, String> {
        let step = &self.pipeline.steps()[s];
        if !step.templated {
            return Ok(step.params.clone());
        }
        let rendered = render_value(&step.params, &StepContext { run: self, step: s })?;
        if let Some(schema) = self.pipeline.schema(&step.stage) {
            let errors: Vec<String> = schema
                .iter_errors(&rendered)
                .map(|e| {
                    let path = e.instance_path.as_str();
                    if path.is_empty() {
                        e.to_string()
                    } else {
                        format!("at '{path}': {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(format!(
                    "rendered params do not match the schema of stage '{}': {}",
                    step.stage,
                    errors.join("; ")
                ));
            }
        }
        Ok(rendered)
    }

    fn on_joined(&mut self, joined: Result<(Id, StepEnd<A>), JoinError>, ids: &mut HashMap<Id, usize>) {
        let (id, result) = match joined {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(s) = ids.remove(&id) else { return };
        let now = Instant::now();
        for &g in &self.pipeline.steps()[s].groups {
            self.groups[g].running -= 1;
        }
        let st = &mut self.steps[s];
        st.finished = Some(now);
        st.stop = None;
        st.phase = Phase::Done;
        if st.status.is_some() {
            // Stopped by the engine: the status was decided (and propagated) then.
            self.emit_end(s);
            return;
        }
        match result {
            Ok(StepEnd::Done(Ok(mut output))) => {
                self.take_execution(s, output.execution.take());
                self.outputs[s] = Some(output);
                self.settle(s, StepStatus::Succeeded, None);
            }
            Ok(StepEnd::Done(Err(mut failure))) => {
                self.take_execution(s, failure.execution.take());
                self.steps[s].retryable = failure.retryable;
                self.settle(s, StepStatus::Failed, Some(failure.message));
            }
            Ok(StepEnd::Stopped) => self.settle(s, StepStatus::Cancelled, Some("stopped".into())),
            Err(e) => {
                let msg = if e.is_panic() {
                    let p = e.into_panic();
                    let text = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into());
                    format!("the step runner panicked: {text}")
                } else {
                    "the step's task was cancelled by the runtime".to_owned()
                };
                self.settle(s, StepStatus::Failed, Some(msg));
            }
        }
    }

    /// Decides a step's status without propagating it. A running step is told
    /// to stop (its event comes when its task ends); any other step is done now.
    fn decide(&mut self, s: usize, status: StepStatus, error: Option<String>) {
        let st = &mut self.steps[s];
        debug_assert!(st.status.is_none());
        st.status = Some(status);
        st.error = error;
        match st.phase {
            Phase::Running => {
                if let Some(stop) = &st.stop {
                    stop.cancel();
                }
            }
            Phase::Ready | Phase::Waiting => {
                st.phase = Phase::Done;
                self.ready.retain(|&r| r != s);
                self.emit_end(s);
            }
            // Its task has just ended (see `on_joined`).
            Phase::Done => self.emit_end(s),
        }
        if let Some(e) = &self.steps[s].error {
            tracing::info!(step = self.name(s), ?status, error = %e, "step ended");
        } else {
            tracing::info!(step = self.name(s), ?status, "step ended");
        }
    }

    /// Emits the event for a step's final status.
    fn emit_end(&self, s: usize) {
        let st = &self.steps[s];
        let step = self.name(s).to_owned();
        let at = self.at(st.finished.unwrap_or_else(Instant::now));
        let duration = st.started.zip(st.finished).map(|(a, b)| b.saturating_duration_since(a));
        let msg = st.error.clone().unwrap_or_default();
        let event = match st.status.unwrap_or(StepStatus::Skipped) {
            StepStatus::Succeeded => Event::Finished { step, at, duration: duration.unwrap_or_default() },
            StepStatus::Failed => Event::Failed { step, at, duration, error: msg, timed_out: false },
            StepStatus::TimedOut => Event::Failed { step, at, duration, error: msg, timed_out: true },
            StepStatus::Cancelled => Event::Cancelled { step, at, duration, reason: msg },
            StepStatus::Skipped => Event::Skipped { step, at, reason: msg },
        };
        self.emit(event);
    }

    /// Decides a step's status and propagates it: success unlocks dependents;
    /// anything else skips them, and a failure of the step's own (Failed or
    /// TimedOut) makes its fail-fast groups fail fast.
    fn settle(&mut self, s: usize, status: StepStatus, error: Option<String>) {
        self.decide(s, status, error);
        self.propagate(s, 0);
    }

    /// See [`Run::settle`]; `skip_groups` inner groups are left out of fail-fast.
    fn propagate(&mut self, s: usize, skip_groups: usize) {
        let step = &self.pipeline.steps()[s];
        let status = self.steps[s].status.expect("decided");
        if status.is_success() {
            for &d in &step.dependents {
                let st = &mut self.steps[d];
                st.remaining -= 1;
                if st.remaining == 0 && st.phase == Phase::Waiting && st.status.is_none() {
                    self.make_ready(d);
                }
            }
            return;
        }
        if matches!(status, StepStatus::Failed | StepStatus::TimedOut) {
            for &g in step.groups.iter().skip(skip_groups) {
                if self.pipeline.groups()[g].fail_fast {
                    self.fail_fast(g, s);
                }
            }
        }
        let what = match status {
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed out",
            StepStatus::Cancelled => "was cancelled",
            StepStatus::Skipped => "was skipped",
            StepStatus::Succeeded => unreachable!(),
        };
        let cause = match status {
            StepStatus::Skipped => match &self.steps[s].error {
                Some(e) => format!(" ({e})"),
                None => String::new(),
            },
            _ => String::new(),
        };
        for &d in &step.dependents {
            if self.steps[d].status.is_none() {
                let reason = format!("dependency '{}' {what}{cause}", step.name);
                self.settle(d, StepStatus::Skipped, Some(reason));
            }
        }
    }

    /// Group `g` fails fast because step `failed` failed.
    fn fail_fast(&mut self, g: usize, failed: usize) {
        let group = &self.pipeline.groups()[g];
        let failed_name = self.name(failed);
        let scope = if g == 0 {
            "the pipeline (settings.fail_fast)".to_owned()
        } else {
            format!("fail-fast group '{}'", group.name)
        };
        for &t in &group.steps {
            if t == failed || self.steps[t].status.is_some() {
                continue;
            }
            if self.steps[t].phase == Phase::Running {
                let reason = format!("cancelled because step '{failed_name}' failed in {scope}");
                self.decide(t, StepStatus::Cancelled, Some(reason));
                self.propagate(t, 0);
            } else {
                let reason = format!("not started because step '{failed_name}' failed in {scope}");
                self.settle(t, StepStatus::Skipped, Some(reason));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.groups.iter().filter(|g| !g.expired).filter_map(|g| g.deadline).min()
    }

    /// Ends the unfinished steps of every group whose deadline has passed.
    fn expire_groups(&mut self, now: Instant) {
        for g in 0..self.groups.len() {
            let gs = &self.groups[g];
            if gs.expired || gs.deadline.is_none_or(|d| d > now) {
                continue;
            }
            self.groups[g].expired = true;
            let group = &self.pipeline.groups()[g];
            let limit = group.timeout.unwrap_or_default().as_secs_f64();
            let what = if g == 0 {
                self.timed_out = true;
                tracing::warn!(timeout_s = limit, "pipeline run timed out");
                format!("the run timed out after {limit}s")
            } else {
                tracing::warn!(group = %group.name, timeout_s = limit, "group timed out");
                format!("group '{}' timed out after {limit}s", group.name)
            };
            // Decide every unfinished step first, so the group's own fail-fast
            // does not turn the others into cancellations; then propagate.
            let victims: Vec<usize> = group.steps.iter().copied().filter(|&t| self.steps[t].status.is_none()).collect();
            for &t in &victims {
                let reason = if self.steps[t].phase == Phase::Running {
                    what.clone()
                } else {
                    format!("{what} before the step started")
                };
                self.decide(t, StepStatus::TimedOut, Some(reason));
            }
            for &t in &victims {
                // Fail-fast applies only to the groups enclosing the expired one.
                let depth = self.pipeline.steps()[t].groups.iter().position(|&x| x == g).map_or(0, |p| p + 1);
                self.propagate(t, depth);
            }
        }
    }

    /// The run's token was cancelled: everything unfinished is cancelled.
    fn cancel_all(&mut self) {
        self.cancelled = true;
        tracing::info!("pipeline run cancelled");
        for s in 0..self.steps.len() {
            if self.steps[s].status.is_none() {
                let reason = if self.steps[s].phase == Phase::Running {
                    "the run was cancelled"
                } else {
                    "the run was cancelled before the step started"
                };
                self.decide(s, StepStatus::Cancelled, Some(reason.to_owned()));
            }
        }
    }

    /// Keeps the runner's execution details; the step started when the
    /// runner says its work began, not when it was handed the step.
    fn take_execution(&mut self, s: usize, execution: Option<Execution>) {
        let st = &mut self.steps[s];
        if let Some(begun) = execution.as_ref().and_then(|e| e.started_at) {
            if let (Some(queued), Some(finished)) = (st.queued, st.finished) {
                st.started = Some(begun.clamp(queued, finished));
            }
        }
        st.execution = execution;
    }

    fn finish(mut self) -> RunOutcome<A> {
        let end = Instant::now();
        let makespan = self.steps.iter().filter_map(|s| s.finished).max().map_or(Duration::ZERO, |f| self.at(f));
        let steps = self.pipeline.steps();
        let reports: Vec<StepReport> = steps
            .iter()
            .zip(&self.steps)
            .map(|(p, st)| StepReport {
                name: p.name.clone(),
                stage: p.stage.clone(),
                group: p.groups.first().filter(|&&g| g != 0).map(|&g| self.pipeline.groups()[g].name.clone()),
                status: st.status.unwrap_or(StepStatus::Skipped),
                queued: st.queued.map(|t| self.at(t)),
                started: st.started.map(|t| self.at(t)),
                finished: st.finished.map(|t| self.at(t)),
                duration: st.started.zip(st.finished).map(|(a, b)| b.saturating_duration_since(a)),
                error: st.error.clone(),
                retryable: st.retryable,
                depends_on: p.deps.iter().map(|&d| steps[d].name.clone()).collect(),
                execution: st.execution.clone(),
            })
            .collect();
        let status = if self.cancelled {
            RunStatus::Cancelled
        } else if self.timed_out {
            RunStatus::TimedOut
        } else if reports.iter().all(|r| r.status.is_success()) {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        self.emit(Event::RunFinished { at: self.at(end), status });
        let report = RunReport::summarize(self.pipeline, self.run_id.clone(), status, makespan, reports);
        let outputs = self
            .outputs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, o)| o.take().map(|o| (steps[i].name.clone(), o)))
            .collect();
        RunOutcome { report, outputs }
    }
}

/// Rendering context of one step: the run, plus which step is rendered
/// (for `{{run.steps}}`).
struct StepContext<'r, 'p, A> {
    run: &'r Run<'p, A>,
    step: usize,
}

impl<A> RenderContext for StepContext<'_, '_, A> {
    fn input(&self) -> Option<&str> {
        self.run.input()
    }
    fn pipeline_name(&self) -> &str {
        self.run.pipeline_name()
    }
    fn run_id(&self) -> &str {
        self.run.run_id()
    }
    fn step_output(&self, step: &str) -> Option<(&Value, usize)> {
        self.run.step_output(step)
    }
    fn earlier_steps(&self) -> Value {
        let run = self.run;
        let rows = run.pipeline.steps()[..self.step]
            .iter()
            .zip(&run.steps)
            .map(|(p, st)| {
                let exec = st.execution.as_ref();
                let detail = |k: &str| exec.and_then(|e| e.details.get(k)).cloned().unwrap_or(Value::Null);
                let duration = st.started.zip(st.finished).map(|(a, b)| b.saturating_duration_since(a));
                serde_json::json!({
                    "name": p.name,
                    "stage": p.stage,
                    "version": detail("version"),
                    "status": st.status.map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
                    "attempts": exec.map(|e| e.attempts),
                    "duration_ms": duration.map(|d| d.as_secs_f64() * 1e3),
                    "error": st.error,
                    "params": p.params,
                    "artifacts": detail("artifacts").as_array().cloned().unwrap_or_default(),
                })
            })
            .collect();
        Value::Array(rows)
    }
}

impl<A> RenderContext for Run<'_, A> {
    fn input(&self) -> Option<&str> {
        self.input.text.as_deref()
    }
    fn pipeline_name(&self) -> &str {
        self.pipeline.name()
    }
    fn run_id(&self) -> &str {
        &self.run_id
    }
    fn step_output(&self, step: &str) -> Option<(&Value, usize)> {
        let i = self.pipeline.steps().iter().position(|s| s.name == step)?;
        self.outputs[i].as_ref().map(|o| (&o.metadata, o.artifacts.len()))
    }
}
