//! Server-sent events for a job: every event since the job started, in
//! order (a late subscriber gets the past ones first), then the live ones;
//! the stream ends after the job's `job_finished` event. A job that ended
//! in an earlier process replays the events kept in the store.

use crate::jobs::{LiveJob, NextEvent};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;

fn to_sse(index: usize, text: &str) -> Event {
    let kind = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("event").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "message".to_owned());
    Event::default().id(index.to_string()).event(kind).data(text)
}

/// Follows a job in progress.
pub fn live(job: Arc<LiveJob>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = job.subscribe();
    let events = stream::unfold((job, rx, 0usize), |(job, mut rx, index)| async move {
        loop {
            rx.borrow_and_update();
            match job.event(index) {
                NextEvent::Ready(text) => return Some((Ok(to_sse(index, &text)), (job, rx, index + 1))),
                NextEvent::Ended => return None,
                NextEvent::NotYet => {
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Replays the stored events of a job that has ended.
pub fn replay(events: Vec<Value>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let items: Vec<Result<Event, Infallible>> =
        events.iter().enumerate().map(|(i, e)| Ok(to_sse(i, &e.to_string()))).collect();
    Sse::new(stream::iter(items))
}
