//! The execution engine, driven by a fake runner that sleeps in tokio time.
//! Tests run with the clock paused (`start_paused`), so sleeps are virtual and
//! the schedule is deterministic; ordering and overlap are asserted from
//! recorded marks and events, not from wall-clock thresholds.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use stagecraft_pipeline::*;

fn b(sleep: u64) -> Behavior {
    Behavior { sleep: ms(sleep), ..Default::default() }
}

fn failing(sleep: u64, msg: &str) -> Behavior {
    Behavior { sleep: ms(sleep), fail: Some(msg.to_string()), ..Default::default() }
}

#[tokio::test(start_paused = true)]
async fn dependents_start_after_dependencies_and_independent_steps_overlap() {
    let p = load_ok(
        "steps:
  - { name: a, type: work }
  - { name: b, type: work, input_from: a }
  - { name: c, type: work, input_from: a }
  - { name: d, type: work, input_from: [c, b] }
",
    );
    let fake = Fake::new([("a", b(100)), ("b", b(100)), ("c", b(150)), ("d", b(50))]);
    let (out, events) = run(&p, &fake).await;
    assert_eq!(out.report.status, RunStatus::Succeeded);

    let (a_end, b_start, c_start) =
        (fake.time("a", Mark::End), fake.time("b", Mark::Start), fake.time("c", Mark::Start));
    assert!(b_start >= a_end && c_start >= a_end);
    // b and c ran at the same time.
    assert!(b_start < fake.time("c", Mark::End) && c_start < fake.time("b", Mark::End));
    let d_start = fake.time("d", Mark::Start);
    assert!(d_start >= fake.time("b", Mark::End) && d_start >= fake.time("c", Mark::End));

    // Inputs follow input_from order.
    assert_eq!(fake.received("d").inputs, ["c.out", "b.out"]);
    assert_eq!(out.outputs["d"].artifacts, ["d.out"]);

    // Each step: queued, then started, then finished.
    for step in ["a", "b", "c", "d"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e.step() == Some(step))
            .map(|e| match e {
                Event::Queued { .. } => "queued",
                Event::Started { .. } => "started",
                Event::Finished { .. } => "finished",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["queued", "started", "finished"], "{step}");
    }
    assert!(matches!(events.last(), Some(Event::RunFinished { status: RunStatus::Succeeded, .. })));

    let r = &out.report;
    assert_eq!(r.critical_path, ["a", "c", "d"]);
    assert!(r.sequential_estimate > r.makespan, "{r:?}");
    assert!(r.speedup.unwrap() > 1.0);
    assert_eq!(r.step("d").unwrap().depends_on, ["b", "c"]);
    let json = r.to_json();
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["steps"][0]["status"], "succeeded");
    assert!(json["makespan"].as_f64().unwrap() > 0.0);
}

#[tokio::test(start_paused = true)]
async fn steps_without_input_from_get_the_pipeline_inputs() {
    let p = load_ok("steps:\n  - { name: a, type: work }\n  - { name: b, type: work, input_from: a }\n");
    let fake = Fake::sleeping(&["a", "b"], ms(1));
    let input = RunInput { text: None, files: vec!["in.png".to_string()] };
    run_with(&p, &fake, input, RunOptions::default()).await;
    assert_eq!(fake.received("a").inputs, ["in.png"]);
    assert_eq!(fake.received("b").inputs, ["a.out"]);
}

const GROUP: &str = "steps:
  - type: parallel_group
    name: g
    max_workers: 2
    fail_fast: FAIL_FAST
    steps:
      - { name: x, type: work }
      - { name: y, type: work }
      - { name: z, type: work }
  - { name: after, type: work, input_from: y }
  - { name: other, type: work }
";

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_running_siblings_and_skips_pending_ones() {
    let p = load_ok(&GROUP.replace("FAIL_FAST", "true"));
    let fake = Fake::new([("x", failing(50, "x broke")), ("y", b(500)), ("z", b(10)), ("other", b(800))]);
    let (out, events) = run(&p, &fake).await;

    assert_eq!(status(&out, "x"), StepStatus::Failed);
    assert_eq!(error(&out, "x"), "x broke");
    // y was running: its future was dropped, it never completed.
    assert_eq!(status(&out, "y"), StepStatus::Cancelled);
    assert_eq!(fake.marks("y"), [Mark::Start, Mark::Dropped]);
    assert!(error(&out, "y").contains("step 'x' failed in fail-fast group 'g'"), "{}", error(&out, "y"));
    // z was waiting for a worker: never started.
    assert_eq!(status(&out, "z"), StepStatus::Skipped);
    assert!(fake.marks("z").is_empty());
    assert!(error(&out, "z").contains("'x' failed"), "{}", error(&out, "z"));
    // Dependents of a cancelled step are skipped; steps outside the group go on.
    assert_eq!(status(&out, "after"), StepStatus::Skipped);
    assert_eq!(error(&out, "after"), "dependency 'y' was cancelled");
    assert_eq!(status(&out, "other"), StepStatus::Succeeded);
    assert_eq!(out.report.status, RunStatus::Failed);
    // The Cancelled event came when the future had been dropped.
    assert!(events.iter().any(|e| matches!(e, Event::Cancelled { step, duration: Some(_), .. } if step == "y")));
    assert!(events.iter().any(|e| matches!(e, Event::Failed { step, timed_out: false, .. } if step == "x")));
}

#[tokio::test(start_paused = true)]
async fn without_fail_fast_the_rest_keeps_going() {
    let p = load_ok(&GROUP.replace("FAIL_FAST", "false"));
    let fake = Fake::new([("x", failing(50, "x broke")), ("y", b(500)), ("z", b(10))]);
    let (out, _) = run(&p, &fake).await;
    assert_eq!(status(&out, "x"), StepStatus::Failed);
    assert_eq!(status(&out, "y"), StepStatus::Succeeded);
    assert_eq!(status(&out, "z"), StepStatus::Succeeded);
    assert_eq!(status(&out, "after"), StepStatus::Succeeded);
    assert_eq!(fake.marks("y"), [Mark::Start, Mark::End]);
    assert_eq!(out.report.status, RunStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn dependents_of_a_failure_are_skipped_transitively() {
    let p = load_ok(
        "steps:
  - { name: a, type: work }
  - { name: b, type: work, input_from: a }
  - { name: c, type: work, input_from: b }
  - { name: d, type: work }
",
    );
    let fake = Fake::new([("a", failing(10, "no GPU")), ("d", b(20))]);
    let (out, events) = run(&p, &fake).await;
    assert_eq!(status(&out, "b"), StepStatus::Skipped);
    assert_eq!(error(&out, "b"), "dependency 'a' failed");
    assert_eq!(status(&out, "c"), StepStatus::Skipped);
    assert_eq!(error(&out, "c"), "dependency 'b' was skipped (dependency 'a' failed)");
    assert_eq!(status(&out, "d"), StepStatus::Succeeded);
    assert!(fake.marks("b").is_empty() && fake.marks("c").is_empty());
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Skipped { step, reason, .. } if step == "b" && reason.contains("'a'"))));
    assert_eq!(out.report.step("b").unwrap().started, None);
}

#[tokio::test(start_paused = true)]
async fn settings_fail_fast_stops_the_whole_run() {
    let p = load_ok(
        "settings: { fail_fast: true }
steps:
  - { name: a, type: work }
  - { name: b, type: work }
  - { name: c, type: work, input_from: b }
",
    );
    let fake = Fake::new([("a", failing(10, "bad")), ("b", b(100))]);
    let (out, _) = run(&p, &fake).await;
    assert_eq!(status(&out, "b"), StepStatus::Cancelled);
    assert_eq!(status(&out, "c"), StepStatus::Skipped);
    assert_eq!(fake.marks("b"), [Mark::Start, Mark::Dropped]);
}

#[tokio::test(start_paused = true)]
async fn group_timeout_ends_unfinished_steps() {
    let p = load_ok(
        "steps:
  - type: parallel_group
    name: g
    timeout: 1
    max_workers: 2
    steps:
      - { name: fast, type: work }
      - { name: slow, type: work }
      - { name: queued, type: work }
  - { name: outside, type: work }
  - { name: after, type: work, input_from: slow }
",
    );
    let fake = Fake::new([("fast", b(100)), ("slow", b(5_000)), ("queued", b(5_000)), ("outside", b(3_000))]);
    let (out, events) = run(&p, &fake).await;
    assert_eq!(status(&out, "fast"), StepStatus::Succeeded);
    // fast's slot went to queued, which then timed out while running, like slow.
    assert_eq!(status(&out, "slow"), StepStatus::TimedOut);
    assert_eq!(error(&out, "slow"), "group 'g' timed out after 1s");
    assert_eq!(fake.marks("slow"), [Mark::Start, Mark::Dropped]);
    assert_eq!(status(&out, "queued"), StepStatus::TimedOut);
    assert_eq!(fake.marks("queued"), [Mark::Start, Mark::Dropped]);
    assert_eq!(status(&out, "after"), StepStatus::Skipped);
    assert_eq!(error(&out, "after"), "dependency 'slow' timed out");
    // The run goes on outside the group.
    assert_eq!(status(&out, "outside"), StepStatus::Succeeded);
    assert_eq!(out.report.status, RunStatus::Failed);
    assert!(events.iter().any(|e| matches!(e, Event::Failed { step, timed_out: true, .. } if step == "slow")));
    // The group's clock started with its first step: slow ran about 1s (virtual time).
    let d = out.report.step("slow").unwrap().duration.unwrap();
    assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(2), "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn group_timeout_covers_steps_that_never_started() {
    let p = load_ok(
        "steps:
  - type: parallel_group
    name: g
    timeout: 1
    max_workers: 1
    steps:
      - { name: slow, type: work }
      - { name: waiting, type: work }
",
    );
    let fake = Fake::new([("slow", b(5_000))]);
    let (out, _) = run(&p, &fake).await;
    assert_eq!(status(&out, "waiting"), StepStatus::TimedOut);
    assert_eq!(error(&out, "waiting"), "group 'g' timed out after 1s before the step started");
    assert!(fake.marks("waiting").is_empty());
}

#[tokio::test(start_paused = true)]
async fn run_timeout_ends_the_run() {
    let p = load_ok(
        "settings: { timeout: 2 }
steps:
  - { name: a, type: work }
  - { name: b, type: work, input_from: a }
  - { name: quick, type: work }
",
    );
    let fake = Fake::new([("a", b(10_000)), ("quick", b(10))]);
    let (out, events) = run(&p, &fake).await;
    assert_eq!(out.report.status, RunStatus::TimedOut);
    assert_eq!(status(&out, "quick"), StepStatus::Succeeded);
    assert_eq!(status(&out, "a"), StepStatus::TimedOut);
    assert_eq!(error(&out, "a"), "the run timed out after 2s");
    assert_eq!(status(&out, "b"), StepStatus::TimedOut);
    assert_eq!(fake.marks("a"), [Mark::Start, Mark::Dropped]);
    assert!(matches!(events.last(), Some(Event::RunFinished { status: RunStatus::TimedOut, .. })));
}

const FIVE: &str = "settings: { parallel: PARALLEL, max_workers: 2 }
steps:
  - { name: s1, type: work }
  - { name: s2, type: work }
  - { name: s3, type: work }
  - { name: s4, type: work }
  - { name: s5, type: work }
";

#[tokio::test(start_paused = true)]
async fn parallel_false_runs_one_step_at_a_time() {
    let p = load_ok(&FIVE.replace("PARALLEL", "false"));
    let fake = Fake::sleeping(&["s1", "s2", "s3", "s4", "s5"], ms(100));
    let (out, _) = run(&p, &fake).await;
    assert_eq!(out.report.status, RunStatus::Succeeded);
    assert_eq!(fake.max_concurrency(), 1);
    assert_eq!(fake.start_order(), ["s1", "s2", "s3", "s4", "s5"]);
}

#[tokio::test(start_paused = true)]
async fn the_parallel_option_overrides_settings() {
    // What the caller passes for STAGECRAFT_PARALLEL=false.
    let p = load_ok(&FIVE.replace("PARALLEL", "true"));
    let fake = Fake::sleeping(&["s1", "s2", "s3", "s4", "s5"], ms(100));
    let options = RunOptions { parallel: Some(false), ..Default::default() };
    run_with(&p, &fake, RunInput::default(), options).await;
    assert_eq!(fake.max_concurrency(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_workers_is_respected() {
    let p = load_ok(&FIVE.replace("PARALLEL", "true"));
    let fake = Fake::sleeping(&["s1", "s2", "s3", "s4", "s5"], ms(100));
    run(&p, &fake).await;
    assert_eq!(fake.max_concurrency(), 2);

    // A group's own limit, with no run-wide limit.
    let p = load_ok(
        "steps:
  - type: parallel_group
    name: g
    max_workers: 3
    steps: [ {name: a, type: work}, {name: b, type: work}, {name: c, type: work}, {name: d, type: work}, {name: e, type: work} ]
",
    );
    let fake = Fake::sleeping(&["a", "b", "c", "d", "e"], ms(100));
    run(&p, &fake).await;
    assert_eq!(fake.max_concurrency(), 3);

    // The run option overrides settings.
    let p = load_ok(&FIVE.replace("PARALLEL", "true"));
    let fake = Fake::sleeping(&["s1", "s2", "s3", "s4", "s5"], ms(100));
    let options = RunOptions { max_workers: Some(4), ..Default::default() };
    run_with(&p, &fake, RunInput::default(), options).await;
    assert_eq!(fake.max_concurrency(), 4);
}

#[tokio::test(start_paused = true)]
async fn higher_priority_starts_first() {
    let p = load_ok(
        "settings: { parallel: false }
steps:
  - { name: low, type: work, priority: -1 }
  - { name: mid, type: work }
  - { name: high, type: work, priority: 5 }
",
    );
    let fake = Fake::sleeping(&["low", "mid", "high"], ms(10));
    run(&p, &fake).await;
    assert_eq!(fake.start_order(), ["high", "mid", "low"]);
    assert_eq!(fake.received("high").priority, 5);
}

#[tokio::test(start_paused = true)]
async fn the_longest_chain_starts_first_so_no_tail_runs_alone() {
    // Two workers; three single steps declared before a chain of three.
    // Declaration order would leave the chain's last two steps running one
    // at a time after the singles (5 units); longest chain first takes 3.
    let p = load_ok(
        "settings: { parallel: true, max_workers: 2 }
steps:
  - { name: x, type: work }
  - { name: y, type: work }
  - { name: z, type: work }
  - { name: c1, type: work }
  - { name: c2, type: work, input_from: c1 }
  - { name: c3, type: work, input_from: c2 }
",
    );
    let fake = Fake::sleeping(&["x", "y", "z", "c1", "c2", "c3"], ms(100));
    let (outcome, _) = run(&p, &fake).await;
    assert_eq!(fake.start_order()[0], "c1");
    // Virtual time (the clock is paused): 3 units, not 5.
    assert!(outcome.report.makespan < ms(400), "{:?}", outcome.report.makespan);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_delay_spaces_starts() {
    let p = load_ok(
        "settings: { rate_limit_delay: 0.5 }\nsteps:\n  - { name: a, type: work }\n  - { name: b, type: work }\n",
    );
    let fake = Fake::sleeping(&["a", "b"], ms(10));
    run(&p, &fake).await;
    let gap = fake.time("b", Mark::Start) - fake.time("a", Mark::Start);
    assert!(gap >= ms(500), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn cancellation_drops_running_steps_and_cancels_the_rest() {
    let p = load_ok(
        "steps:
  - { name: a, type: work }
  - { name: b, type: work, input_from: a }
  - { name: c, type: work }
",
    );
    let fake = Fake::new([("a", b(10_000)), ("c", b(10))]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(200)).await;
        trigger.cancel();
    });
    let options = RunOptions { cancel, ..Default::default() };
    let (out, events) = run_with(&p, &fake, RunInput::default(), options).await;
    assert_eq!(out.report.status, RunStatus::Cancelled);
    assert_eq!(status(&out, "c"), StepStatus::Succeeded);
    assert_eq!(status(&out, "a"), StepStatus::Cancelled);
    assert_eq!(fake.marks("a"), [Mark::Start, Mark::Dropped]);
    assert_eq!(status(&out, "b"), StepStatus::Cancelled);
    assert_eq!(error(&out, "b"), "the run was cancelled before the step started");
    assert!(events.iter().any(|e| matches!(e, Event::Cancelled { step, duration: None, .. } if step == "b")));
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_up_front_starts_nothing() {
    let p = load_ok("steps:\n  - { name: a, type: work }\n");
    let fake = Fake::sleeping(&["a"], ms(10));
    let options = RunOptions::default();
    options.cancel.cancel();
    let (out, _) = run_with(&p, &fake, RunInput::default(), options).await;
    assert_eq!(out.report.status, RunStatus::Cancelled);
    assert!(fake.marks("a").is_empty());
}

#[tokio::test(start_paused = true)]
async fn templates_render_values_strings_and_earlier_metadata() {
    let p = load_ok(
        "name: tpl
steps:
  - { name: a, type: work }
  - name: b
    type: work
    params:
      width: '{{steps.a.metadata.size.width}}'
      label: 'w={{ steps.a.metadata.size.width }} for {{input}} in {{run.id}} of {{pipeline.name}}'
      count: '{{steps.a.artifacts}}'
      nested: ['{{steps.a.metadata.tags[1]}}', 3]
",
    );
    // b has no input_from, but references a: it waits for a.
    assert_eq!(p.step("b").unwrap().deps, vec![0]);
    let meta = json!({"size": {"width": 512}, "tags": ["x", "y"]});
    let fake = Fake::new([("a", Behavior { sleep: ms(50), metadata: meta, ..Default::default() }), ("b", b(1))]);
    let options = RunOptions { run_id: "r-42".into(), ..Default::default() };
    let (out, _) = run_with(&p, &fake, RunInput::text("a cat"), options).await;
    assert_eq!(out.report.status, RunStatus::Succeeded);
    assert!(fake.time("b", Mark::Start) >= fake.time("a", Mark::End));
    let got = fake.received("b");
    assert_eq!(
        got.params,
        json!({"width": 512, "label": "w=512 for a cat in r-42 of tpl", "count": 1, "nested": ["y", 3]})
    );
    assert!(got.inputs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_metadata_fails_the_step_with_a_clear_error() {
    let p = load_ok(
        "steps:
  - { name: a, type: work }
  - { name: b, type: generate, params: { prompt: 'h={{steps.a.metadata.height}}' } }
  - { name: c, type: work, input_from: b }
",
    );
    let fake = Fake::new([("a", Behavior { metadata: json!({"width": 1}), ..Default::default() })]);
    let (out, _) = run(&p, &fake).await;
    assert_eq!(status(&out, "b"), StepStatus::Failed);
    assert_eq!(
        error(&out, "b"),
        "params at '/prompt': '{{steps.a.metadata.height}}': step 'a' metadata has no 'height' (it has: width)"
    );
    assert!(fake.marks("b").is_empty());
    assert_eq!(status(&out, "c"), StepStatus::Skipped);
}

#[tokio::test(start_paused = true)]
async fn rendered_params_are_checked_against_the_schema() {
    let p = load_ok(
        "steps:
  - { name: a, type: work }
  - { name: b, type: upscale, params: { factor: '{{steps.a.metadata.f}}' } }
",
    );
    let fake = Fake::new([("a", Behavior { metadata: json!({"f": "two"}), ..Default::default() })]);
    let (out, _) = run(&p, &fake).await;
    assert_eq!(status(&out, "b"), StepStatus::Failed);
    let e = error(&out, "b");
    assert!(e.starts_with("rendered params do not match the schema of stage 'upscale': at '/factor'"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn missing_input_text_is_a_clear_step_error() {
    let p = load_ok("steps:\n  - { name: g, type: generate, params: { prompt: '{{input}}' } }\n");
    let (out, _) = run(&p, &Fake::default()).await;
    assert_eq!(error(&out, "g"), "params at '/prompt': '{{input}}' is used but the run was given no input text");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_runner_fails_its_step() {
    let p = load_ok("steps:\n  - { name: a, type: work }\n  - { name: b, type: work, input_from: a }\n");
    let fake = Fake::new([("a", Behavior { panic: true, ..Default::default() })]);
    let (out, _) = run(&p, &fake).await;
    assert_eq!(status(&out, "a"), StepStatus::Failed);
    assert_eq!(error(&out, "a"), "the step runner panicked: boom in a");
    assert_eq!(status(&out, "b"), StepStatus::Skipped);
}

#[tokio::test(start_paused = true)]
async fn nested_fail_fast_reaches_the_outer_group() {
    let p = load_ok(
        "steps:
  - type: parallel_group
    name: outer
    steps:
      - { name: sibling, type: work }
      - type: parallel_group
        name: inner
        fail_fast: false
        steps:
          - { name: bad, type: work }
          - { name: peer, type: work }
",
    );
    let fake = Fake::new([("bad", failing(10, "x")), ("peer", b(1_000)), ("sibling", b(1_000))]);
    let (out, _) = run(&p, &fake).await;
    // The inner group keeps going, but the outer one is fail-fast: it stops everything in it.
    assert_eq!(status(&out, "sibling"), StepStatus::Cancelled);
    assert_eq!(status(&out, "peer"), StepStatus::Cancelled);
    assert!(error(&out, "peer").contains("fail-fast group 'outer'"), "{}", error(&out, "peer"));
}

#[tokio::test(start_paused = true)]
async fn a_step_outcome_reaches_the_runner_with_its_spec_fields() {
    let p = load_ok("steps:\n  - { name: a, type: work, retries: 3, timeout: 1.5, params: { width: 2 } }\n");
    let fake = Fake::default();
    let options = RunOptions { run_id: "id-1".into(), ..Default::default() };
    run_with(&p, &fake, RunInput::default(), options).await;
    let got = fake.received("a");
    assert_eq!((got.stage.as_str(), got.retries, got.timeout), ("work", 3, Some(Duration::from_millis(1500))));
    assert_eq!((got.run_id.as_str(), got.params), ("id-1", json!({"width": 2})));
}

/// On a real multi-threaded runtime with real time: independent steps overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_overlap_on_a_real_runtime() {
    let p = load_ok("steps:\n  - { name: a, type: work }\n  - { name: b, type: work }\n");
    let fake = Fake::sleeping(&["a", "b"], ms(300));
    let (out, _) = run(&p, &fake).await;
    assert_eq!(out.report.status, RunStatus::Succeeded);
    let (a, b) = (out.report.step("a").unwrap(), out.report.step("b").unwrap());
    // Both started before either finished.
    assert!(a.started.unwrap() < b.finished.unwrap() && b.started.unwrap() < a.finished.unwrap());
}

#[tokio::test(start_paused = true)]
async fn events_can_go_to_a_channel_and_reports_round_trip() {
    let p = load_ok("steps:\n  - { name: a, type: work }\n");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions { observer: Some(channel_observer(tx)), ..Default::default() };
    let out = DagExecutor::new(Fake::sleeping(&["a"], ms(5))).run(&p, RunInput::default(), options).await;
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(serde_json::to_value(&e).unwrap()["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["queued", "started", "finished", "run_finished"]);
    let json = serde_json::to_string(&out.report).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.steps[0].status, StepStatus::Succeeded);
    assert_eq!(back.critical_path, ["a"]);
}
