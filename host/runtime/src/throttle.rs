//! The log and progress quotas of one invocation: log lines are cut to a
//! size, rate-limited (a token bucket) and capped in number, the excess
//! dropped and counted; progress reports are coalesced to a few per second,
//! the latest winning, and the last one always delivered when the call ends.

use crate::config::Quotas;
use crate::output::truncate_message;
use std::time::{Duration, Instant};

/// Decides which of a stage's log lines and progress reports go on.
pub struct EventGate {
    quotas: Quotas,
    log_sent: u32,
    log_dropped: u64,
    /// Log lines that may go now (refilled at `log_lines_per_second`).
    tokens: f64,
    refilled: Instant,
    progress_sent: Option<Instant>,
    /// The latest report held back, sent when the interval has passed or
    /// the call ends.
    progress_pending: Option<(f32, String)>,
    progress_dropped: u64,
}

/// What was held back when the call ended.
pub struct GateEnd {
    /// The latest progress report not sent yet.
    pub progress: Option<(f32, String)>,
    /// Log lines dropped, and the line that says so (if any were).
    pub log_dropped: u64,
    pub summary: Option<String>,
}

impl EventGate {
    pub fn new(quotas: Quotas) -> Self {
        Self {
            quotas,
            log_sent: 0,
            log_dropped: 0,
            tokens: f64::from(quotas.log_lines_per_second.max(1)),
            refilled: Instant::now(),
            progress_sent: None,
            progress_pending: None,
            progress_dropped: 0,
        }
    }

    /// The line to log, cut to size, or `None` when it is dropped.
    pub fn log(&mut self, message: &str) -> Option<String> {
        let now = Instant::now();
        let rate = f64::from(self.quotas.log_lines_per_second.max(1));
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        if self.log_sent >= self.quotas.log_lines || self.tokens < 1.0 {
            self.log_dropped += 1;
            return None;
        }
        self.tokens -= 1.0;
        self.log_sent += 1;
        Some(truncate_message(message, self.quotas.log_line_bytes))
    }

    /// The report to pass on now, or `None` when it is held back (it then
    /// replaces any report held back before it).
    pub fn progress(&mut self, fraction: f32, message: &str) -> Option<(f32, String)> {
        let now = Instant::now();
        let interval = Duration::from_secs(1) / self.quotas.progress_per_second.max(1);
        let message = truncate_message(message, self.quotas.log_line_bytes);
        match self.progress_sent {
            Some(at) if now.duration_since(at) < interval => {
                if self.progress_pending.replace((fraction, message)).is_some() {
                    self.progress_dropped += 1;
                }
                None
            }
            _ => {
                if self.progress_pending.take().is_some() {
                    self.progress_dropped += 1;
                }
                self.progress_sent = Some(now);
                Some((fraction, message))
            }
        }
    }

    /// Progress reports coalesced away so far.
    pub fn progress_dropped(&self) -> u64 {
        self.progress_dropped
    }

    /// Ends the call: what is still held back, and the line about what was dropped.
    pub fn finish(&mut self) -> GateEnd {
        let summary = (self.log_dropped > 0).then(|| {
            format!(
                "{} log lines dropped: a stage may log {} lines per call, {} per second",
                self.log_dropped, self.quotas.log_lines, self.quotas.log_lines_per_second
            )
        });
        GateEnd { progress: self.progress_pending.take(), log_dropped: self.log_dropped, summary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_storm_is_cut_and_counted() {
        let mut gate = EventGate::new(Quotas { log_lines: 1000, log_lines_per_second: 50, ..Quotas::default() });
        let sent = (0..10_000).filter_map(|i| gate.log(&format!("line {i}"))).count();
        // A burst gets the bucket (50) plus what refills while it runs.
        assert!((50..1000).contains(&sent), "{sent}");
        let end = gate.finish();
        assert_eq!(end.log_dropped + sent as u64, 10_000);
        assert!(end.summary.unwrap().starts_with(&format!("{} log lines dropped", end.log_dropped)));
    }

    #[test]
    fn long_lines_are_cut() {
        let mut gate = EventGate::new(Quotas { log_line_bytes: 10, ..Quotas::default() });
        assert_eq!(gate.log(&"z".repeat(4096)).unwrap(), format!("{} [... cut: 4096 bytes in all]", "z".repeat(10)));
        assert!(gate.finish().summary.is_none());
    }

    #[test]
    fn progress_is_coalesced_and_the_last_report_arrives() {
        let mut gate = EventGate::new(Quotas { progress_per_second: 1, ..Quotas::default() });
        let sent: Vec<_> = (0..100_000).filter_map(|i| gate.progress(i as f32 / 100_000.0, &i.to_string())).collect();
        assert!(!sent.is_empty() && sent.len() < 100, "{}", sent.len());
        assert_eq!(sent[0].1, "0", "the first report goes at once");
        let end = gate.finish();
        assert_eq!(end.progress.unwrap().1, "99999", "the latest report wins");
        assert_eq!(gate.progress_dropped() + sent.len() as u64 + 1, 100_000);
    }
}
