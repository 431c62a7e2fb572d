//! A circuit breaker for the GPU path: after `threshold` consecutive GPU
//! failures, work goes to the CPU for `cool_down`; then one trial job may
//! try the GPU again (half-open): success closes the breaker, failure opens
//! it for another cool-down. Time is passed in, so the state machine is
//! tested without a GPU or a clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// GPU in use; `failures` consecutive failures so far.
    Closed { failures: u32 },
    /// CPU only until `until`.
    Open { until: Instant },
    /// One trial job is on the GPU; others use the CPU until it reports.
    HalfOpen,
}

/// Where the breaker sends one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Gpu,
    /// The half-open trial: its outcome decides the breaker's state.
    GpuTrial,
    Cpu,
}

/// A thread-safe breaker (the lock guards only this small state, never GPU
/// work).
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` (at least 1) consecutive failures, for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self { threshold: threshold.max(1), cool_down, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    pub fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides where the next job runs at time `now`.
    pub fn route(&self, now: Instant) -> Route {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *s {
            State::Closed { .. } => Route::Gpu,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen;
                Route::GpuTrial
            }
            State::Open { .. } | State::HalfOpen => Route::Cpu,
        }
    }

    /// Reports a GPU job's success.
    pub fn success(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Closed { failures: 0 };
    }

    /// The half-open trial could not run (e.g. no GPU memory free): the
    /// next job at or after `now` may try again.
    pub fn abandon_trial(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s == State::HalfOpen {
            *s = State::Open { until: now };
        }
    }

    /// Reports a GPU job's failure at time `now`; returns true when this
    /// failure opened the breaker.
    pub fn failure(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *s {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *s = State::Closed { failures: failures + 1 };
                false
            }
            State::Closed { .. } | State::HalfOpen => {
                *s = State::Open { until: now + self.cool_down };
                true
            }
            // A job routed before the breaker opened failed late: stay open.
            State::Open { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_k_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breaker::new(3, Duration::from_secs(30));
        let t = Instant::now();
        assert_eq!(b.route(t), Route::Gpu);
        assert!(!b.failure(t));
        assert!(!b.failure(t));
        b.success();
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(!b.failure(t));
        assert!(!b.failure(t));
        assert!(b.failure(t), "the third consecutive failure opens it");
        assert_eq!(b.route(t), Route::Cpu);
        assert_eq!(b.route(t + Duration::from_secs(29)), Route::Cpu);
    }

    #[test]
    fn after_the_cool_down_one_trial_decides() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        assert!(b.failure(t));
        let later = t + Duration::from_secs(10);
        assert_eq!(b.route(later), Route::GpuTrial);
        // While the trial runs, everyone else stays on the CPU.
        assert_eq!(b.route(later), Route::Cpu);
        assert_eq!(b.state(), State::HalfOpen);
        // The trial fails: open for another full cool-down from then.
        assert!(b.failure(later));
        assert_eq!(b.route(later + Duration::from_secs(9)), Route::Cpu);
        assert_eq!(b.route(later + Duration::from_secs(10)), Route::GpuTrial);
        // This trial succeeds: closed, GPU for all.
        b.success();
        assert_eq!(b.route(later + Duration::from_secs(10)), Route::Gpu);
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_job_try() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.failure(t);
        let later = t + Duration::from_secs(10);
        assert_eq!(b.route(later), Route::GpuTrial);
        b.abandon_trial(later);
        assert_eq!(b.route(later), Route::GpuTrial);
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cool_down() {
        let b = Breaker::new(2, Duration::from_secs(5));
        let t = Instant::now();
        b.failure(t);
        assert!(b.failure(t));
        assert!(!b.failure(t + Duration::from_secs(4)));
        assert_eq!(b.route(t + Duration::from_secs(5)), Route::GpuTrial);
    }
}
