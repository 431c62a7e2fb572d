//! When to try again: 429 (honouring `Retry-After`) and 5xx are retried with
//! exponential backoff; other 4xx are the caller's (or the key's) problem.

use std::time::Duration;

/// Longest wait honoured from a `Retry-After` header.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Longest computed backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a status code means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    /// 429 or 5xx: try again after a while.
    Retry,
    /// 401/403: the key the host holds was refused; not the caller's fault.
    Unauthorized,
    /// Any other 4xx: the request (prompt, size, model...) was refused.
    Rejected,
    /// 1xx/3xx and anything else unexpected.
    Unexpected,
}

pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        429 | 500..=599 => Class::Retry,
        401 | 403 => Class::Unauthorized,
        400..=499 => Class::Rejected,
        _ => Class::Unexpected,
    }
}

/// `Retry-After` in seconds (HTTP dates are not honoured: backoff applies).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

/// The wait after the `failed`-th failed attempt (1-based): `base * 2^(failed-1)`.
pub fn backoff(failed: u32, base_ms: u64) -> Duration {
    let factor = 1u64 << failed.saturating_sub(1).min(20);
    Duration::from_millis(base_ms.saturating_mul(factor)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(200), Class::Success);
        assert_eq!(classify(429), Class::Retry);
        assert_eq!(classify(503), Class::Retry);
        assert_eq!(classify(401), Class::Unauthorized);
        assert_eq!(classify(400), Class::Rejected);
        assert_eq!(classify(302), Class::Unexpected);
    }

    #[test]
    fn waits() {
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("9999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
        assert_eq!(backoff(1, 100), Duration::from_millis(100));
        assert_eq!(backoff(3, 100), Duration::from_millis(400));
        assert_eq!(backoff(40, 100), MAX_BACKOFF);
    }
}
