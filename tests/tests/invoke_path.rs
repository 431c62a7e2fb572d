//! One invocation path: `Orchestrator::invoke` (behind `POST
//! /v1/stages/{name}/invoke` and `stagecraft invoke`) runs a stage as a
//! scheduler task with the invocation's own deadline and memory estimate,
//! and hands the runtime's error back typed.

use serde_json::json;
use stagecraft_orchestrator::{Error, InvokeRequest, Orchestrator};
use stagecraft_runtime::{InvokeError, StageEvent, StageInput};
use stagecraft_scheduler::{Scheduler, SchedulerConfig, TaskEventKind};
use stagecraft_tests::{runtime, test_config};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn orchestrator() -> Orchestrator {
    Orchestrator::new(runtime(), Scheduler::new(SchedulerConfig::default()), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtimes_error_comes_back_typed_and_events_reach_the_caller() {
    let orch = orchestrator();
    // generate_http reports progress, then the host refuses its request (no
    // grant): the stage's invalid-input comes back as the runtime's error.
    let progress = Arc::new(Mutex::new(0usize));
    let seen = progress.clone();
    let request = InvokeRequest::default().events(move |e| {
        if let StageEvent::Progress { .. } = e {
            *seen.lock().unwrap() += 1;
        }
    });
    let params = json!({"prompt": "a cat", "base_url": "http://127.0.0.1:9", "max_retries": 0});
    let err = orch.invoke("generate_http", StageInput::new(Vec::new(), params), request).await.unwrap_err();
    match &err {
        Error::Invoke(e) => assert!(matches!(**e, InvokeError::InvalidInput(ref m) if m.contains("refused")), "{e}"),
        other => panic!("expected the runtime's error, got {other}"),
    }
    assert!(*progress.lock().unwrap() >= 1, "the stage's progress reached the caller");
    let err = orch.invoke("no_such_stage", StageInput::default(), InvokeRequest::default()).await.unwrap_err();
    assert!(matches!(&err, Error::Invoke(e) if matches!(**e, InvokeError::UnknownStage(_))), "{err}");
    let out = orch.invoke("noop", StageInput::new(Vec::new(), json!({})), InvokeRequest::default()).await.unwrap();
    assert_eq!((out.stage.as_str(), out.digest.len()), ("noop", 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_carries_the_invocations_deadline_and_memory_estimate() {
    let orch = orchestrator();
    let mut events = orch.scheduler().subscribe();
    let deadline = Duration::from_secs(2);
    // Nothing else in this binary runs `spin`: its estimate stays put.
    let estimate = runtime().memory_estimate(&runtime().stage("spin").unwrap());
    let spin = {
        let orch = orch.clone();
        tokio::spawn(async move {
            orch.invoke("spin", StageInput::default(), InvokeRequest::default().timeout(deadline)).await
        })
    };
    // While the attempt runs, the scheduler has charged the component's
    // memory estimate to its budget (not 0 bytes, and not the limit).
    loop {
        match events.recv().await.expect("scheduler events") {
            e if matches!(e.kind, TaskEventKind::Started { .. }) => break,
            _ => {}
        }
    }
    let used = orch.scheduler().status().memory.budget_used_bytes;
    let err = spin.await.unwrap().unwrap_err();
    assert_eq!(used, estimate.min(test_config().limits.memory_bytes));
    assert!(used > 0);
    // The invocation's deadline (2 s), not the scheduler's 300 s default.
    match &err {
        Error::Invoke(e) => match **e {
            InvokeError::Timeout(d) => assert!(d <= deadline, "{d:?}"),
            ref other => panic!("expected a timeout, got {other}"),
        },
        other => panic!("expected the runtime's error, got {other}"),
    }
    assert_eq!(orch.scheduler().status().memory.budget_used_bytes, 0, "released when the attempt ended");
}
