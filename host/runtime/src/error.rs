//! Why an invocation failed, classified so that callers know what to do:
//! the caller's fault, worth retrying, or the stage's (or plugin's) fault.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("unknown stage '{0}'")]
    UnknownStage(String),
    /// The caller's fault (the stage said so): never retried.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Transient: retry with backoff.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The stage reported a failure of its own.
    #[error("stage failed: {0}")]
    Failed(String),
    /// The deadline passed; the instance was interrupted.
    #[error("deadline exceeded: the stage ran longer than {}", humantime(*.0))]
    Timeout(Duration),
    /// The instance tried to grow its memory past the limit.
    #[error("memory limit exceeded: the stage tried to grow its memory to {requested} bytes (limit {limit} bytes)")]
    MemoryLimit { requested: u64, limit: u64 },
    /// The plugin trapped (an out-of-bounds access, `unreachable`...).
    #[error("the stage crashed: {0}")]
    Trap(String),
    /// The plugin panicked; the message is the panic's own, read from the
    /// stage's stderr.
    #[error("the stage panicked: {0}")]
    Panicked(String),
    /// The stage went past one of its [`Quotas`](crate::config::Quotas):
    /// its fault, never retried.
    #[error("{0}")]
    Quota(crate::quota::QuotaExceeded),
    /// Something went wrong in the host around the call.
    #[error("host error: {0:#}")]
    Host(anyhow::Error),
}

impl InvokeError {
    /// Whether the scheduler should try again (with backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }

    /// Whether the caller sent something wrong (maps to HTTP 4xx).
    pub fn is_caller_error(&self) -> bool {
        matches!(self, Self::UnknownStage(_) | Self::InvalidInput(_))
    }

    /// A short stable code for APIs and reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownStage(_) => "unknown_stage",
            Self::InvalidInput(_) => "invalid_input",
            Self::Unavailable(_) => "unavailable",
            Self::Failed(_) => "failed",
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::Trap(_) => "trap",
            Self::Panicked(_) => "panic",
            Self::Quota(_) => "quota_exceeded",
            Self::Host(_) => "host_error",
        }
    }
}

fn humantime(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
