//! Behaviour tests for the scheduler. Timing-dependent checks run on tokio's
//! paused clock (`start_paused`), so they are exact and cannot flake on a
//! loaded machine; everything else checks orderings and counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stagecraft_scheduler::{
    AttemptOutcome, Failure, FinishStatus, Jitter, ManualProbe, MemoryPolicy, PressureLevel, RetryPolicy, Scheduler,
    SchedulerConfig, ShutdownMode, StagePoolConfig, SubmitError, TaskError, TaskEventKind, TaskHandle, TaskSpec,
};
use tokio::sync::{mpsc, oneshot, watch};

// ---------------------------------------------------------------- helpers

const GIB: u64 = 1 << 30;

/// A config that ignores the host: a fake probe with no pressure, no budget,
/// no default timeout, deterministic backoff.
fn config(max_workers: usize) -> SchedulerConfig {
    config_with_probe(max_workers, ManualProbe::new(64 * GIB))
}

fn config_with_probe(max_workers: usize, probe: ManualProbe) -> SchedulerConfig {
    SchedulerConfig {
        max_workers,
        max_queue: 1000,
        default_stage_limit: 64,
        per_stage: HashMap::new(),
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: Jitter::None,
        },
        default_timeout: None,
        memory: MemoryPolicy {
            budget_bytes: Some(u64::MAX),
            sample_interval: Duration::ZERO,
            probe: Arc::new(probe),
            ..MemoryPolicy::default()
        },
        event_capacity: 256,
    }
}

/// Held closed until `open`; tasks wait on it.
#[derive(Clone)]
struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    fn new() -> Self {
        Gate(Arc::new(watch::channel(false).0))
    }
    fn open(&self) {
        self.0.send_replace(true);
    }
    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Tracks how many tasks run at once.
#[derive(Default)]
struct Tracker {
    current: AtomicUsize,
    max: AtomicUsize,
}

struct Entered(Arc<Tracker>);

impl Tracker {
    fn enter(self: &Arc<Self>) -> Entered {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Entered(self.clone())
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sets a flag (and optionally signals) when dropped: proves a future died.
struct DropGuard(Arc<AtomicBool>, Option<oneshot::Sender<()>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(tx) = self.1.take() {
            let _ = tx.send(());
        }
    }
}

/// Submits a task that records `name` when it starts, then waits on `gate`.
fn gated(
    s: &Scheduler,
    spec: TaskSpec,
    name: &'static str,
    log: &Arc<Mutex<Vec<&'static str>>>,
    gate: &Gate,
) -> TaskHandle<&'static str> {
    let (log, gate) = (log.clone(), gate.clone());
    s.submit(spec, move |_| {
        let (log, gate) = (log.clone(), gate.clone());
        async move {
            log.lock().unwrap().push(name);
            gate.wait().await;
            Ok(name)
        }
    })
    .expect("submit")
}

/// Submits a task that holds `tracker` for `hold` (paused clock) and ends.
fn tracked(s: &Scheduler, spec: TaskSpec, tracker: &Arc<Tracker>, hold: Duration) -> TaskHandle<()> {
    let tracker = tracker.clone();
    s.submit(spec, move |_| {
        let tracker = tracker.clone();
        async move {
            let _in = tracker.enter();
            tokio::time::sleep(hold).await;
            Ok(())
        }
    })
    .expect("submit")
}

async fn join_all<T>(handles: Vec<TaskHandle<T>>) -> Vec<Result<T, TaskError>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.outcome);
    }
    out
}

/// Fails the test instead of hanging if `fut` can never finish. Use under
/// `start_paused`: the clock only jumps when every task is idle, i.e. stuck.
async fn or_stuck<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(3600), fut).await {
        Ok(out) => out,
        Err(_) => panic!("stuck: {what}"),
    }
}

fn always(failure: Failure) -> impl Fn(stagecraft_scheduler::Attempt) -> std::future::Ready<Result<(), Failure>> {
    move |_| std::future::ready(Err(failure.clone()))
}

/// Submits a task that always fails retryably, with minute-long backoffs,
/// and returns once it is waiting out its first backoff.
async fn task_in_backoff(s: &Scheduler) -> TaskHandle<()> {
    let mut events = s.subscribe();
    let policy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_secs(60),
        cap: Duration::from_secs(60),
        jitter: Jitter::None,
    };
    let handle = s.submit(TaskSpec::new("x").retry(policy), always(Failure::Retryable("x".into()))).unwrap();
    while !matches!(events.recv().await.unwrap().kind, TaskEventKind::Retrying { .. }) {}
    handle
}

// ------------------------------------------------------- ordering & queue

#[tokio::test]
async fn higher_priority_first_fifo_within_priority() {
    let s = Scheduler::new(config(1));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (block, go) = (Gate::new(), Gate::new());
    go.open();
    let blocker = gated(&s, TaskSpec::new("x"), "blocker", &log, &block);
    let handles = vec![
        gated(&s, TaskSpec::new("x").priority(1), "p1", &log, &go),
        gated(&s, TaskSpec::new("y").priority(5), "p5-a", &log, &go),
        gated(&s, TaskSpec::new("x").priority(3), "p3", &log, &go),
        gated(&s, TaskSpec::new("x").priority(5), "p5-b", &log, &go),
        gated(&s, TaskSpec::new("y").priority(-2), "p-2", &log, &go),
        gated(&s, TaskSpec::new("y").priority(5), "p5-c", &log, &go),
    ];
    assert_eq!(s.status().queue_size, 6);
    block.open();
    assert!(blocker.await.outcome.is_ok());
    assert!(join_all(handles).await.iter().all(Result::is_ok));
    assert_eq!(*log.lock().unwrap(), ["blocker", "p5-a", "p5-b", "p5-c", "p3", "p1", "p-2"]);
}

#[tokio::test]
async fn fifo_within_one_priority() {
    let s = Scheduler::new(config(1));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (block, go) = (Gate::new(), Gate::new());
    go.open();
    let blocker = gated(&s, TaskSpec::new("x"), "blocker", &log, &block);
    let names = ["a", "b", "c", "d", "e", "f"];
    let handles: Vec<_> = names.iter().map(|n| gated(&s, TaskSpec::new("x").priority(7), n, &log, &go)).collect();
    block.open();
    blocker.await;
    join_all(handles).await;
    assert_eq!(log.lock().unwrap()[1..], names);
}

#[tokio::test]
async fn full_queue_refuses_with_queue_full() {
    let mut cfg = config(1);
    cfg.max_queue = 2;
    let s = Scheduler::new(cfg);
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let running = gated(&s, TaskSpec::new("x"), "running", &log, &gate);
    let queued = [gated(&s, TaskSpec::new("x"), "q1", &log, &gate), gated(&s, TaskSpec::new("x"), "q2", &log, &gate)];
    let refused = s.submit(TaskSpec::new("x"), |_| async { Ok(()) });
    assert_eq!(refused.err(), Some(SubmitError::QueueFull { max: 2 }));
    let status = s.status();
    assert_eq!((status.queue_size, status.max_queue_size, status.running_tasks), (2, 2, 1));
    gate.open();
    running.await;
    join_all(queued.into()).await;
    // Room again once the queue drained.
    assert!(s.submit(TaskSpec::new("x"), |_| async { Ok(()) }).unwrap().await.outcome.is_ok());
}

// ----------------------------------------------------------- pool limits

#[tokio::test(start_paused = true)]
async fn stage_at_limit_does_not_block_other_stages() {
    let cfg = config(4).stage("a", StagePoolConfig { limit: Some(1), memory_bytes: None });
    let s = Scheduler::new(cfg);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (gate, go) = (Gate::new(), Gate::new());
    go.open();
    let a1 = gated(&s, TaskSpec::new("a"), "a1", &log, &gate);
    // Highest priority, but its stage is full: must not hold back stage b.
    let a2 = gated(&s, TaskSpec::new("a").priority(100), "a2", &log, &go);
    let b = vec![gated(&s, TaskSpec::new("b"), "b1", &log, &go), gated(&s, TaskSpec::new("b"), "b2", &log, &go)];
    assert!(
        or_stuck("stage b behind full stage a", join_all(b)).await.iter().all(Result::is_ok),
        "stage b ran while a was full"
    );
    let status = s.status();
    let a = status.stages.iter().find(|p| p.name == "a").unwrap();
    assert_eq!((a.limit, a.running, a.queued), (1, 1, 1));
    assert!(!log.lock().unwrap().contains(&"a2"));
    gate.open();
    a1.await;
    assert_eq!(a2.await.outcome.unwrap(), "a2");
}

#[tokio::test(start_paused = true)]
async fn global_max_workers_respected() {
    let s = Scheduler::new(config(3));
    let tracker = Arc::new(Tracker::default());
    let handles: Vec<_> = (0..12)
        .map(|i| tracked(&s, TaskSpec::new(["x", "y", "z"][i % 3]), &tracker, Duration::from_millis(10)))
        .collect();
    assert!(join_all(handles).await.iter().all(Result::is_ok));
    assert_eq!(tracker.max(), 3);
    assert_eq!(s.status().completed, 12);
}

#[tokio::test(start_paused = true)]
async fn per_stage_limit_respected() {
    let cfg = config(8).stage("gpu", StagePoolConfig { limit: Some(2), memory_bytes: None });
    let s = Scheduler::new(cfg);
    let (gpu, cpu) = (Arc::new(Tracker::default()), Arc::new(Tracker::default()));
    let mut handles = Vec::new();
    for _ in 0..6 {
        handles.push(tracked(&s, TaskSpec::new("gpu"), &gpu, Duration::from_millis(10)));
        handles.push(tracked(&s, TaskSpec::new("cpu"), &cpu, Duration::from_millis(10)));
    }
    join_all(handles).await;
    assert_eq!(gpu.max(), 2);
    assert_eq!(cpu.max(), 6, "the rest of the workers went to the other stage");
}

#[tokio::test]
async fn dedicated_task_runs_alone_in_its_stage() {
    let cfg = config(8).stage("s", StagePoolConfig { limit: Some(3), memory_bytes: None });
    let s = Scheduler::new(cfg);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (g1, g_ded, go) = (Gate::new(), Gate::new(), Gate::new());
    go.open();
    let n1 = gated(&s, TaskSpec::new("s"), "n1", &log, &g1);
    let n2 = gated(&s, TaskSpec::new("s"), "n2", &log, &g1);
    let ded = gated(&s, TaskSpec::new("s").dedicated(true), "ded", &log, &g_ded);
    let n3 = gated(&s, TaskSpec::new("s"), "n3", &log, &go);
    let other = gated(&s, TaskSpec::new("t"), "other", &log, &go);
    assert!(other.await.outcome.is_ok(), "other stages proceed");
    assert_eq!(s.status().stages.iter().find(|p| p.name == "s").unwrap().queued, 2);
    g1.open();
    join_all(vec![n1, n2]).await;
    // The dedicated task now holds the whole pool; n3 waits behind it.
    tokio::task::yield_now().await;
    let status = s.status();
    let pool = status.stages.iter().find(|p| p.name == "s").unwrap();
    assert_eq!((pool.running, pool.slots_in_use, pool.queued), (1, 3, 1));
    assert_eq!(status.running_tasks, 1, "a dedicated task is one global worker");
    g_ded.open();
    ded.await;
    n3.await;
    assert_eq!(*log.lock().unwrap(), ["n1", "n2", "other", "ded", "n3"]);
}

// ------------------------------------------------------ retries & deadlines

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_and_stop_at_limit() {
    let s = Scheduler::new(config(1));
    let policy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(500),
        jitter: Jitter::None,
    };
    let result = s.submit(TaskSpec::new("x").retry(policy), always(Failure::Retryable("busy".into()))).unwrap().await;
    assert_eq!(result.outcome, Err(TaskError::Failed { failure: Failure::Retryable("busy".into()), attempts: 5 }));
    let waits: Vec<_> = result.attempts.iter().map(|a| a.backoff.as_millis()).collect();
    assert_eq!(waits, [0, 100, 200, 400, 500]);
    for pair in result.attempts.windows(2) {
        // The wait happened between attempts (exactly, on the paused clock).
        assert_eq!(pair[1].started_at - pair[0].finished_at, pair[1].backoff);
        assert_eq!(pair[1].number, pair[0].number + 1);
    }
    let status = s.status();
    assert_eq!((status.retried, status.failed, status.completed), (4, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_within_growing_ceilings() {
    let s = Scheduler::new(config(1));
    let cap = Duration::from_millis(800);
    let policy = RetryPolicy { max_attempts: 7, base: Duration::from_millis(100), cap, jitter: Jitter::Full };
    let result = s.submit(TaskSpec::new("x").retry(policy), always(Failure::Retryable("busy".into()))).unwrap().await;
    assert_eq!(result.attempts.len(), 7);
    let ceilings: Vec<_> = result.attempts.iter().map(|a| a.backoff_ceiling.as_millis()).collect();
    assert_eq!(ceilings, [0, 100, 200, 400, 800, 800, 800]);
    for pair in result.attempts.windows(2) {
        let next = &pair[1];
        assert!(next.backoff <= next.backoff_ceiling && next.backoff_ceiling <= cap);
        assert!(next.started_at - pair[0].finished_at >= next.backoff);
    }
}

#[tokio::test(start_paused = true)]
async fn retry_then_success() {
    let s = Scheduler::new(config(1));
    let result = s
        .submit(TaskSpec::new("x"), |attempt| async move {
            if attempt.number < 3 {
                Err(Failure::Retryable("warming up".into()))
            } else {
                Ok(attempt.number)
            }
        })
        .unwrap()
        .await;
    assert_eq!(result.outcome, Ok(3));
    assert_eq!(result.attempts.len(), 3);
    assert_eq!(result.attempts[2].outcome, AttemptOutcome::Succeeded);
    assert_eq!((s.status().retried, s.status().completed), (2, 1));
}

/// The caller's own error type, as a stage runtime would return it.
#[derive(Debug, PartialEq)]
enum StageFault {
    Busy(u32),
    BadInput(&'static str),
}

impl std::fmt::Display for StageFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageFault::Busy(n) => write!(f, "busy (try {n})"),
            StageFault::BadInput(why) => write!(f, "bad input: {why}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_callers_error_comes_back_typed() {
    let s = Scheduler::new(config(1));
    let policy = RetryPolicy { max_attempts: 3, ..config(1).retry };
    let result = s
        .submit(TaskSpec::new("x").retry(policy), |attempt| async move {
            if attempt.number < 2 {
                return Err(Failure::retryable(StageFault::Busy(attempt.number)));
            }
            Err::<(), _>(Failure::permanent(StageFault::BadInput("empty image")))
        })
        .unwrap()
        .await;
    let error = result.outcome.unwrap_err();
    // The retry decision and the message are the scheduler's; the value is the caller's.
    assert_eq!(error, TaskError::Failed { failure: Failure::Permanent("bad input: empty image".into()), attempts: 2 });
    assert_eq!(error.error::<StageFault>().as_deref(), Some(&StageFault::BadInput("empty image")));
    assert_eq!(error.error::<String>(), None, "a different type is not there");
    match &result.attempts[0].outcome {
        AttemptOutcome::Failed(first) => assert_eq!(first.error::<StageFault>().as_deref(), Some(&StageFault::Busy(1))),
        other => panic!("first attempt: {other:?}"),
    }
    // A failure built from a message carries no value, and says so.
    assert_eq!(Failure::Retryable("plain".into()).error::<StageFault>(), None);
}

#[tokio::test(start_paused = true)]
async fn permanent_failure_is_not_retried() {
    let s = Scheduler::new(config(1));
    let result = s.submit(TaskSpec::new("x"), always(Failure::Permanent("bad input".into()))).unwrap().await;
    assert_eq!(result.outcome, Err(TaskError::Failed { failure: Failure::Permanent("bad input".into()), attempts: 1 }));
    assert_eq!(result.attempts.len(), 1);
    assert_eq!(s.status().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn deadline_hit_is_a_retried_timeout() {
    let s = Scheduler::new(config(1));
    let limit = Duration::from_secs(2);
    let deadlines = Arc::new(Mutex::new(Vec::new()));
    let seen = deadlines.clone();
    let result = s
        .submit(TaskSpec::new("x").timeout(limit), move |attempt| {
            seen.lock().unwrap().push(attempt.deadline);
            async move {
                if attempt.number == 1 {
                    std::future::pending::<()>().await; // hangs: the backstop fires
                }
                Ok("second try")
            }
        })
        .unwrap()
        .await;
    assert_eq!(result.outcome, Ok("second try"));
    assert_eq!(result.attempts[0].outcome, AttemptOutcome::Failed(Failure::Timeout(limit)));
    assert_eq!(result.attempts[0].duration, limit);
    let first_deadline = deadlines.lock().unwrap()[0];
    assert_eq!(first_deadline, Some(result.attempts[0].started_at + limit));

    // Always too slow: retried until the attempts run out.
    let result = s
        .submit(TaskSpec::new("x").timeout(limit), |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .unwrap()
        .await;
    assert_eq!(result.outcome, Err(TaskError::Failed { failure: Failure::Timeout(limit), attempts: 3 }));
}

// --------------------------------------------------------- cancellation

#[tokio::test]
async fn cancelled_queued_task_never_starts() {
    let s = Scheduler::new(config(1));
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let blocker = gated(&s, TaskSpec::new("x"), "blocker", &log, &gate);
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let victim = s
        .submit(TaskSpec::new("x").priority(10), move |_| {
            flag.store(true, Ordering::SeqCst);
            async { Ok(()) }
        })
        .unwrap();
    assert_eq!(s.status().queue_size, 1);
    assert!(victim.cancel());
    assert_eq!(s.status().queue_size, 0, "removed from the queue at once");
    let result = victim.await;
    assert_eq!(result.outcome, Err(TaskError::Cancelled));
    assert!(result.attempts.is_empty() && result.started_at.is_none());
    gate.open();
    blocker.await;
    assert!(!started.load(Ordering::SeqCst));
    let status = s.status();
    assert_eq!((status.cancelled, status.completed), (1, 1));
}

#[tokio::test]
async fn cancelling_running_task_drops_its_future_and_frees_the_slot() {
    let s = Scheduler::new(config(1));
    let dropped = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let flag = dropped.clone();
    let running = s
        .submit(TaskSpec::new("x"), move |_| {
            let guard = DropGuard(flag.clone(), None);
            let started = started_tx.clone();
            async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<Result<(), Failure>>().await
            }
        })
        .unwrap();
    started_rx.recv().await.unwrap();
    assert_eq!(s.status().running_tasks, 1);
    running.cancel();
    let result = running.await;
    assert_eq!(result.outcome, Err(TaskError::Cancelled));
    assert!(dropped.load(Ordering::SeqCst), "the attempt future was dropped");
    assert_eq!(result.attempts[0].outcome, AttemptOutcome::Cancelled);
    assert_eq!(s.status().running_tasks, 0);
    // The single worker is free again.
    assert!(s.submit(TaskSpec::new("x"), |_| async { Ok(()) }).unwrap().await.outcome.is_ok());
    assert_eq!(s.status().cancelled, 1);
}

#[tokio::test]
async fn dropping_the_handle_cancels() {
    let s = Scheduler::new(config(1));
    let dropped = Arc::new(AtomicBool::new(false));
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let dropped_tx = Mutex::new(Some(dropped_tx));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let flag = dropped.clone();
    let running = s
        .submit(TaskSpec::new("x"), move |_| {
            let guard = DropGuard(flag.clone(), dropped_tx.lock().unwrap().take());
            let started = started_tx.clone();
            async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<Result<(), Failure>>().await
            }
        })
        .unwrap();
    // A queued one too: dropped before it could start.
    let queued_started = Arc::new(AtomicBool::new(false));
    let qflag = queued_started.clone();
    let queued = s
        .submit(TaskSpec::new("x"), move |_| {
            qflag.store(true, Ordering::SeqCst);
            async { Ok(()) }
        })
        .unwrap();
    started_rx.recv().await.unwrap();
    drop(queued);
    drop(running);
    dropped_rx.await.unwrap();
    assert!(dropped.load(Ordering::SeqCst));
    // Slot freed: the next task runs on the single worker.
    assert!(s.submit(TaskSpec::new("x"), |_| async { Ok(()) }).unwrap().await.outcome.is_ok());
    assert!(!queued_started.load(Ordering::SeqCst));
    let status = s.status();
    assert_eq!((status.cancelled, status.completed, status.running_tasks, status.queue_size), (2, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn cancel_during_backoff_stops_retrying() {
    let s = Scheduler::new(config(1));
    let handle = task_in_backoff(&s).await;
    assert_eq!(s.status().running_tasks, 0, "backoff holds no slot");
    let id = handle.id();
    assert!(s.cancel(id));
    let result = handle.await;
    assert_eq!(result.outcome, Err(TaskError::Cancelled));
    assert_eq!(result.attempts.len(), 1);
}

// ------------------------------------------------------------- memory

#[tokio::test(start_paused = true)]
async fn memory_pressure_lowers_concurrency() {
    let probe = ManualProbe::new(16 * GIB);
    let s = Scheduler::new(config_with_probe(4, probe.clone()));
    let hold = Duration::from_millis(10);

    let run = |level: f64| {
        probe.set_used_fraction(level);
        let tracker = Arc::new(Tracker::default());
        let handles: Vec<_> = (0..8).map(|_| tracked(&s, TaskSpec::new("x"), &tracker, hold)).collect();
        (tracker, handles)
    };
    let (normal, h) = run(0.50);
    join_all(h).await;
    let (warn, h) = run(0.85);
    assert_eq!(s.status().memory.pressure, PressureLevel::Warn);
    assert_eq!(s.status().effective_workers, 2);
    join_all(h).await;
    let (shed, h) = run(0.95);
    assert_eq!(s.status().memory.pressure, PressureLevel::Shed);
    join_all(h).await;
    assert_eq!((normal.max(), warn.max(), shed.max()), (4, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn work_resumes_when_pressure_drops_without_any_task_finishing() {
    let probe = ManualProbe::new(16 * GIB);
    let mut cfg = config_with_probe(4, probe.clone());
    cfg.memory.sample_interval = Duration::from_millis(250);
    let s = Scheduler::new(cfg);
    probe.set_used_fraction(0.95);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (gate, go) = (Gate::new(), Gate::new());
    go.open();
    let long = gated(&s, TaskSpec::new("x"), "long", &log, &gate);
    let quick: Vec<_> = ["q1", "q2", "q3"].iter().map(|n| gated(&s, TaskSpec::new("x"), n, &log, &go)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.status().running_tasks, 1, "shed: one at a time");
    assert_eq!(s.status().queue_size, 3);
    probe.set_used_fraction(0.10);
    // The long task is still running: only the pressure re-check can start these.
    let quick = or_stuck("pressure re-check", join_all(quick)).await;
    assert!(quick.iter().all(Result::is_ok));
    gate.open();
    long.await;
}

#[tokio::test(start_paused = true)]
async fn memory_budget_respected() {
    let mut cfg = config(8).stage("big", StagePoolConfig { limit: None, memory_bytes: Some(60) });
    cfg.memory.budget_bytes = Some(100);
    let s = Scheduler::new(cfg);
    let hold = Duration::from_millis(10);

    let small = Arc::new(Tracker::default());
    let handles: Vec<_> = (0..6).map(|_| tracked(&s, TaskSpec::new("x").memory_bytes(40), &small, hold)).collect();
    tokio::task::yield_now().await;
    let status = s.status();
    assert_eq!((status.memory.budget_used_bytes, status.memory.budget_total_bytes), (80, 100));
    join_all(handles).await;
    assert_eq!(small.max(), 2);

    // Estimate from the stage's declared memory (60): one at a time.
    let big = Arc::new(Tracker::default());
    let handles: Vec<_> = (0..3).map(|_| tracked(&s, TaskSpec::new("big"), &big, hold)).collect();
    join_all(handles).await;
    assert_eq!(big.max(), 1);

    // Larger than the whole budget: runs alone rather than never.
    let huge = Arc::new(Tracker::default());
    let handles = vec![
        tracked(&s, TaskSpec::new("x").memory_bytes(500), &huge, hold),
        tracked(&s, TaskSpec::new("x").memory_bytes(500), &huge, hold),
    ];
    assert!(join_all(handles).await.iter().all(Result::is_ok));
    assert_eq!(huge.max(), 1);
    assert_eq!(s.status().memory.budget_used_bytes, 0);
}

// ------------------------------------------------ counters, events, shutdown

#[tokio::test(start_paused = true)]
async fn counters_and_status_after_a_mix() {
    let s = Scheduler::new(config(2));
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(s.submit(TaskSpec::new("ok"), |_| async { Ok(()) }).unwrap());
    }
    handles.push(s.submit(TaskSpec::new("bad"), always(Failure::Permanent("no".into()))).unwrap());
    handles.push(
        s.submit(TaskSpec::new("ok"), |a| async move {
            if a.number == 1 {
                Err(Failure::Retryable("flaky".into()))
            } else {
                Ok(())
            }
        })
        .unwrap(),
    );
    let never = s.submit(TaskSpec::new("bad").priority(-1), |_| async { Ok(()) }).unwrap();
    never.cancel();
    let results = join_all(handles).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(never.await.outcome, Err(TaskError::Cancelled));

    let status = s.status();
    assert_eq!((status.completed, status.failed, status.retried, status.cancelled), (4, 1, 1, 1));
    assert_eq!((status.queue_size, status.running_tasks, status.max_workers), (0, 0, 2));
    assert!(status.is_running);
    let stage = |name: &str| status.stages.iter().find(|p| p.name == name).unwrap().clone();
    let ok = stage("ok");
    assert_eq!((ok.completed, ok.failed, ok.retried, ok.running, ok.queued), (4, 0, 1, 0, 0));
    let bad = stage("bad");
    assert_eq!((bad.completed, bad.failed, bad.cancelled), (0, 1, 1));
    assert_eq!(s.counters().completed, 4);

    let json = serde_json::to_value(&status).unwrap();
    for key in [
        "queue_size",
        "max_queue_size",
        "running_tasks",
        "max_workers",
        "completed",
        "failed",
        "retried",
        "cancelled",
        "is_running",
        "stages",
        "memory",
    ] {
        assert!(json.get(key).is_some(), "status JSON lacks {key}");
    }
    assert_eq!(json["memory"]["pressure"], "normal");
}

#[tokio::test(start_paused = true)]
async fn events_follow_the_lifecycle() {
    let s = Scheduler::new(config(1));
    let mut rx = s.subscribe();
    let handle = s
        .submit(TaskSpec::new("x").priority(3).label("job/step"), |a| async move {
            if a.number == 1 {
                Err(Failure::Retryable("once".into()))
            } else {
                Ok(())
            }
        })
        .unwrap();
    let id = handle.id();
    handle.await;
    let mut kinds = Vec::new();
    while let Ok(event) = rx.try_recv() {
        assert_eq!((event.id, event.label.as_str(), event.stage.as_str()), (id, "job/step", "x"));
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        [
            TaskEventKind::Queued { priority: 3 },
            TaskEventKind::Started { attempt: 1 },
            TaskEventKind::Retrying {
                attempt: 1,
                failure: Failure::Retryable("once".into()),
                backoff: Duration::from_millis(100)
            },
            TaskEventKind::Started { attempt: 2 },
            TaskEventKind::Finished { status: FinishStatus::Completed, attempts: 2 },
        ]
    );
}

#[tokio::test]
async fn panicking_attempt_fails_permanently_and_frees_its_slot() {
    let s = Scheduler::new(config(1));
    let result = s
        .submit(TaskSpec::new("x"), |_| async {
            if true {
                panic!("boom");
            }
            Ok(())
        })
        .unwrap()
        .await;
    match result.outcome {
        Err(TaskError::Failed { failure: Failure::Permanent(msg), attempts: 1 }) => assert!(msg.contains("boom")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.submit(TaskSpec::new("x"), |_| async { Ok(()) }).unwrap().await.outcome.is_ok());
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_and_drops_queued() {
    let s = Scheduler::new(config(1));
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let running = gated(&s, TaskSpec::new("x"), "running", &log, &gate);
    let queued = gated(&s, TaskSpec::new("x"), "queued", &log, &gate);
    tokio::task::yield_now().await;
    let shutdown = tokio::spawn({
        let s = s.clone();
        async move { s.shutdown(ShutdownMode::Graceful).await }
    });
    assert_eq!(queued.await.outcome, Err(TaskError::ShuttingDown));
    assert!(!s.is_running());
    assert_eq!(s.submit(TaskSpec::new("x"), |_| async { Ok(()) }).err(), Some(SubmitError::ShuttingDown));
    gate.open();
    assert_eq!(running.await.outcome, Ok("running"));
    shutdown.await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["running"]);
    assert!(!s.status().is_running);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_ends_backoff_without_retrying() {
    let s = Scheduler::new(config(1));
    let handle = task_in_backoff(&s).await;
    let start = tokio::time::Instant::now();
    s.shutdown(ShutdownMode::Graceful).await;
    assert!(start.elapsed() < Duration::from_secs(60), "did not sit out the backoff");
    let result = handle.await;
    assert_eq!(result.outcome, Err(TaskError::ShuttingDown));
    assert_eq!(result.attempts.len(), 1);
    assert_eq!(s.status().retried, 1);
}

#[tokio::test]
async fn cancel_shutdown_drops_running_futures() {
    let s = Scheduler::new(config(2));
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let running = s
        .submit(TaskSpec::new("x"), move |_| {
            let guard = DropGuard(flag.clone(), None);
            let started = started_tx.clone();
            async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<Result<(), Failure>>().await
            }
        })
        .unwrap();
    started_rx.recv().await.unwrap();
    s.shutdown(ShutdownMode::Cancel).await;
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(running.await.outcome, Err(TaskError::ShuttingDown));
    assert_eq!(s.status().running_tasks, 0);
}

#[tokio::test(start_paused = true)]
async fn drain_shutdown_runs_everything_accepted() {
    let s = Scheduler::new(config(1));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            s.submit(TaskSpec::new("x"), move |a| async move {
                if a.number == 1 && i % 2 == 0 {
                    Err(Failure::Retryable("again".into()))
                } else {
                    Ok(i)
                }
            })
            .unwrap()
        })
        .collect();
    s.shutdown(ShutdownMode::Drain).await;
    let results = join_all(handles).await;
    assert_eq!(results, [Ok(0), Ok(1), Ok(2), Ok(3)]);
}

// ------------------------------------------------------------ under load

/// Many tasks on a multi-threaded runtime with random priorities, stages and
/// cancellations: limits are never exceeded and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mix_keeps_limits_and_books() {
    let stages = ["a", "b", "c", "d"];
    let mut cfg = config(5);
    for (i, name) in stages.iter().enumerate() {
        cfg = cfg.stage(*name, StagePoolConfig { limit: Some(i + 1), memory_bytes: None });
    }
    let s = Scheduler::new(cfg);
    let global = Arc::new(Tracker::default());
    let per_stage: Vec<_> = stages.iter().map(|_| Arc::new(Tracker::default())).collect();
    let mut rng = fastrand_like(42);
    let mut handles = Vec::new();
    let mut cancelled = 0;
    for i in 0..300u64 {
        let k = (rng() % 4) as usize;
        let (g, t) = (global.clone(), per_stage[k].clone());
        let spec = TaskSpec::new(stages[k]).priority((rng() % 5) as i32).dedicated(i % 17 == 0);
        let handle = s
            .submit(spec, move |_| {
                let (g, t) = (g.clone(), t.clone());
                async move {
                    let _a = g.enter();
                    let _b = t.enter();
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    Ok(())
                }
            })
            .unwrap();
        if rng().is_multiple_of(7) {
            handle.cancel();
            cancelled += 1;
        }
        handles.push(handle);
    }
    let results = join_all(handles).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let was_cancelled = results.iter().filter(|r| **r == Err(TaskError::Cancelled)).count();
    assert_eq!(ok + was_cancelled, 300);
    assert!(was_cancelled <= cancelled);
    assert!(global.max() <= 5);
    for (i, t) in per_stage.iter().enumerate() {
        assert!(t.max() <= i + 1, "stage {} ran {} at once", stages[i], t.max());
    }
    let status = s.status();
    assert_eq!((status.running_tasks, status.queue_size), (0, 0));
    assert_eq!(status.completed as usize, ok);
    assert_eq!(status.cancelled as usize, was_cancelled);
    assert_eq!(status.stages.iter().map(|p| p.running + p.slots_in_use).sum::<usize>(), 0);
}

/// Tiny deterministic generator for the load test (xorshift).
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
