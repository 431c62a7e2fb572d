//! The queue against a real `redis-server` (7.0, from Debian) started on a
//! loopback port with AOF on and `appendfsync always`. Workers run on
//! threads of their own, each with its own runtime: "killing" one drops its
//! runtime mid-job, so it never commits, hands back or says goodbye, and
//! its connections close, which is all Redis sees of a `kill -9`.

use stagecraft_cluster::testing::Redis;
use stagecraft_cluster::worker::{self, Finished, Job, WorkerConfig, WorkerCounts};
use stagecraft_cluster::{Band, Cancel, ClusterError, EnqueueOptions, Outcome, Queue, QueueConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn config(lease_ms: u64) -> QueueConfig {
    QueueConfig {
        lease: Duration::from_millis(lease_ms),
        block: Duration::from_millis(200),
        worker_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Runs of each job's handler, and what each run returned.
type Runs = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A worker on its own thread. `stop` drains it; `kill` drops it mid-work.
struct TestWorker {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Arc<WorkerCounts>,
}

impl TestWorker {
    fn start<H, F>(url: String, config: QueueConfig, name: &str, concurrency: usize, handler: H) -> Self
    where
        H: Fn(Job) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Finished> + Send + 'static,
    {
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let stop = CancellationToken::new();
        let counts = Arc::new(WorkerCounts::default());
        let config_w = WorkerConfig { name: name.into(), concurrency, drain: Duration::from_millis(300) };
        let (stop2, counts2) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let rt = rt();
            rt.block_on(async move {
                let queue = Queue::connect(&url, config).await.unwrap();
                tokio::select! {
                    done = worker::run(queue, config_w, handler, stop2, counts2) => done.unwrap(),
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every task: no commit, no hand-back.
            drop(rt);
        });
        Self { kill: Some(kill), stop, thread: Some(thread), counts }
    }

    fn kill(&mut self) {
        let _ = self.kill.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }

    fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// A handler that takes `ms` per job (waiting, like a call to a hosted
/// model), records its run and returns the worker's name as the result.
fn waiting_handler(
    name: &'static str,
    ms: u64,
    runs: Runs,
) -> impl Fn(Job) -> std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>> + Send + Sync + 'static {
    move |job: Job| {
        let runs = runs.clone();
        Box::pin(async move {
            runs.lock().unwrap().entry(job.id().to_owned()).or_default().push(name.into());
            job.event(&format!(r#"{{"event":"progress","worker":"{name}"}}"#)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Finished { outcome: Outcome::Succeeded, result: format!("done by {name}"), error: None }
        })
    }
}

async fn wait_until_final(queue: &Queue, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut open = 0;
        for id in ids {
            if !queue.job(id).await.unwrap().unwrap().is_final() {
                open += 1;
            }
        }
        if open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{open} jobs still not final");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bands_are_read_highest_first_and_the_bound_and_ids_hold() {
    let redis = Redis::start();
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), QueueConfig { max_queued: 3, ..config(5_000) }).await.unwrap();
        queue.enqueue("low-1", Band::Low, "l").await.unwrap();
        queue.enqueue("normal-1", Band::Normal, "n").await.unwrap();
        assert_eq!(queue.enqueue("high-1", Band::High, "h").await.unwrap(), 3);
        match queue.enqueue("one-more", Band::High, "x").await {
            Err(ClusterError::QueueFull { queued: 3, max: 3 }) => {}
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert!(matches!(queue.enqueue("low-1", Band::Low, "again").await, Err(ClusterError::Duplicate(_))));
        for bad in ["../etc", "a b", "", "x\n", &"a".repeat(129)] {
            assert!(matches!(queue.enqueue(bad, Band::Low, "").await, Err(ClusterError::InvalidId(_))), "{bad:?}");
        }
        // A second process sees the same bound.
        let other = Queue::connect(&redis.url(), QueueConfig { max_queued: 3, ..config(5_000) }).await.unwrap();
        assert!(matches!(other.enqueue("elsewhere", Band::Normal, "").await, Err(ClusterError::QueueFull { .. })));

        let mut consumer = queue.consumer("c1").await.unwrap();
        let mut order = Vec::new();
        for _ in 0..3 {
            let lease = consumer.next().await.unwrap().expect("a job");
            assert_eq!((lease.epoch(), lease.delivery()), (1, 1));
            order.push(lease.job().to_owned());
            assert!(lease.commit(Outcome::Succeeded, "ok", None).await.unwrap());
        }
        assert_eq!(order, ["high-1", "normal-1", "low-1"]);
        assert!(consumer.next().await.unwrap().is_none());
        // Room again once delivered: the bound counts jobs waiting.
        other.enqueue("elsewhere", Band::Normal, "").await.unwrap();
        let stats = queue.stats().await.unwrap();
        assert_eq!((stats.commits, stats.queued["normal"], stats.leased), (3, 1, 0));
        let events: Vec<String> = queue.events("high-1", "0").await.unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(
            events[0].contains("job_queued") && events[1].contains("job_started") && events[2].contains("job_finished")
        );
    });
}

#[test]
fn a_killed_worker_costs_only_its_jobs_in_flight_and_every_job_commits_once() {
    let redis = Redis::start();
    let runs: Runs = Arc::default();
    // A lease long enough that a busy machine never lets a live one run out.
    let cfg = config(2_000);
    let ids: Vec<String> = (0..200).map(|i| format!("job-{i:03}")).collect();
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        for id in &ids {
            queue.enqueue(id, Band::Normal, "{}").await.unwrap();
        }
    });
    let mut workers: Vec<TestWorker> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|name| TestWorker::start(redis.url(), cfg.clone(), name, 4, waiting_handler(name, 30, runs.clone())))
        .collect();
    // Kill w2 once some work is done, while it holds jobs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers[1].counts.committed.load(Ordering::Relaxed) < 15 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let in_flight = workers[1].counts.holding.load(Ordering::Relaxed);
    workers[1].kill();
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        wait_until_final(&queue, &ids, Duration::from_secs(60)).await;
        let mut rerun = 0;
        for id in &ids {
            let job = queue.job(id).await.unwrap().unwrap();
            assert_eq!((job.state.as_str(), job.commits), ("succeeded", 1), "{job:?}");
            let job_runs = runs.lock().unwrap()[id].clone();
            if job_runs.len() > 1 {
                rerun += 1;
                // The first run was the killed worker's; the result is the rerun's.
                assert_eq!(job_runs[0], "w2", "{id}: {job_runs:?}");
                assert_eq!(job.result.as_deref(), Some(format!("done by {}", job_runs.last().unwrap()).as_str()));
            }
        }
        // Only what w2 held when it died ran again: at most its 4 slots.
        assert!((1..=4).contains(&rerun), "{rerun} jobs ran again, w2 held {in_flight}");
        let stats = queue.stats().await.unwrap();
        assert_eq!(stats.commits, 200);
        assert!(stats.reclaims >= rerun, "{} reclaims", stats.reclaims);
        assert_eq!(stats.leased, 0);
        assert!(stats.workers.iter().any(|w| w.name == "w1" && w.alive), "{:?}", stats.workers);
    });
    for w in &mut workers {
        if w.thread.is_some() {
            w.stop();
        }
    }
}

#[test]
fn a_stalled_worker_past_its_lease_cannot_commit_and_the_reclaimers_result_stands() {
    let redis = Redis::start();
    let cfg = config(1_000);
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = stalled.clone();
    // Like SIGSTOP: the whole worker (its runtime's only thread) stops, so
    // no renewal goes out; then it wakes and finishes.
    let mut a = TestWorker::start(redis.url(), cfg.clone(), "stalls", 1, move |job: Job| {
        let flag = flag.clone();
        Box::pin(async move {
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(3_000));
            let _ = job;
            Finished { outcome: Outcome::Succeeded, result: "late result".into(), error: None }
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>>
    });
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        queue.enqueue("stall-me", Band::Normal, "{}").await.unwrap();
        while !stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let runs: Runs = Arc::default();
    let mut b = TestWorker::start(redis.url(), cfg.clone(), "healthy", 1, waiting_handler("healthy", 10, runs.clone()));
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        wait_until_final(&queue, &["stall-me".into()], Duration::from_secs(10)).await;
        // Wait for the stalled worker to wake and try its commit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.counts.refused.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the stalled worker never tried to commit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let job = queue.job("stall-me").await.unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.commits, job.deliveries), ("succeeded", 1, 2));
        assert_eq!(job.result.as_deref(), Some("done by healthy"));
        assert_eq!(a.counts.committed.load(Ordering::Relaxed), 0);
        let stats = queue.stats().await.unwrap();
        assert_eq!((stats.refused_commits, stats.reclaims), (1, 1));
        let events: Vec<String> = queue.events("stall-me", "0").await.unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(events.iter().filter(|e| e.contains("job_finished")).count(), 1, "{events:?}");
        assert!(events.iter().any(|e| e.contains("job_requeued") && e.contains("stalls")), "{events:?}");
    });
    a.stop();
    b.stop();
}

#[test]
fn accepted_jobs_survive_kill_9_of_redis_with_appendfsync_always() {
    let mut redis = Redis::start();
    let cfg = config(1_000);
    let ids: Vec<String> = (0..300).map(|i| format!("durable-{i}")).collect();
    // Enqueue from a thread while Redis is killed underneath: every id
    // whose enqueue returned Ok must be there after the restart.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let (url, ids2, acc) = (redis.url(), ids.clone(), accepted.clone());
    let submitter = std::thread::spawn(move || {
        rt().block_on(async {
            let queue = Queue::connect(&url, cfg.clone()).await.unwrap();
            for id in &ids2 {
                // An error is a refusal the caller hears (a 503): not accepted.
                if queue.enqueue(id, Band::Normal, "{}").await.is_ok() {
                    acc.lock().unwrap().push(id.clone());
                }
            }
        })
    });
    while accepted.lock().unwrap().len() < 100 {
        std::thread::sleep(Duration::from_millis(2));
    }
    redis.kill_and_restart();
    submitter.join().unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 100);
    let runs: Runs = Arc::default();
    let mut w = TestWorker::start(redis.url(), config(1_000), "after", 8, waiting_handler("after", 1, runs.clone()));
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), config(1_000)).await.unwrap();
        wait_until_final(&queue, &accepted, Duration::from_secs(60)).await;
        for id in &accepted {
            assert_eq!(queue.job(id).await.unwrap().unwrap().state, "succeeded", "{id}");
        }
    });
    w.stop();
}

#[test]
fn a_job_that_kills_its_worker_every_time_goes_to_the_dead_letters_and_the_rest_finish() {
    let redis = Redis::start();
    let cfg = QueueConfig { max_deliveries: 3, ..config(500) };
    let ids: Vec<String> = (0..20).map(|i| format!("fine-{i}")).collect();
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        queue.enqueue("poison", Band::High, "{}").await.unwrap();
        for id in &ids {
            queue.enqueue(id, Band::Normal, "{}").await.unwrap();
        }
    });
    let runs: Runs = Arc::default();
    // Workers that die on the poison job, one after another (one slot
    // each, so that the poison job is all a worker holds when it dies).
    let mut crashes = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crashed = Arc::new(AtomicBool::new(false));
        let flag = crashed.clone();
        let inner = waiting_handler("crashy", 5, runs.clone());
        let mut w = TestWorker::start(redis.url(), cfg.clone(), &format!("crashy-{crashes}"), 1, move |job: Job| {
            if job.id() == "poison" {
                flag.store(true, Ordering::SeqCst);
                return Box::pin(std::future::pending())
                    as std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>>;
            }
            inner(job)
        });
        let state = rt().block_on(async {
            let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
            loop {
                let state = queue.job("poison").await.unwrap().unwrap().state;
                if crashed.load(Ordering::SeqCst) || state == "dead" {
                    return state;
                }
                assert!(Instant::now() < deadline, "the poison job was never delivered again");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        if state == "dead" {
            w.stop();
            break;
        }
        w.kill();
        crashes += 1;
        // Let the lease run out while no worker runs: the next one reaps it.
        std::thread::sleep(Duration::from_millis(150));
    }
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        wait_until_final(&queue, &ids, Duration::from_secs(30)).await;
        for id in &ids {
            assert_eq!(queue.job(id).await.unwrap().unwrap().state, "succeeded");
        }
        let poison = queue.job("poison").await.unwrap().unwrap();
        assert_eq!((poison.state.as_str(), poison.commits), ("dead", 0));
        let dead = queue.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].job.as_str(), dead[0].deliveries), ("poison", 3));
        assert!(dead[0].reason.contains("lease ran out") && dead[0].reason.contains("crashy"), "{}", dead[0].reason);
        assert_eq!(queue.stats().await.unwrap().dead_letters, 1);
    });
    assert_eq!(crashes, 3, "one crash per delivery, up to the cap");
}

#[test]
fn a_draining_worker_hands_back_what_it_cannot_finish() {
    let redis = Redis::start();
    let cfg = config(5_000);
    let runs: Runs = Arc::default();
    let mut slow =
        TestWorker::start(redis.url(), cfg.clone(), "slow", 2, waiting_handler("slow", 60_000, runs.clone()));
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        queue.enqueue("long-1", Band::Normal, "{}").await.unwrap();
        queue.enqueue("long-2", Band::Normal, "{}").await.unwrap();
        while slow.counts.holding.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    slow.stop();
    // Handed back while draining (a lease running out would not count here).
    assert_eq!(slow.counts.handed_back.load(Ordering::Relaxed), 2);
    let mut quick = TestWorker::start(redis.url(), cfg.clone(), "quick", 2, waiting_handler("quick", 5, runs.clone()));
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        wait_until_final(&queue, &["long-1".into(), "long-2".into()], Duration::from_secs(10)).await;
        for id in ["long-1", "long-2"] {
            let job = queue.job(id).await.unwrap().unwrap();
            assert_eq!(job.result.as_deref(), Some("done by quick"));
            // A hand-back does not count against the delivery cap.
            assert_eq!(job.deliveries, 1);
        }
        let stats = queue.stats().await.unwrap();
        assert_eq!(stats.handed_back, 2);
        assert!(!stats.workers.iter().any(|w| w.name == "slow"), "a drained worker leaves the list");
    });
    quick.stop();
}

/// A handler that waits until its job is cancelled (or a minute passes).
fn cancellable_handler(
) -> impl Fn(Job) -> std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>> + Send + Sync + 'static {
    |job: Job| {
        Box::pin(async move {
            tokio::select! {
                _ = job.cancelled().cancelled() => {
                    Finished { outcome: Outcome::Cancelled, result: "stopped".into(), error: Some("cancelled".into()) }
                }
                _ = tokio::time::sleep(Duration::from_secs(60)) => {
                    Finished { outcome: Outcome::Succeeded, result: "ran to the end".into(), error: None }
                }
            }
        })
    }
}

#[test]
fn cancels_reach_queued_and_running_jobs_and_finished_jobs_expire() {
    let redis = Redis::start();
    let cfg = QueueConfig { retention: Duration::from_secs(2), max_payload_bytes: 1024, ..config(900) };
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        // A payload past the limit is refused before it reaches Redis.
        match queue.enqueue("huge", Band::Normal, &"x".repeat(1025)).await {
            Err(ClusterError::PayloadTooLarge { bytes: 1025, max: 1024 }) => {}
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        assert!(queue.job("huge").await.unwrap().is_none());
        // Cancelled while queued: it ends at once and no worker ever gets it.
        queue.enqueue("queued-then-cancelled", Band::Normal, "{}").await.unwrap();
        assert_eq!(queue.cancel("queued-then-cancelled").await.unwrap(), Cancel::Cancelled);
        let job = queue.job("queued-then-cancelled").await.unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.commits), ("cancelled", 1));
        assert_eq!(queue.cancel("queued-then-cancelled").await.unwrap(), Cancel::Ended("cancelled".into()));
        assert_eq!(queue.cancel("no-such-job").await.unwrap(), Cancel::Unknown);
        assert_eq!(queue.cancel("../etc").await.unwrap(), Cancel::Unknown);
    });
    let mut worker = TestWorker::start(redis.url(), cfg.clone(), "w", 2, cancellable_handler());
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        queue.enqueue("running-then-cancelled", Band::Normal, "{}").await.unwrap();
        while queue.job("running-then-cancelled").await.unwrap().unwrap().state != "running" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queue.cancel("running-then-cancelled").await.unwrap(), Cancel::Requested);
        wait_until_final(&queue, &["running-then-cancelled".into()], Duration::from_secs(10)).await;
        let job = queue.job("running-then-cancelled").await.unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.commits, job.result.as_deref()), ("cancelled", 1, Some("stopped")));
        assert_eq!((job.error.as_deref(), job.cancel_requested), (Some("cancelled"), true));
        let events: Vec<String> =
            queue.events("running-then-cancelled", "0").await.unwrap().into_iter().map(|(_, e)| e).collect();
        assert!(events.iter().any(|e| e.contains("cancel_requested")), "{events:?}");
        assert!(events.last().unwrap().contains("job_finished"), "{events:?}");
        // Both are listed, newest first, until they expire.
        let recent: Vec<String> = queue.recent(10).await.unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(recent, ["running-then-cancelled", "queued-then-cancelled"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.job("running-then-cancelled").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the finished job never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(queue.events("running-then-cancelled", "0").await.unwrap().is_empty(), "its events expired too");
        assert!(queue.recent(10).await.unwrap().is_empty());
    });
    worker.stop();
}

#[test]
fn unlisted_jobs_keep_their_own_retention_and_result_manifests_are_shared() {
    let redis = Redis::start();
    let cfg = QueueConfig { retention: Duration::from_secs(3600), results_kept: Duration::from_secs(2), ..config(900) };
    let mut worker = TestWorker::start(redis.url(), cfg.clone(), "w", 2, cancellable_handler());
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        // An invocation sent to a worker: not listed, kept 1 s once done
        // (the queue keeps jobs an hour).
        let options = EnqueueOptions { unlisted: true, keep: Some(Duration::from_secs(1)) };
        queue.enqueue_with("an-invocation", Band::High, "{}", &options).await.unwrap();
        queue.enqueue("a-job", Band::Normal, "{}").await.unwrap();
        let recent: Vec<String> = queue.recent(10).await.unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(recent, ["a-job"]);
        queue.cancel("an-invocation").await.unwrap();
        queue.cancel("a-job").await.unwrap();
        wait_until_final(&queue, &["an-invocation".into(), "a-job".into()], Duration::from_secs(10)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.job("an-invocation").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the invocation's record never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(queue.job("a-job").await.unwrap().is_some(), "the job keeps the queue's retention");

        // A manifest kept by one process is read by another, and expires
        // unless it is read.
        let key = "ab".repeat(32);
        let other = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        queue.keep_result(&key, "{\"artifacts\":[]}").await.unwrap();
        assert_eq!(other.kept_result(&key).await.unwrap().as_deref(), Some("{\"artifacts\":[]}"));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(other.kept_result(&key).await.unwrap().is_some(), "a manifest in use stays");
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(other.kept_result(&key).await.unwrap().is_none(), "an unused manifest expires");
        assert!(queue.keep_result("../etc", "{}").await.is_err(), "keys are digests");
        assert!(queue.kept_result("../etc").await.unwrap().is_none());
    });
    worker.stop();
}

/// A fixed amount of arithmetic (a CPU-bound stage): `rounds` rounds,
/// calibrated once to take about 20 ms alone, so that sharing a core makes
/// it slower (spinning on the clock would not).
fn spin(rounds: u64) -> u64 {
    let mut x = 0u64;
    for r in 0..rounds {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i ^ r));
        }
    }
    x
}

fn rounds_for(ms: u64) -> u64 {
    let t = Instant::now();
    std::hint::black_box(spin(200));
    (200.0 * ms as f64 / (t.elapsed().as_secs_f64() * 1e3)).max(1.0) as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Jobs/s for `jobs` jobs over `workers` workers of `slots` slots each,
/// each job taking `ms` waiting (`cpu` false) or computing (`cpu` true).
fn throughput(redis: &Redis, prefix: &str, workers: usize, slots: usize, jobs: usize, ms: u64, cpu: bool) -> f64 {
    let cfg = QueueConfig { prefix: prefix.into(), max_queued: 100_000, ..config(5_000) };
    let rounds = if cpu { rounds_for(ms) } else { 0 };
    let handler = move |_job: Job| {
        Box::pin(async move {
            if cpu {
                std::hint::black_box(spin(rounds));
            } else {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Finished { outcome: Outcome::Succeeded, result: String::new(), error: None }
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>>
    };
    let ids: Vec<String> = (0..jobs).map(|i| format!("j{i}")).collect();
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        for id in &ids {
            queue.enqueue(id, Band::Normal, "{}").await.unwrap();
        }
    });
    let started = Instant::now();
    let mut ws: Vec<TestWorker> = (0..workers)
        .map(|i| TestWorker::start(redis.url(), cfg.clone(), &format!("{prefix}-w{i}"), slots, handler))
        .collect();
    rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        while queue.stats().await.unwrap().commits < jobs as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    for w in &mut ws {
        w.stop();
    }
    rate
}

/// One job's latency from enqueue to its `job_finished` event, through
/// Redis, against the same hand-off over an in-process channel.
fn latencies(redis: &Redis, n: usize) -> (f64, f64, f64) {
    let cfg = QueueConfig { prefix: "latency".into(), ..config(5_000) };
    let mut w = TestWorker::start(redis.url(), cfg.clone(), "latency-w", 1, |_job: Job| {
        Box::pin(async { Finished { outcome: Outcome::Succeeded, result: String::new(), error: None } })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>>
    });
    let via_redis = rt().block_on(async {
        let queue = Queue::connect(&redis.url(), cfg.clone()).await.unwrap();
        let mut reader = queue.event_reader(Duration::from_secs(5)).await.unwrap();
        let mut times = Vec::new();
        let mut enqueue_times = Vec::new();
        for i in 0..n {
            let id = format!("lat-{i}");
            let t = Instant::now();
            queue.enqueue(&id, Band::Normal, "{}").await.unwrap();
            enqueue_times.push(t.elapsed().as_secs_f64() * 1e3);
            let mut after = "0".to_owned();
            'wait: loop {
                for (pos, event) in reader.next(&id, &after).await.unwrap() {
                    if event.contains("job_finished") {
                        break 'wait;
                    }
                    after = pos;
                }
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median(times), median(enqueue_times))
    });
    w.stop();
    let in_process = rt().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(16);
        tokio::spawn(async move {
            while let Some(done) = rx.recv().await {
                let _ = done.send(());
            }
        });
        let mut times = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let (done, finished) = tokio::sync::oneshot::channel();
            tx.send(done).await.unwrap();
            finished.await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        median(times)
    });
    (via_redis.0, via_redis.1, in_process)
}

/// `cargo test --release -p stagecraft-cluster --test queue -- --ignored --nocapture bench`
#[test]
#[ignore = "a benchmark: prints a table"]
fn bench_queue_scaling_and_latency() {
    let redis = Redis::start();
    println!("\nworkers on the Redis queue (one process, a thread and a runtime each), median of 3 runs\n");
    println!("{:<38} {:>9} {:>9} {:>9} {:>10}", "work", "1 worker", "2", "4", "4 vs 1");
    let rows: [(&str, usize, usize, u64, bool); 2] = [
        ("waiting 200 ms, 8 slots each (jobs/s)", 8, 160, 200, false),
        ("CPU 20 ms, 1 slot each (jobs/s)", 1, 100, 20, true),
    ];
    for (label, slots, jobs, ms, cpu) in rows {
        let mut rates = Vec::new();
        for workers in [1, 2, 4] {
            let runs: Vec<f64> = (0..3)
                .map(|r| throughput(&redis, &format!("b-{cpu}-{workers}-{r}"), workers, slots, jobs, ms, cpu))
                .collect();
            rates.push(median(runs));
        }
        println!("{:<38} {:>9.1} {:>9.1} {:>9.1} {:>9.2}x", label, rates[0], rates[1], rates[2], rates[2] / rates[0]);
    }
    let (redis_ms, enqueue_ms, local_ms) = latencies(&redis, 300);
    let lax = Redis::start_with("everysec");
    let (lax_ms, lax_enqueue_ms, _) = latencies(&lax, 300);
    println!("\nenqueue to job_finished, no-op job, p50 of 300 (ms)");
    println!("{:<38} {:>10} {:>10}", "appendfsync", "always", "everysec");
    println!("{:<38} {:>10.3} {:>10.3}", "through Redis (one worker)", redis_ms, lax_ms);
    println!("{:<38} {:>10.3} {:>10.3}", "  of which the enqueue (202) call", enqueue_ms, lax_enqueue_ms);
    println!("{:<38} {:>10.3} {:>10.3}", "in-process channel (embedded)", local_ms, local_ms);
    println!("{:<38} {:>10.3} {:>10.3}", "Redis adds", redis_ms - local_ms, lax_ms - local_ms);
}
