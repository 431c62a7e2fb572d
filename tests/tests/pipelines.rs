//! Pipelines end to end: YAML in, the real scheduler and runtime running
//! sandboxed stages, reports and artifacts out — the way `stagecraft run`
//! and the HTTP service drive them.

use serde_json::{json, Value};
use stagecraft_orchestrator::{output::write_run, Orchestrator, ResultCache, RunEvent, SharedArtifact};
use stagecraft_pipeline::{CancellationToken, RunInput, RunOptions, RunOutcome, RunStatus, StepStatus};
use stagecraft_scheduler::{Jitter, RetryPolicy, Scheduler, SchedulerConfig};
use stagecraft_tests::{repo_root, runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn orchestrator(cache: Option<ResultCache>) -> Orchestrator {
    let retry = RetryPolicy {
        max_attempts: 1,
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
        jitter: Jitter::None,
    };
    Orchestrator::new(runtime(), Scheduler::new(SchedulerConfig::default()), cache).with_retry_backoff(retry)
}

async fn run_yaml(orch: &Orchestrator, yaml: &str, input: &str) -> RunOutcome<SharedArtifact> {
    let pipeline = orch.load_pipeline(yaml, "test.yaml").unwrap_or_else(|d| panic!("invalid pipeline:\n{d}"));
    orch.run(&pipeline, RunInput::text(input), RunOptions::default(), None).await
}

fn status(outcome: &RunOutcome<SharedArtifact>, step: &str) -> StepStatus {
    outcome.report.step(step).unwrap_or_else(|| panic!("no step {step}")).status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hybrid_example_runs_and_writes_a_report_and_its_artifacts() {
    let orch = orchestrator(None);
    let yaml = std::fs::read_to_string(repo_root().join("examples/pipelines/hybrid.yaml")).unwrap();
    let outcome = run_yaml(&orch, &yaml, "a red sneaker").await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded, "{:#}", outcome.report.to_json());

    let out = tempfile::tempdir().unwrap();
    let report = write_run(out.path(), &outcome).unwrap();
    let on_disk: Value = serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["steps"], on_disk["steps"]);
    let path = on_disk["critical_path"].as_array().unwrap();
    assert_eq!((path.first(), path.last()), (Some(&json!("base_image")), Some(&json!("report"))));
    for step in on_disk["steps"].as_array().unwrap() {
        let exec = &step["execution"];
        assert_eq!(exec["attempts"], 1, "{step:#}");
        assert_eq!(exec["version"], "0.1.0");
        for artifact in exec["artifacts"].as_array().unwrap() {
            let path = out.path().join(artifact["path"].as_str().unwrap());
            assert_eq!(std::fs::metadata(&path).unwrap().len(), artifact["bytes"].as_u64().unwrap());
        }
    }
    // The workbook lists the steps it reports on, from {{run.steps}}.
    let xlsx = &outcome.outputs["report"].artifacts[0];
    assert!(xlsx.name.ends_with(".xlsx") && xlsx.data.starts_with(b"PK"));
    assert_eq!(outcome.report.step("report").unwrap().depends_on, vec!["base_image", "big", "social"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_start_after_their_inputs_and_receive_them_in_order() {
    let orch = orchestrator(None);
    let yaml = r#"
name: diamond
steps:
  - { name: a, type: burn, params: { tag: a, iterations: 2000000 } }
  - { name: b, type: burn, input_from: a, params: { tag: b } }
  - { name: c, type: burn, input_from: a, params: { tag: c, iterations: 1000000 } }
  - { name: d, type: burn, input_from: [c, b], params: { tag: d } }
  - { name: e, type: burn, params: { tag: "e-{{steps.d.metadata.inputs.1}}" } }
"#;
    let outcome = run_yaml(&orch, yaml, "").await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded, "{:#}", outcome.report.to_json());
    let r = &outcome.report;
    for (step, deps) in [("b", &["a"][..]), ("c", &["a"]), ("d", &["b", "c"]), ("e", &["d"])] {
        let started = r.step(step).unwrap().started.unwrap();
        for dep in deps {
            assert!(r.step(dep).unwrap().finished.unwrap() <= started, "{step} started before {dep} finished");
        }
    }
    assert_eq!(outcome.outputs["d"].metadata["inputs"], json!(["c.txt", "b.txt"]));
    assert_eq!(outcome.outputs["e"].metadata["tag"], json!("e-b.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_running_siblings_and_skips_dependents() {
    let orch = orchestrator(None);
    let yaml = r#"
name: fail-fast
steps:
  - type: parallel_group
    name: g
    fail_fast: true
    steps:
      - { name: forever, type: spin }
      - { name: broken, type: burn, params: { tag: broken, iterations: 20000000, fail: invalid } }
  - { name: after, type: burn, input_from: [forever, broken] }
"#;
    let outcome = run_yaml(&orch, yaml, "").await;
    assert_eq!(outcome.report.status, RunStatus::Failed);
    assert_eq!(status(&outcome, "broken"), StepStatus::Failed);
    assert_eq!(status(&outcome, "forever"), StepStatus::Cancelled);
    assert_eq!(status(&outcome, "after"), StepStatus::Skipped);
    let broken = outcome.report.step("broken").unwrap();
    assert!(broken.error.as_deref().unwrap().contains("refuses its input"), "{broken:?}");
    assert!(!broken.retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_on_failure_keeps_the_other_branches_running() {
    let orch = orchestrator(None);
    let yaml = r#"
name: continue
steps:
  - type: parallel_group
    name: g
    fail_fast: false
    steps:
      - { name: bad, type: burn, params: { tag: bad, fail: failed } }
      - { name: good, type: burn, params: { tag: good, iterations: 5000000 } }
  - { name: needs_bad, type: burn, input_from: bad }
  - { name: needs_good, type: burn, input_from: good }
"#;
    let outcome = run_yaml(&orch, yaml, "").await;
    assert_eq!(outcome.report.status, RunStatus::Failed);
    assert_eq!(status(&outcome, "bad"), StepStatus::Failed);
    assert_eq!(status(&outcome, "good"), StepStatus::Succeeded);
    assert_eq!(status(&outcome, "needs_good"), StepStatus::Succeeded);
    assert_eq!(status(&outcome, "needs_bad"), StepStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_with_growing_backoff_until_the_limit_but_invalid_input_is_not() {
    let orch = orchestrator(None);
    let yaml = r#"
name: retries
steps:
  - { name: flaky, type: burn, retries: 3, params: { tag: flaky, fail: unavailable } }
  - { name: refused, type: burn, retries: 3, params: { tag: refused, fail: invalid } }
"#;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let pipeline = orch.load_pipeline(yaml, "retries.yaml").unwrap();
    let observer = Arc::new(move |e: &RunEvent| {
        if let RunEvent::AttemptFailed(a) = e {
            seen.lock().unwrap().push((a.step.clone(), a.attempt));
        }
    });
    let outcome = orch.run(&pipeline, RunInput::default(), RunOptions::default(), Some(observer)).await;
    let flaky = outcome.report.step("flaky").unwrap();
    assert_eq!(flaky.status, StepStatus::Failed);
    assert!(flaky.retryable);
    let exec = flaky.execution.as_ref().unwrap();
    assert_eq!(exec.attempts, 4, "1 attempt + 3 retries");
    // Backoff ceilings double: 20 ms, 40 ms, 80 ms (no jitter here).
    let ceilings: Vec<f64> =
        exec.details["attempt_log"].as_array().unwrap().iter().map(|a| a["backoff"].as_f64().unwrap()).collect();
    assert_eq!(ceilings, vec![0.0, 0.02, 0.04, 0.08]);
    let refused = outcome.report.step("refused").unwrap();
    assert_eq!(refused.execution.as_ref().unwrap().attempts, 1, "invalid input is never retried");
    let events = events.lock().unwrap();
    assert_eq!(events.iter().filter(|(s, _)| s == "flaky").map(|(_, n)| *n).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_deadline_is_stopped_and_reported_as_timed_out() {
    let orch = orchestrator(None);
    let yaml = "name: deadline\nsteps:\n  - { name: forever, type: spin, timeout: 0.3 }\n  - { name: next, type: burn, input_from: forever }\n";
    let outcome = run_yaml(&orch, yaml, "").await;
    let forever = outcome.report.step("forever").unwrap();
    assert_eq!(forever.status, StepStatus::Failed);
    assert!(forever.error.as_deref().unwrap().contains("timed out"), "{forever:?}");
    assert_eq!(status(&outcome, "next"), StepStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_stops_its_running_steps() {
    let orch = orchestrator(None);
    let pipeline = orch
        .load_pipeline(
            "name: c\nsteps:\n  - { name: forever, type: spin }\n  - { name: next, type: burn, input_from: forever }\n",
            "c.yaml",
        )
        .unwrap();
    let cancel = CancellationToken::new();
    let options = RunOptions { cancel: cancel.clone(), ..RunOptions::default() };
    let trigger = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let outcome = orch.run(&pipeline, RunInput::default(), options, None).await;
    trigger.await.unwrap();
    assert_eq!(outcome.report.status, RunStatus::Cancelled);
    assert_eq!(status(&outcome, "forever"), StepStatus::Cancelled);
    assert_ne!(status(&outcome, "next"), StepStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_work_is_a_cache_hit_and_changed_params_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let orch = orchestrator(Some(ResultCache::new(dir.path())));
    let yaml = |n: u32| {
        format!("name: cached\nsteps:\n  - {{ name: a, type: burn, params: {{ tag: a, iterations: 1000 }} }}\n  - {{ name: b, type: burn, input_from: a, params: {{ tag: b, iterations: {n} }} }}\n")
    };
    let hits = |o: &RunOutcome<SharedArtifact>| -> Vec<bool> {
        o.report.steps.iter().map(|s| s.execution.as_ref().unwrap().cache_hit).collect()
    };
    let first = run_yaml(&orch, &yaml(1), "").await;
    assert_eq!(hits(&first), vec![false, false]);
    let second = run_yaml(&orch, &yaml(1), "").await;
    assert_eq!(hits(&second), vec![true, true]);
    assert_eq!(second.outputs["b"].artifacts, first.outputs["b"].artifacts);
    assert_eq!(second.outputs["b"].metadata, first.outputs["b"].metadata);
    let changed = run_yaml(&orch, &yaml(2), "").await;
    assert_eq!(hits(&changed), vec![true, false]);
    // Without a cache nothing is reused.
    let uncached = run_yaml(&orchestrator(None), &yaml(1), "").await;
    assert_eq!(hits(&uncached), vec![false, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pipelines_are_refused_with_positions_and_nothing_runs() {
    let orch = orchestrator(None);
    let cases: &[(&str, &str)] = &[
        ("name: x\nsteps:\n  - { name: a, type: upscael }\n", "test.yaml:3:"),
        ("name: x\nsteps:\n  - { name: a, type: burn }\n  - { name: a, type: burn }\n", "duplicate"),
        ("name: x\nsteps:\n  - { name: a, type: burn, input_from: nope }\n", "nope"),
        (
            "name: x\nsteps:\n  - { name: a, type: burn, input_from: b }\n  - { name: b, type: burn, input_from: a }\n",
            "cycle",
        ),
        ("name: x\nsteps:\n  - { name: a, type: upscale, params: { factor: \"two\" } }\n", "factor"),
        ("name: x\nsteps:\n  - { name: a, type: burn\n", "test.yaml:"),
    ];
    for (yaml, expected) in cases {
        let err = orch.load_pipeline(yaml, "test.yaml").err().unwrap_or_else(|| panic!("accepted:\n{yaml}"));
        let text = err.to_string();
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
        assert!(text.lines().all(|l| l.starts_with("test.yaml:")), "every problem has a position:\n{text}");
    }
    let unknown = orch.load_pipeline(cases[0].0, "test.yaml").err().unwrap().to_string();
    assert!(unknown.contains("step 'a'") && unknown.contains("upscale"), "names the step and suggests: {unknown}");
    let status = orch.scheduler().status();
    assert_eq!(
        (status.completed, status.failed, status.queue_size, status.running_tasks),
        (0, 0, 0, 0),
        "validation runs nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_work_clearly_instead_of_dropping_it() {
    let config = SchedulerConfig { max_workers: 1, max_queue: 1, default_stage_limit: 1, ..SchedulerConfig::default() };
    let orch = Orchestrator::new(runtime(), Scheduler::new(config), None);
    let yaml = r#"
name: wide
steps:
  - type: parallel_group
    name: g
    fail_fast: false
    steps:
      - { name: a, type: burn, params: { tag: a, iterations: 50000000 } }
      - { name: b, type: burn, params: { tag: b, iterations: 50000000 } }
      - { name: c, type: burn, params: { tag: c, iterations: 50000000 } }
      - { name: d, type: burn, params: { tag: d, iterations: 50000000 } }
"#;
    let outcome = run_yaml(&orch, yaml, "").await;
    let refused: Vec<_> =
        outcome.report.steps.iter().filter(|s| s.error.as_deref().is_some_and(|e| e.contains("queue full"))).collect();
    assert!(!refused.is_empty(), "{:#}", outcome.report.to_json());
    assert!(refused.iter().all(|s| s.status == StepStatus::Failed && s.retryable));
    let ran = outcome.report.steps.iter().filter(|s| s.status == StepStatus::Succeeded).count();
    assert_eq!(ran + refused.len(), 4, "every step either ran or was refused; none vanished");
}
