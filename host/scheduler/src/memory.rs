//! Memory awareness: the budget for running tasks' estimates, and host memory
//! pressure read through a [`MemoryProbe`].
//!
//! The policy is documented on [`MemoryPolicy`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Host memory at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySample {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl MemorySample {
    /// Fraction of memory in use, in `[0, 1]`.
    pub fn used_fraction(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        let available = self.available_bytes.min(self.total_bytes) as f64;
        1.0 - available / self.total_bytes as f64
    }
}

/// Reads host memory. Implement it to inject a fake in tests.
pub trait MemoryProbe: Send + Sync + 'static {
    /// The current sample, or `None` when it cannot be read (pressure is then
    /// treated as normal).
    fn sample(&self) -> Option<MemorySample>;
}

/// Reads `MemTotal` and `MemAvailable` from Linux `/proc/meminfo`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcMeminfo;

impl MemoryProbe for ProcMeminfo {
    fn sample(&self) -> Option<MemorySample> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        parse_meminfo(&text)
    }
}

/// Parses the text of `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> Option<MemorySample> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let slot = match key {
            "MemTotal:" => &mut total,
            "MemAvailable:" => &mut available,
            _ => continue,
        };
        *slot = value.parse::<u64>().ok().map(|kb| kb.saturating_mul(1024));
    }
    Some(MemorySample { total_bytes: total?, available_bytes: available? })
}

/// A probe whose values are set by hand (tests, or a host that measures
/// memory some other way). Cheap to clone; clones share the values.
#[derive(Debug, Clone)]
pub struct ManualProbe {
    total: Arc<AtomicU64>,
    available: Arc<AtomicU64>,
}

impl ManualProbe {
    /// A probe reporting `total_bytes` with everything available.
    pub fn new(total_bytes: u64) -> Self {
        Self { total: Arc::new(AtomicU64::new(total_bytes)), available: Arc::new(AtomicU64::new(total_bytes)) }
    }

    /// Sets the fraction of memory in use (`0.0..=1.0`).
    pub fn set_used_fraction(&self, used: f64) {
        let total = self.total.load(Ordering::Relaxed);
        let available = (total as f64 * (1.0 - used.clamp(0.0, 1.0))) as u64;
        self.available.store(available, Ordering::Relaxed);
    }
}

impl MemoryProbe for ManualProbe {
    fn sample(&self) -> Option<MemorySample> {
        Some(MemorySample {
            total_bytes: self.total.load(Ordering::Relaxed),
            available_bytes: self.available.load(Ordering::Relaxed),
        })
    }
}

/// Host memory pressure, as used by the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PressureLevel {
    /// Below `warn`: full concurrency.
    #[default]
    Normal,
    /// Between `warn` and `shed`: concurrency halved.
    Warn,
    /// At or above `shed`: one task at a time.
    Shed,
}

impl PressureLevel {
    /// Global worker limit under this level (never zero).
    pub fn effective_workers(self, max_workers: usize) -> usize {
        let max_workers = max_workers.max(1);
        match self {
            PressureLevel::Normal => max_workers,
            PressureLevel::Warn => (max_workers / 2).max(1),
            PressureLevel::Shed => 1,
        }
    }
}

/// Memory configuration of the scheduler.
///
/// # Policy
///
/// * **Budget.** Every task carries an estimate (`memory_bytes`). A task
///   starts only if the running tasks' estimates plus its own stay within
///   [`MemoryPolicy::budget_bytes`] (default: 75% of `MemTotal`, or unlimited
///   where the probe cannot read the host). Exception: when nothing is
///   running, the best queued task starts even if it alone exceeds the
///   budget, so an oversized task cannot wedge the queue. If the best
///   candidate does not fit, the scheduler waits for memory to free rather
///   than starting smaller, lower-priority tasks past it (no starvation of
///   large tasks).
/// * **Pressure.** The probe is sampled at most once per
///   [`MemoryPolicy::sample_interval`] (250 ms), never per task. With
///   `used = 1 - MemAvailable / MemTotal`:
///   - `used < warn` (0.80): [`PressureLevel::Normal`], all `max_workers`
///     may run;
///   - `warn <= used < shed` (0.90): [`PressureLevel::Warn`], a warning is
///     logged and at most `max(1, max_workers / 2)` tasks run;
///   - `used >= shed`: [`PressureLevel::Shed`], a warning is logged and at
///     most **one** task runs: never zero, so queued work still drains.
///
///   Running tasks are never stopped because of pressure; the lower limit
///   applies to starting new ones. While pressure holds tasks back, the
///   scheduler re-samples on a timer so it resumes when pressure drops even
///   if no task finishes.
#[derive(Clone)]
pub struct MemoryPolicy {
    /// Budget for the sum of running tasks' estimates. `None`: 75% of the
    /// probe's `MemTotal` at start, unlimited if it cannot be read.
    pub budget_bytes: Option<u64>,
    /// Used fraction at which concurrency is halved (default 0.80).
    pub warn: f64,
    /// Used fraction at which one task at a time runs (default 0.90).
    pub shed: f64,
    /// Minimum time between two probe samples (default 250 ms).
    pub sample_interval: Duration,
    /// Where samples come from (default [`ProcMeminfo`]).
    pub probe: Arc<dyn MemoryProbe>,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        Self {
            budget_bytes: None,
            warn: 0.80,
            shed: 0.90,
            sample_interval: Duration::from_millis(250),
            probe: Arc::new(ProcMeminfo),
        }
    }
}

impl fmt::Debug for MemoryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPolicy")
            .field("budget_bytes", &self.budget_bytes)
            .field("warn", &self.warn)
            .field("shed", &self.shed)
            .field("sample_interval", &self.sample_interval)
            .finish_non_exhaustive()
    }
}

impl MemoryPolicy {
    /// The level for a used fraction.
    pub fn level_for(&self, used: f64) -> PressureLevel {
        if used >= self.shed {
            PressureLevel::Shed
        } else if used >= self.warn {
            PressureLevel::Warn
        } else {
            PressureLevel::Normal
        }
    }

    /// The budget to enforce: explicit, else 75% of the host's total.
    pub(crate) fn resolve_budget(&self) -> u64 {
        self.budget_bytes.unwrap_or_else(|| match self.probe.sample() {
            Some(s) if s.total_bytes > 0 => s.total_bytes / 4 * 3,
            _ => u64::MAX,
        })
    }
}

#[derive(Debug, Default)]
struct Sampled {
    at: Option<Instant>,
    level: PressureLevel,
    used: Option<f64>,
}

/// Rate-limited view of host memory pressure.
pub(crate) struct PressureMonitor {
    policy: MemoryPolicy,
    last: Mutex<Sampled>,
}

impl PressureMonitor {
    pub fn new(policy: MemoryPolicy) -> Self {
        Self { policy, last: Mutex::default() }
    }

    pub fn sample_interval(&self) -> Duration {
        self.policy.sample_interval
    }

    /// The current level, re-sampling the probe if the last sample is older
    /// than the sample interval. Logs level changes.
    pub fn level(&self) -> PressureLevel {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let fresh = last.at.is_some_and(|at| now.duration_since(at) < self.policy.sample_interval);
        if fresh {
            return last.level;
        }
        let used = self.policy.probe.sample().map(|s| s.used_fraction());
        let level = used.map_or(PressureLevel::Normal, |u| self.policy.level_for(u));
        if level != last.level {
            let used_pct = used.unwrap_or(0.0) * 100.0;
            match level {
                PressureLevel::Normal => {
                    tracing::info!(used_pct, "memory pressure back to normal: full concurrency")
                }
                PressureLevel::Warn => {
                    tracing::warn!(used_pct, "host memory pressure above warn threshold: halving scheduler concurrency")
                }
                PressureLevel::Shed => {
                    tracing::warn!(used_pct, "host memory pressure above shed threshold: one task at a time")
                }
            }
        }
        *last = Sampled { at: Some(now), level, used };
        level
    }

    /// Last sampled level and used fraction, without sampling.
    pub fn last(&self) -> (PressureLevel, Option<f64>) {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        (last.level, last.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n";
        let s = parse_meminfo(text).unwrap();
        assert_eq!(s.total_bytes, 16_000_000 * 1024);
        assert!((s.used_fraction() - 0.75).abs() < 1e-9);
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn levels_and_effective_workers() {
        let p = MemoryPolicy::default();
        assert_eq!(p.level_for(0.5), PressureLevel::Normal);
        assert_eq!(p.level_for(0.85), PressureLevel::Warn);
        assert_eq!(p.level_for(0.95), PressureLevel::Shed);
        assert_eq!(PressureLevel::Normal.effective_workers(8), 8);
        assert_eq!(PressureLevel::Warn.effective_workers(8), 4);
        assert_eq!(PressureLevel::Warn.effective_workers(1), 1);
        assert_eq!(PressureLevel::Shed.effective_workers(8), 1);
    }

    #[test]
    fn proc_meminfo_reads_on_linux() {
        if cfg!(target_os = "linux") {
            let s = ProcMeminfo.sample().expect("readable /proc/meminfo");
            assert!(s.total_bytes > 0 && s.available_bytes <= s.total_bytes);
        }
    }
}
