//! Task lifecycle events, broadcast to any number of subscribers (HTTP SSE,
//! CLI progress). Sending never blocks and never fails a task: with no
//! subscriber the event is dropped, and a slow subscriber sees `Lagged`.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::task::{Failure, TaskId};

/// One lifecycle transition of a task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskEvent {
    pub id: TaskId,
    pub stage: String,
    pub label: String,
    #[serde(flatten)]
    pub kind: TaskEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TaskEventKind {
    /// Accepted into the queue.
    Queued { priority: i32 },
    /// An attempt got a slot and started.
    Started { attempt: u32 },
    /// An attempt failed; the next one starts after `backoff`.
    Retrying { attempt: u32, failure: Failure, backoff: Duration },
    /// The task is over.
    Finished { status: FinishStatus, attempts: u32 },
}

/// Final state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishStatus {
    Completed,
    Failed,
    Cancelled,
    ShuttingDown,
}

/// The broadcast side, owned by the scheduler.
#[derive(Debug)]
pub(crate) struct EventBus {
    tx: broadcast::Sender<TaskEvent>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity.max(1)).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.tx.subscribe()
    }

    pub fn emit(&self, id: TaskId, stage: &str, label: &str, kind: TaskEventKind) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(TaskEvent { id, stage: stage.to_owned(), label: label.to_owned(), kind });
    }
}
