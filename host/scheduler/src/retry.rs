//! Retry policy: which failures are retried, how many times, and how long to
//! wait in between (exponential backoff with full jitter).
//!
//! The wait before retry `n` (n = 1 for the second attempt) is drawn
//! uniformly from `[0, min(cap, base * 2^(n-1))]` ("full jitter", as in the
//! AWS architecture blog post on backoff): spreading retries over the whole
//! window avoids synchronised retry storms after a shared outage.
//! [`Jitter::None`] waits the ceiling itself (deterministic, mostly for tests).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task::Failure;

/// How the backoff wait is drawn below its exponential ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`.
    #[default]
    Full,
    /// Exactly the ceiling.
    None,
}

/// Retry configuration (scheduler-wide default, overridable per task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = never retry). Clamped to >= 1.
    pub max_attempts: u32,
    /// Ceiling of the first retry's wait; doubles with each retry.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
    /// How the wait is drawn below the ceiling.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, base: Duration::from_millis(200), cap: Duration::from_secs(10), jitter: Jitter::Full }
    }
}

/// A computed wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// `min(cap, base * 2^(retry-1))`.
    pub ceiling: Duration,
    /// What is actually waited: in `[0, ceiling]`.
    pub wait: Duration,
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Whether attempt number `attempt` (1-based) that failed with `failure`
    /// should be followed by another attempt.
    pub fn should_retry(&self, failure: &Failure, attempt: u32) -> bool {
        failure.is_retryable() && attempt < self.max_attempts.max(1)
    }

    /// The ceiling of the wait before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
        let nanos = self.base.as_nanos().saturating_mul(u128::from(factor));
        let ceiling = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        ceiling.min(self.cap)
    }

    /// The wait before retry number `retry` (1-based), drawn with `rng`.
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Backoff {
        let ceiling = self.ceiling(retry);
        let wait = match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let max = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(0..=max))
            }
        };
        Backoff { ceiling, wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_and_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(500),
            jitter: Jitter::None,
        };
        let c: Vec<_> = (1..=5).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(c, [100, 200, 400, 500, 500]);
        assert_eq!(p.ceiling(200), Duration::from_millis(500), "no overflow");
    }

    #[test]
    fn full_jitter_stays_in_window() {
        let p = RetryPolicy { jitter: Jitter::Full, ..RetryPolicy::default() };
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 1..20 {
            let b = p.backoff(n, &mut rng);
            assert!(b.wait <= b.ceiling && b.ceiling <= p.cap);
        }
    }

    #[test]
    fn retryable_only_and_bounded() {
        let p = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        assert!(p.should_retry(&Failure::Retryable("x".into()), 1));
        assert!(p.should_retry(&Failure::Timeout(Duration::from_secs(1)), 2));
        assert!(!p.should_retry(&Failure::Retryable("x".into()), 3));
        assert!(!p.should_retry(&Failure::Permanent("x".into()), 1));
        assert!(!RetryPolicy::never().should_retry(&Failure::Retryable("x".into()), 1));
    }
}
