//! What a caller can watch while a pipeline runs: the engine's step events,
//! plus what the stages themselves report (progress, logs) and failed
//! attempts that will be retried. The CLI prints them; the HTTP service
//! streams them as server-sent events.

use serde::Serialize;
use stagecraft_pipeline::Event;
use std::sync::Arc;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RunEvent {
    /// A step was queued, started, finished, failed, skipped or cancelled,
    /// or the run finished.
    Step(Event),
    /// A stage reported progress.
    Progress(ProgressEvent),
    /// A stage logged a line.
    Log(LogEvent),
    /// An attempt failed; the scheduler decides whether to retry.
    AttemptFailed(AttemptFailedEvent),
    /// The host allows fewer steps in flight than the pipeline asks for.
    Limited(LimitedEvent),
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgressEvent {
    /// Always "progress".
    pub event: &'static str,
    pub step: String,
    pub fraction: f32,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    /// Always "log".
    pub event: &'static str,
    pub step: String,
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptFailedEvent {
    /// Always "attempt_failed".
    pub event: &'static str,
    pub step: String,
    pub attempt: u32,
    pub error: String,
    /// Whether this kind of failure is retried (if attempts remain).
    pub retryable: bool,
}

/// A limit of the host that cuts a run's or a group's `max_workers`.
#[derive(Debug, Clone, Serialize)]
pub struct LimitedEvent {
    /// Always "limited".
    pub event: &'static str,
    /// `run` or `group NAME`.
    pub scope: String,
    /// The `max_workers` the pipeline asks for.
    pub asked: usize,
    /// What the host allows at most.
    pub allowed: usize,
    /// Which limit: `the limit of stage NAME` or `the host's in-flight limit`.
    pub by: String,
}

impl LimitedEvent {
    pub(crate) fn new(scope: &str, asked: usize, allowed: usize, by: String) -> Self {
        Self { event: "limited", scope: scope.to_owned(), asked, allowed, by }
    }
}

impl RunEvent {
    /// The step the event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            RunEvent::Step(e) => e.step(),
            RunEvent::Progress(p) => Some(&p.step),
            RunEvent::Log(l) => Some(&l.step),
            RunEvent::AttemptFailed(a) => Some(&a.step),
            RunEvent::Limited(_) => None,
        }
    }
}

/// Receives run events, synchronously: keep it quick.
pub type RunObserver = Arc<dyn Fn(&RunEvent) + Send + Sync>;
