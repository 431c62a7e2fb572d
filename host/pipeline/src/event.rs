//! Events the engine emits while a run progresses, for an optional observer
//! (a callback; [`channel_observer`] adapts a tokio channel). Offsets (`at`)
//! are from the start of the run.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::report::{secs, secs_opt, RunStatus};

/// Something that happened to a step, or the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// All dependencies are done; the step waits for a worker.
    Queued {
        /// Step name.
        step: String,
        /// When.
        #[serde(with = "secs")]
        at: Duration,
    },
    /// The runner was called.
    Started {
        /// Step name.
        step: String,
        /// Stage it runs.
        stage: String,
        /// When.
        #[serde(with = "secs")]
        at: Duration,
    },
    /// The runner returned an output.
    Finished {
        /// Step name.
        step: String,
        /// When.
        #[serde(with = "secs")]
        at: Duration,
        /// How long it ran.
        #[serde(with = "secs")]
        duration: Duration,
    },
    /// The step failed, or timed out (`timed_out`).
    Failed {
        /// Step name.
        step: String,
        /// When.
        #[serde(with = "secs")]
        at: Duration,
        /// How long it ran; None if it never started.
        #[serde(with = "secs_opt")]
        duration: Option<Duration>,
        /// Why.
        error: String,
        /// True when a group or run timeout ended it.
        timed_out: bool,
    },
    /// The step will not run.
    Skipped {
        /// Step name.
        step: String,
        /// When.
        #[serde(with = "secs")]
        at: Duration,
        /// Why (names the dependency or group at fault).
        reason: String,
    },
    /// The step was cancelled: a running step's future has been dropped, or
    /// (with no duration) a waiting step will not start.
    Cancelled {
        /// Step name.
        step: String,
        /// When.
        #[serde(with = "secs")]
        at: Duration,
        /// How long it ran; None if it never started.
        #[serde(with = "secs_opt")]
        duration: Option<Duration>,
        /// Why.
        reason: String,
    },
    /// The run is over.
    RunFinished {
        /// When.
        #[serde(with = "secs")]
        at: Duration,
        /// How it ended.
        status: RunStatus,
    },
}

impl Event {
    /// The step the event is about; None for [`Event::RunFinished`].
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::Queued { step, .. }
            | Event::Started { step, .. }
            | Event::Finished { step, .. }
            | Event::Failed { step, .. }
            | Event::Skipped { step, .. }
            | Event::Cancelled { step, .. } => Some(step),
            Event::RunFinished { .. } => None,
        }
    }

    /// The event's offset from the start of the run.
    pub fn at(&self) -> Duration {
        match self {
            Event::Queued { at, .. }
            | Event::Started { at, .. }
            | Event::Finished { at, .. }
            | Event::Failed { at, .. }
            | Event::Skipped { at, .. }
            | Event::Cancelled { at, .. }
            | Event::RunFinished { at, .. } => *at,
        }
    }
}

/// Receives events synchronously, from the engine's task: keep it quick.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// An observer that forwards events into an unbounded tokio channel.
pub fn channel_observer(tx: tokio::sync::mpsc::UnboundedSender<Event>) -> Observer {
    Arc::new(move |e: &Event| {
        let _ = tx.send(e.clone());
    })
}
