//! CPU slots: what bounds the instances that *compute*, so that an instance
//! *waiting* — on a hosted model over `wasi:http`, on the model repository,
//! on the host's segmentation, on a WASI sleep or poll — costs no core.
//!
//! How it works. Every invocation runs inside [`OnCpu`], a future wrapper
//! that holds a [`CpuSlots`] permit while it polls the instance. The instance
//! returns `Pending` for one of two reasons, and the wrapper tells them apart
//! with a flag the store's epoch callback sets ([`InvocationMeter`]):
//!
//! - an **epoch yield** (every tick, so the executor's threads are shared):
//!   the instance is still computing and keeps its slot, unless an instance
//!   that came back from a wait is queued for one; then it steps aside to the
//!   front of the queue (a wait-heavy instance needs a few milliseconds of
//!   CPU to finish, and should not sit behind long CPU-bound ones);
//! - a **wait in a host call**: the instance is parked. Its slot goes to the
//!   next instance at once, and it queues for one again when woken.
//!
//! So CPU-bound work never runs on more than the slots at once (each of them
//! runs to completion in arrival order), while parked instances are bounded
//! only by the in-flight limit (the scheduler's) and instance slots. The
//! permit is taken *before* the instance is created: an invocation queued
//! for CPU holds no instance memory yet.
//!
//! Two classes of waiters, served in this order: instances coming back from
//! a wait (and ones preempted for them, at the front), then new ones.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::oneshot;

/// What a parked instance waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    /// An outgoing `wasi:http` request or its response body.
    Http,
    /// The `inference` import (the model repository's batcher).
    Inference,
    /// `wasi:nn` compute (same batcher).
    WasiNn,
    /// The `segmentation` import (the host's segmentation pool or GPU).
    Segmentation,
    /// Anything else WASI waits on: a sleep, a poll, a file operation.
    Io,
}

impl WaitKind {
    const ALL: [WaitKind; 5] = [Self::Http, Self::Inference, Self::WasiNn, Self::Segmentation, Self::Io];

    fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Inference => "inference",
            Self::WasiNn => "wasi_nn",
            Self::Segmentation => "segmentation",
            Self::Io => "io",
        }
    }
}

/// Whether a parked instance gives its CPU slot back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkPolicy {
    /// The default: waiting costs no CPU slot.
    #[default]
    ReleaseWhileWaiting,
    /// Every running instance holds a slot for its whole life, waiting or
    /// not (stagecraft before CPU slots; kept for comparison benchmarks).
    HoldWhileWaiting,
}

/// A snapshot of the CPU slots, for status endpoints and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityStatus {
    /// Slots in all (instances computing at most).
    pub cpu_slots: usize,
    /// Slots held now.
    pub cpu_busy: usize,
    /// Invocations queued for a slot (new ones and ones back from a wait).
    pub cpu_queued: usize,
    /// Instances parked in a host call, by what they wait on (serialized
    /// as an object: `{"http": 3, ...}`).
    #[serde(serialize_with = "parked_by_kind")]
    pub parked: Vec<(WaitKind, usize)>,
    /// Parked instances in all.
    pub parked_total: usize,
    /// Times an instance parked since start.
    #[serde(rename = "parks_total")]
    pub parks: u64,
    /// Times a computing instance stepped aside for one back from a wait.
    #[serde(rename = "preemptions_total")]
    pub preemptions: u64,
    pub policy: ParkPolicy,
}

fn parked_by_kind<S: serde::Serializer>(parked: &[(WaitKind, usize)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(parked.iter().map(|(k, n)| (k.as_str(), n)))
}

/// Where a queued invocation goes in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A new invocation: the back of the second line.
    Fresh,
    /// Stepped aside at an epoch yield: the front of the second line.
    Preempted,
    /// Back from a wait: the first line.
    Resume,
}

#[derive(Debug, Default)]
struct SlotState {
    free: usize,
    resuming: VecDeque<oneshot::Sender<()>>,
    fresh: VecDeque<oneshot::Sender<()>>,
}

/// The CPU slots of one runtime. See the module docs.
#[derive(Debug)]
pub struct CpuSlots {
    total: usize,
    policy: ParkPolicy,
    state: Mutex<SlotState>,
    /// `state.resuming.len()`, readable at every epoch yield without the lock.
    resuming: AtomicUsize,
    parked: [AtomicUsize; 5],
    parks: AtomicU64,
    preemptions: AtomicU64,
}

impl CpuSlots {
    /// `total` slots (at least 1).
    pub fn new(total: usize, policy: ParkPolicy) -> Self {
        let total = total.max(1);
        Self {
            total,
            policy,
            state: Mutex::new(SlotState { free: total, ..SlotState::default() }),
            resuming: AtomicUsize::new(0),
            parked: Default::default(),
            parks: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // Nothing panics while the lock is held; do not cascade if it did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot now, or a place in line.
    fn acquire(self: &Arc<Self>, class: Class) -> Acquire {
        let mut st = self.lock();
        // Invariant: a slot is free only while nobody waits.
        if st.free > 0 {
            st.free -= 1;
            return Acquire { slots: self.clone(), waiting: None };
        }
        let (tx, rx) = oneshot::channel();
        match class {
            Class::Fresh => st.fresh.push_back(tx),
            Class::Preempted => st.fresh.push_front(tx),
            Class::Resume => {
                st.resuming.push_back(tx);
                self.resuming.store(st.resuming.len(), Ordering::Relaxed);
            }
        }
        Acquire { slots: self.clone(), waiting: Some(rx) }
    }

    /// Hands a slot to the next in line, or frees it.
    fn release(&self) {
        let mut st = self.lock();
        loop {
            let next = match st.resuming.pop_front() {
                Some(tx) => {
                    self.resuming.store(st.resuming.len(), Ordering::Relaxed);
                    Some(tx)
                }
                None => st.fresh.pop_front(),
            };
            match next {
                // A waiter that went away (cancelled) cannot take it: next.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    st.free += 1;
                    return;
                }
            }
        }
    }

    /// A snapshot for status and metrics.
    pub fn status(&self) -> CapacityStatus {
        let (free, queued) = {
            let st = self.lock();
            (st.free, st.resuming.len() + st.fresh.len())
        };
        let parked: Vec<(WaitKind, usize)> =
            WaitKind::ALL.iter().map(|k| (*k, self.parked[k.index()].load(Ordering::Relaxed))).collect();
        CapacityStatus {
            cpu_slots: self.total,
            cpu_busy: self.total - free,
            cpu_queued: queued,
            parked_total: parked.iter().map(|(_, n)| n).sum(),
            parked,
            parks: self.parks.load(Ordering::Relaxed),
            preemptions: self.preemptions.load(Ordering::Relaxed),
            policy: self.policy,
        }
    }

    /// Runs `work` (one invocation) on these slots; `meter` is the one its
    /// store reports to.
    pub(crate) fn run<F: Future>(self: &Arc<Self>, meter: Arc<InvocationMeter>, work: F) -> OnCpu<F> {
        OnCpu {
            inner: Box::pin(work),
            slots: self.clone(),
            meter,
            permit: None,
            acquiring: None,
            class: Class::Fresh,
            parked: None,
        }
    }
}

/// A held CPU slot; dropping it hands the slot on.
#[derive(Debug)]
struct CpuPermit {
    slots: Arc<CpuSlots>,
}

impl Drop for CpuPermit {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// Waiting for a slot. Dropped after the slot was handed over but before it
/// was seen (cancellation), it passes the slot on instead of losing it.
#[derive(Debug)]
struct Acquire {
    slots: Arc<CpuSlots>,
    waiting: Option<oneshot::Receiver<()>>,
}

impl Future for Acquire {
    type Output = CpuPermit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CpuPermit> {
        if let Some(rx) = self.waiting.as_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                // The sender is dropped only after a send or with the
                // runtime; either way the slot is ours to account for.
                Poll::Ready(_) => self.waiting = None,
            }
        }
        Poll::Ready(CpuPermit { slots: self.slots.clone() })
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(mut rx) = self.waiting.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.slots.release();
            }
        }
    }
}

/// What one invocation's store tells its [`OnCpu`] wrapper: whether the
/// last `Pending` was an epoch yield, and what a wait is on. Shared between
/// the store (epoch callback, host calls) and the wrapper.
#[derive(Debug, Default)]
pub(crate) struct InvocationMeter {
    yielded: AtomicBool,
    /// A [`WaitKind`] index + 1 set by a host call while it awaits; 0: none.
    waiting_on: AtomicU8,
    /// Outgoing HTTP requests of this invocation whose response is not done.
    open_http: AtomicUsize,
}

impl InvocationMeter {
    /// Called by the epoch callback just before it yields.
    pub(crate) fn epoch_yield(&self) {
        self.yielded.store(true, Ordering::Relaxed);
    }

    /// Marks the host call that is about to await; the mark goes with the guard.
    pub(crate) fn waiting(self: &Arc<Self>, kind: WaitKind) -> WaitMark {
        self.waiting_on.store(kind.index() as u8 + 1, Ordering::Relaxed);
        WaitMark { meter: self.clone() }
    }

    /// Counts an outgoing request as open until the guard drops (with the
    /// response body, or the failure).
    pub(crate) fn http_request(self: &Arc<Self>) -> OpenRequest {
        self.open_http.fetch_add(1, Ordering::Relaxed);
        OpenRequest { meter: self.clone() }
    }

    fn wait_kind(&self) -> WaitKind {
        match self.waiting_on.load(Ordering::Relaxed) {
            0 if self.open_http.load(Ordering::Relaxed) > 0 => WaitKind::Http,
            0 => WaitKind::Io,
            n => WaitKind::ALL[usize::from(n - 1)],
        }
    }
}

/// See [`InvocationMeter::waiting`].
pub(crate) struct WaitMark {
    meter: Arc<InvocationMeter>,
}

impl Drop for WaitMark {
    fn drop(&mut self) {
        self.meter.waiting_on.store(0, Ordering::Relaxed);
    }
}

/// See [`InvocationMeter::http_request`].
pub(crate) struct OpenRequest {
    meter: Arc<InvocationMeter>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.meter.open_http.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One invocation on the CPU slots (see the module docs).
pub(crate) struct OnCpu<F: Future> {
    inner: Pin<Box<F>>,
    slots: Arc<CpuSlots>,
    meter: Arc<InvocationMeter>,
    permit: Option<CpuPermit>,
    acquiring: Option<Acquire>,
    /// Where to queue the next time a slot is needed.
    class: Class,
    /// Set while parked (for the counts).
    parked: Option<WaitKind>,
}

impl<F: Future> OnCpu<F> {
    fn unpark(&mut self) {
        if let Some(kind) = self.parked.take() {
            self.slots.parked[kind.index()].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<F: Future> Drop for OnCpu<F> {
    fn drop(&mut self) {
        self.unpark();
    }
}

impl<F: Future> Future for OnCpu<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin (the work is boxed).
        let this = self.get_mut();
        this.unpark();
        if this.permit.is_none() {
            let slots = &this.slots;
            let class = this.class;
            let acquiring = this.acquiring.get_or_insert_with(|| slots.acquire(class));
            match Pin::new(acquiring).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    this.permit = Some(permit);
                    this.acquiring = None;
                }
            }
        }
        match this.inner.as_mut().poll(cx) {
            Poll::Ready(output) => {
                this.permit = None;
                Poll::Ready(output)
            }
            Poll::Pending if this.meter.yielded.swap(false, Ordering::Relaxed) => {
                // Still computing (the yield has woken us already). Step
                // aside only for an instance that is back from a wait.
                if this.slots.resuming.load(Ordering::Relaxed) > 0 {
                    this.slots.preemptions.fetch_add(1, Ordering::Relaxed);
                    this.permit = None;
                    this.class = Class::Preempted;
                }
                Poll::Pending
            }
            Poll::Pending => {
                let kind = this.meter.wait_kind();
                this.slots.parked[kind.index()].fetch_add(1, Ordering::Relaxed);
                this.slots.parks.fetch_add(1, Ordering::Relaxed);
                this.parked = Some(kind);
                if this.slots.policy == ParkPolicy::ReleaseWhileWaiting {
                    this.permit = None;
                    this.class = Class::Resume;
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A future that computes (yields like an epoch tick) `ticks` times.
    async fn compute(meter: Arc<InvocationMeter>, ticks: u32, running: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) {
        for _ in 0..ticks {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(200));
            running.fetch_sub(1, Ordering::SeqCst);
            meter.epoch_yield();
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn computing_work_never_exceeds_the_slots() {
        let slots = Arc::new(CpuSlots::new(2, ParkPolicy::ReleaseWhileWaiting));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let meter = Arc::new(InvocationMeter::default());
                let work = compute(meter.clone(), 20, running.clone(), peak.clone());
                tokio::spawn(slots.run(meter, work))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "8 computing tasks on 2 slots");
        assert_eq!(slots.status().cpu_busy, 0, "every slot came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_work_holds_no_slot_unless_told_to() {
        for (policy, expect_busy) in [(ParkPolicy::ReleaseWhileWaiting, 0), (ParkPolicy::HoldWhileWaiting, 1)] {
            let slots = Arc::new(CpuSlots::new(1, policy));
            let (tx, rx) = oneshot::channel::<()>();
            let meter = Arc::new(InvocationMeter::default());
            let waiter = meter.clone();
            let parked = tokio::spawn(slots.run(meter, async move {
                let _mark = waiter.waiting(WaitKind::Inference);
                rx.await.unwrap();
            }));
            // The park is counted before the slot goes back, so wait (bounded) for both to settle.
            let settle = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut status = slots.status();
            while (status.parked_total == 0 || status.cpu_busy != expect_busy) && tokio::time::Instant::now() < settle {
                tokio::task::yield_now().await;
                status = slots.status();
            }
            assert_eq!(status.cpu_busy, expect_busy, "{policy:?}");
            assert_eq!(
                status.parked,
                vec![
                    (WaitKind::Http, 0),
                    (WaitKind::Inference, 1),
                    (WaitKind::WasiNn, 0),
                    (WaitKind::Segmentation, 0),
                    (WaitKind::Io, 0)
                ]
            );
            tx.send(()).unwrap();
            parked.await.unwrap();
            let status = slots.status();
            assert_eq!((status.cpu_busy, status.parked_total), (0, 0));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_waiter_passes_its_slot_on() {
        let slots = Arc::new(CpuSlots::new(1, ParkPolicy::ReleaseWhileWaiting));
        let held = slots.acquire(Class::Fresh).await;
        let queued = slots.acquire(Class::Fresh);
        let next = slots.acquire(Class::Fresh);
        drop(held); // handed to `queued`, which is dropped before it looks
        drop(queued);
        let _permit = tokio::time::timeout(Duration::from_secs(5), next).await.expect("the slot reached the next one");
        assert_eq!(slots.status().cpu_busy, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn instances_back_from_a_wait_go_first() {
        let slots = Arc::new(CpuSlots::new(1, ParkPolicy::ReleaseWhileWaiting));
        let held = slots.acquire(Class::Fresh).await;
        let mut fresh = slots.acquire(Class::Fresh);
        let resumed = slots.acquire(Class::Resume);
        assert_eq!(slots.resuming.load(Ordering::Relaxed), 1);
        drop(held);
        let _permit = tokio::time::timeout(Duration::from_secs(5), resumed).await.expect("resumer first");
        assert!(futures_poll_once(&mut fresh).is_pending(), "the new one still waits");
    }

    fn futures_poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }
}
