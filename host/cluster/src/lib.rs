//! # stagecraft-cluster
//!
//! A reliable job queue on Redis Streams (Redis 7.0 commands only), for
//! running stagecraft on many machines:
//!
//! * [`queue`]: three priority bands read by one consumer group, a record
//!   and an event stream per job, the cluster-wide bound on queued jobs,
//!   dead letters, counters and worker heartbeats;
//! * [`lease`]: a worker's hold on one delivery; its renewals, events and
//!   commit are fenced by the job's epoch, so a worker that lost its lease
//!   can change nothing;
//! * [`worker`]: the loop a worker runs (slots, renewals, reaping, drain);
//! * [`stages`]: the active component version of each stage, and its
//!   change log, so an upload or rollback reaches every process;
//! * [`scripts`]: each state change as one atomic Lua script.
//!
//! What it promises: a job whose [`Queue::enqueue`] returned is finished
//! exactly once, by the holder of its latest lease, or moved to the dead
//! letters after `max_deliveries` leases ran out; with Redis's
//! `appendfsync always` it survives a crash of Redis too. The work itself
//! runs at least once: a worker that stalls past its lease may still be
//! running when the job's next holder starts.

#![warn(missing_docs)]

mod error;
pub mod lease;
pub mod queue;
pub mod scripts;
pub mod stages;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

pub use error::{ClusterError, Result};
pub use lease::{Lease, Outcome, Renewal};
pub use queue::{
    valid_job_id, ArtifactInfo, Band, Cancel, Consumer, DeadLetter, EnqueueOptions, EventReader, JobRecord, Queue,
    QueueConfig, QueueStats, WorkerInfo,
};
pub use stages::StageChanges;
pub use worker::{Finished, Job, WorkerConfig, WorkerCounts};
