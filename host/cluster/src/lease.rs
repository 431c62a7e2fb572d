//! A worker's hold on one delivery. Everything it writes carries the epoch
//! it was claimed with: once the reaper (or a hand-back) bumps the job's
//! epoch, the holder's renewals, events and commit are refused.

use crate::error::Result;
use crate::queue::{Band, Queue, GROUP};
use crate::scripts;

/// How a job ended, as its worker commits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The work was done.
    Succeeded,
    /// The work ran and failed (not retried by the queue: the pipeline
    /// engine already retried what it could).
    Failed,
    /// The work stopped because a cancel was asked for.
    Cancelled,
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease holds for another lease time.
    Renewed,
    /// The lease holds, and a cancel was asked for: stop the work and
    /// commit [`Outcome::Cancelled`].
    CancelRequested,
    /// The lease is lost (reclaimed or handed back): stop, nothing more
    /// will be accepted.
    Lost,
}

impl Outcome {
    /// The state written to the job's record.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One delivery, held by one worker (made by [`Consumer::next`](crate::Consumer::next)).
pub struct Lease {
    pub(crate) queue: Queue,
    pub(crate) consumer: String,
    pub(crate) job: String,
    pub(crate) band: Band,
    /// The stream entry delivered.
    pub(crate) entry: String,
    pub(crate) epoch: u64,
    pub(crate) deliveries: u64,
    pub(crate) payload: String,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("job", &self.job).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Lease {
    /// The job's id.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// What the submitter enqueued.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The job's band.
    pub fn band(&self) -> Band {
        self.band
    }

    /// This delivery's epoch (the fence).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Which delivery this is (1 on the first).
    pub fn delivery(&self) -> u64 {
        self.deliveries
    }

    /// Resets the lease's clock, and says whether the lease still holds
    /// and whether a cancel was asked for.
    pub async fn renew(&self) -> Result<Renewal> {
        let k = &self.queue.shared.keys;
        let renewed: i64 = scripts::RENEW
            .key(k.job(&self.job))
            .key(k.band(self.band))
            .arg(self.epoch)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(&self.entry)
            .invoke_async(&mut self.queue.con.clone())
            .await?;
        Ok(match renewed {
            1 => Renewal::Renewed,
            2 => Renewal::CancelRequested,
            _ => Renewal::Lost,
        })
    }

    /// Appends an event (JSON) to the job's stream. `false`: the lease is lost.
    pub async fn event(&self, json: &str) -> Result<bool> {
        let k = &self.queue.shared.keys;
        let sent: i64 = scripts::EVENT
            .key(k.job(&self.job))
            .key(k.events(&self.job))
            .arg(self.epoch)
            .arg(json)
            .arg(self.queue.shared.config.events_kept)
            .invoke_async(&mut self.queue.con.clone())
            .await?;
        Ok(sent == 1)
    }

    /// Writes the job's final state and result and acks the delivery, in
    /// one step. `false`: refused, the lease was lost and the job is (or
    /// will be) someone else's; this worker's result is dropped.
    pub async fn commit(&self, outcome: Outcome, result: &str, error: Option<&str>) -> Result<bool> {
        let k = &self.queue.shared.keys;
        let finished = serde_json::json!({
            "event": "job_finished",
            "job": self.job,
            "state": outcome.as_str(),
            "error": error,
            "epoch": self.epoch,
        })
        .to_string();
        let committed: i64 = scripts::COMMIT
            .key(k.job(&self.job))
            .key(k.band(self.band))
            .key(k.stats())
            .key(k.events(&self.job))
            .arg(self.epoch)
            .arg(GROUP)
            .arg(&self.entry)
            .arg(outcome.as_str())
            .arg(result)
            .arg(finished)
            .arg(self.queue.shared.config.events_kept)
            .arg(error.unwrap_or_default())
            .arg(self.queue.shared.config.retention.as_secs().max(1))
            .invoke_async(&mut self.queue.con.clone())
            .await?;
        Ok(committed == 1)
    }

    /// Gives the job back to the queue (a draining worker that will not
    /// finish it): it goes to the back of its band for another worker.
    pub async fn hand_back(&self) -> Result<bool> {
        let k = &self.queue.shared.keys;
        let done: i64 = scripts::HAND_BACK
            .key(k.job(&self.job))
            .key(k.band(self.band))
            .key(k.stats())
            .key(k.events(&self.job))
            .arg(self.epoch)
            .arg(GROUP)
            .arg(&self.entry)
            .arg(self.queue.shared.config.events_kept)
            .invoke_async(&mut self.queue.con.clone())
            .await?;
        Ok(done == 1)
    }
}
