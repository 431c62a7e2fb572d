/// What can go wrong talking to the cluster's queue.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis could not be reached or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The cluster-wide bound on queued jobs is reached (an HTTP 429).
    #[error("the queue is full: {queued} jobs queued, at most {max}")]
    QueueFull {
        /// Jobs queued across every band when the job was refused.
        queued: u64,
        /// The configured bound.
        max: u64,
    },
    /// The payload is larger than the queue accepts (an HTTP 413).
    #[error("the job's payload is {bytes} bytes, more than the queue's limit of {max}")]
    PayloadTooLarge {
        /// The payload's size.
        bytes: usize,
        /// The configured limit.
        max: usize,
    },
    /// A job with this id was accepted before.
    #[error("a job {0:?} exists already")]
    Duplicate(String),
    /// Job ids become Redis key names: only a safe alphabet is accepted.
    #[error("invalid job id {0:?}: 1 to 128 of A-Z a-z 0-9 _ -")]
    InvalidId(String),
    /// Redis answered something these scripts never return.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

/// The crate's result type.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
