//! The queue: three priority bands of Redis Streams read by one consumer
//! group, a hash per job, an event stream per job, a dead-letter stream and
//! counters. Every change of a job's state is one script (see
//! [`scripts`](crate::scripts)); this file turns them into typed calls.

use crate::error::{ClusterError, Result};
use crate::lease::Lease;
use crate::scripts;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Value};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A job's priority: higher bands are always read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// Read before anything else.
    High,
    /// The default.
    Normal,
    /// Read only when the other bands are empty.
    Low,
}

impl Band {
    /// Every band, highest first.
    pub const ALL: [Band; 3] = [Band::High, Band::Normal, Band::Low];

    fn index(self) -> usize {
        match self {
            Band::High => 0,
            Band::Normal => 1,
            Band::Low => 2,
        }
    }

    fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    /// The band's name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::High => "high",
            Band::Normal => "normal",
            Band::Low => "low",
        }
    }
}

/// How the queue behaves; every process of a cluster must agree on it.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Prefix of every key (`{prefix}:queue:0`, `{prefix}:job:{id}`, …),
    /// so that several deployments can share one Redis.
    pub prefix: String,
    /// A delivery not renewed for this long is reclaimed by the reaper.
    pub lease: Duration,
    /// Deliveries whose lease ran out before a job goes to the dead letters.
    pub max_deliveries: u32,
    /// Most jobs queued (accepted, not yet delivered) across the cluster.
    pub max_queued: u64,
    /// How long one blocking read waits before it looks again.
    pub block: Duration,
    /// Events kept per job (older ones are trimmed).
    pub events_kept: usize,
    /// A worker not seen for this long is listed as gone.
    pub worker_timeout: Duration,
    /// How long a finished job's record and events stay in Redis.
    pub retention: Duration,
    /// Largest payload accepted by [`Queue::enqueue`].
    pub max_payload_bytes: usize,
    /// Jobs listed by [`Queue::recent`] (the index is trimmed to this).
    pub recent_kept: usize,
    /// How long a result-cache manifest stays in Redis after it was last
    /// written or read ([`Queue::keep_result`]).
    pub results_kept: Duration,
}

/// How one job is accepted ([`Queue::enqueue_with`]).
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Left out of [`Queue::recent`] (and so of `GET /v1/jobs`): work that
    /// is not a job to its caller, such as a synchronous invocation run by
    /// a worker.
    pub unlisted: bool,
    /// How long the finished job stays in Redis, instead of the queue's
    /// retention.
    pub keep: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: "stagecraft".into(),
            lease: Duration::from_secs(10),
            max_deliveries: 3,
            max_queued: 10_000,
            block: Duration::from_secs(2),
            events_kept: 10_000,
            worker_timeout: Duration::from_secs(15),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_payload_bytes: 4 << 20,
            recent_kept: 10_000,
            results_kept: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The consumer group every worker reads with.
pub(crate) const GROUP: &str = "workers";

pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn band(&self, band: Band) -> String {
        format!("{}:queue:{}", self.prefix, band.index())
    }
    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    pub(crate) fn events(&self, id: &str) -> String {
        format!("{}:events:{id}", self.prefix)
    }
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }
    pub(crate) fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }
    fn recent(&self) -> String {
        format!("{}:recent", self.prefix)
    }
    fn artifact(&self, digest: &str) -> String {
        format!("{}:artifact:{digest}", self.prefix)
    }
    fn result(&self, key: &str) -> String {
        format!("{}:result:{key}", self.prefix)
    }
    fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }
}

pub(crate) struct Shared {
    pub(crate) config: QueueConfig,
    pub(crate) keys: Keys,
    client: Client,
}

/// A handle on the cluster's queue; cheap to clone. Commands go through a
/// [`ConnectionManager`] (reconnects on its own); blocking reads get their
/// own connection per [`Consumer`].
#[derive(Clone)]
pub struct Queue {
    pub(crate) con: ConnectionManager,
    pub(crate) shared: Arc<Shared>,
}

/// A job as recorded in Redis.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or `dead`.
    pub state: String,
    /// The job's band.
    pub band: Band,
    /// What the submitter enqueued.
    pub payload: String,
    /// Claims, reclaims and hand-backs so far (the fence).
    pub epoch: u64,
    /// Times the job was handed to a worker.
    pub deliveries: u64,
    /// Times a final state was written (1 once it ended).
    pub commits: u64,
    /// The worker that holds or held it last.
    pub worker: Option<String>,
    /// What the worker committed.
    pub result: Option<String>,
    /// Why it failed or was cancelled, as committed.
    pub error: Option<String>,
    /// Why it went to the dead letters.
    pub reason: Option<String>,
    /// Whether a cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// Redis's clock (ms) when the job was accepted, first claimed this
    /// delivery, and finished.
    pub enqueued_ms: Option<u64>,
    /// See `enqueued_ms`.
    pub started_ms: Option<u64>,
    /// See `enqueued_ms`.
    pub finished_ms: Option<u64>,
}

impl JobRecord {
    /// Whether the job has reached a state it never leaves.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled" | "dead")
    }
}

/// An artifact's name and media type, by its digest in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ArtifactInfo {
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Its file name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
}

fn is_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// No such job (or it expired).
    Unknown,
    /// It was queued and is now `cancelled`.
    Cancelled,
    /// It is running; its holder stops it at its next renewal.
    Requested,
    /// It had already ended, in this state.
    Ended(String),
}

/// A job that went to the dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The job's id.
    pub job: String,
    /// Why.
    pub reason: String,
    /// Deliveries it had.
    pub deliveries: u64,
    /// The worker that held it last.
    pub worker: String,
}

/// A worker's last heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Its consumer name.
    pub name: String,
    /// Milliseconds since its last heartbeat.
    pub seen_ms_ago: u64,
    /// Leases it held then.
    pub leases: u64,
    /// Whether it is draining (stops taking work).
    pub draining: bool,
    /// Whether its last heartbeat is within the worker timeout.
    pub alive: bool,
}

/// The queue at a glance, for metrics and `GET /v1/status/queue`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    /// Jobs accepted and not yet delivered, per band.
    pub queued: HashMap<&'static str, u64>,
    /// Deliveries held by workers now.
    pub leased: u64,
    /// Final states written.
    pub commits: u64,
    /// Commits refused for a stale epoch.
    pub refused_commits: u64,
    /// Deliveries whose lease ran out, put back in the queue.
    pub reclaims: u64,
    /// Jobs moved to the dead letters.
    pub dead_letters: u64,
    /// Jobs handed back by draining workers.
    pub handed_back: u64,
    /// Workers that sent a heartbeat lately.
    pub workers: Vec<WorkerInfo>,
}

/// Job ids become key names: only a safe alphabet.
pub fn valid_job_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn protocol(what: impl Into<String>) -> ClusterError {
    ClusterError::Protocol(what.into())
}

impl Queue {
    /// Connects to Redis at `url` and makes sure the streams and the
    /// consumer group exist.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self> {
        let client = Client::open(url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(2));
        let con = ConnectionManager::new_with_config(client.clone(), manager).await?;
        let keys = Keys { prefix: config.prefix.clone() };
        let queue = Self { con, shared: Arc::new(Shared { config, keys, client }) };
        for band in Band::ALL {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(queue.shared.keys.band(band))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut queue.con.clone())
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(queue)
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Accepts a job: its record and a stream entry in its band, or
    /// [`ClusterError::QueueFull`] when the cluster already has
    /// `max_queued` jobs waiting, or [`ClusterError::PayloadTooLarge`].
    /// Returns the jobs queued now. Once this returns, the job is in Redis
    /// (with `appendfsync always`, on disk).
    pub async fn enqueue(&self, id: &str, band: Band, payload: &str) -> Result<u64> {
        self.enqueue_with(id, band, payload, &EnqueueOptions::default()).await
    }

    /// [`Queue::enqueue`] with per-job options.
    pub async fn enqueue_with(&self, id: &str, band: Band, payload: &str, options: &EnqueueOptions) -> Result<u64> {
        if !valid_job_id(id) {
            return Err(ClusterError::InvalidId(id.into()));
        }
        let k = &self.shared.keys;
        let c = &self.shared.config;
        if payload.len() > c.max_payload_bytes {
            return Err(ClusterError::PayloadTooLarge { bytes: payload.len(), max: c.max_payload_bytes });
        }
        let queued_event = serde_json::json!({ "event": "job_queued", "job": id, "band": band.as_str() }).to_string();
        let (code, queued): (i64, u64) = scripts::ENQUEUE
            .key(k.band(Band::High))
            .key(k.band(Band::Normal))
            .key(k.band(Band::Low))
            .key(k.job(id))
            .key(k.events(id))
            .key(k.recent())
            .arg(c.max_queued)
            .arg(band.index() + 1)
            .arg(id)
            .arg(payload)
            .arg(GROUP)
            .arg(c.events_kept)
            .arg(queued_event)
            .arg(c.recent_kept.max(1))
            .arg(if options.unlisted { "0" } else { "1" })
            .arg(options.keep.map(|k| k.as_secs().max(1).to_string()).unwrap_or_default())
            .invoke_async(&mut self.con.clone())
            .await?;
        match code {
            1 => Ok(queued),
            0 => Err(ClusterError::QueueFull { queued, max: c.max_queued }),
            _ => Err(ClusterError::Duplicate(id.into())),
        }
    }

    /// A job's record, if Redis has it.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        if !valid_job_id(id) {
            return Ok(None);
        }
        let fields: HashMap<String, String> = self.con.clone().hgetall(self.shared.keys.job(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        let text = |k: &str| fields.get(k).cloned();
        let band = num("band").and_then(|b| Band::from_index(b.saturating_sub(1) as usize)).unwrap_or(Band::Normal);
        Ok(Some(JobRecord {
            id: id.into(),
            state: text("state").unwrap_or_default(),
            band,
            payload: text("payload").unwrap_or_default(),
            epoch: num("epoch").unwrap_or(0),
            deliveries: num("deliveries").unwrap_or(0),
            commits: num("commits").unwrap_or(0),
            worker: text("worker"),
            result: text("result"),
            error: text("error"),
            reason: text("reason"),
            cancel_requested: num("cancel") == Some(1),
            enqueued_ms: num("enqueued_ms"),
            started_ms: num("started_ms"),
            finished_ms: num("finished_ms"),
        }))
    }

    /// Asks a job to stop: a queued job ends `cancelled` at once; a running
    /// one is flagged, and its holder cancels the work at its next renewal
    /// (within a third of the lease) and commits `cancelled`.
    pub async fn cancel(&self, id: &str) -> Result<Cancel> {
        if !valid_job_id(id) {
            return Ok(Cancel::Unknown);
        }
        let k = &self.shared.keys;
        let c = &self.shared.config;
        let finished = serde_json::json!({
            "event": "job_finished", "job": id, "state": "cancelled", "error": "cancelled before it started",
        })
        .to_string();
        let (code, state): (i64, String) = scripts::CANCEL
            .key(k.job(id))
            .key(k.events(id))
            .key(k.stats())
            .arg(GROUP)
            .arg(c.events_kept)
            .arg(c.retention.as_secs().max(1))
            .arg(&c.prefix)
            .arg(finished)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(match code {
            0 => Cancel::Unknown,
            1 => Cancel::Cancelled,
            2 => Cancel::Requested,
            _ => Cancel::Ended(state),
        })
    }

    /// Remembers artifacts' names and media types by digest (their bytes
    /// are in the blob store), for as long as finished jobs are kept, so
    /// that any API process serves them with the right type and name.
    pub async fn record_artifacts(&self, artifacts: &[ArtifactInfo]) -> Result<()> {
        if artifacts.is_empty() {
            return Ok(());
        }
        let ttl = self.shared.config.retention.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        for a in artifacts.iter().filter(|a| is_digest(&a.sha256)) {
            let key = self.shared.keys.artifact(&a.sha256);
            pipe.hset_multiple(&key, &[("name", &a.name), ("media_type", &a.media_type)]).ignore();
            pipe.expire(&key, ttl).ignore();
        }
        pipe.query_async::<()>(&mut self.con.clone()).await?;
        Ok(())
    }

    /// An artifact's name and media type, if [`Queue::record_artifacts`] kept them.
    pub async fn artifact(&self, digest: &str) -> Result<Option<ArtifactInfo>> {
        if !is_digest(digest) {
            return Ok(None);
        }
        let fields: HashMap<String, String> = self.con.clone().hgetall(self.shared.keys.artifact(digest)).await?;
        Ok(match (fields.get("name"), fields.get("media_type")) {
            (Some(name), Some(media_type)) => {
                Some(ArtifactInfo { sha256: digest.into(), name: name.clone(), media_type: media_type.clone() })
            }
            _ => None,
        })
    }

    /// Keeps a result-cache manifest (JSON naming the blobs of a stored
    /// result) under `key`, for [`QueueConfig::results_kept`], so that
    /// every worker reuses a result any worker computed. Keys are the
    /// result cache's hex digests.
    pub async fn keep_result(&self, key: &str, manifest: &str) -> Result<()> {
        if !is_digest(key) {
            return Err(protocol(format!("'{key}' is not a result key")));
        }
        let ttl = self.shared.config.results_kept.as_secs().max(1);
        let () = self.con.clone().set_ex(self.shared.keys.result(key), manifest, ttl).await?;
        Ok(())
    }

    /// The manifest kept under `key`, if any; reading it keeps it for
    /// another [`QueueConfig::results_kept`] (results in use stay).
    pub async fn kept_result(&self, key: &str) -> Result<Option<String>> {
        if !is_digest(key) {
            return Ok(None);
        }
        let ttl = self.shared.config.results_kept.as_secs().max(1);
        let manifest: Option<String> = redis::cmd("GETEX")
            .arg(self.shared.keys.result(key))
            .arg("EX")
            .arg(ttl)
            .query_async(&mut self.con.clone())
            .await?;
        Ok(manifest)
    }

    /// The newest `limit` jobs still in Redis, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let ids: Vec<String> =
            self.con.clone().zrevrange(self.shared.keys.recent(), 0, limit.max(1) as isize - 1).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            // Expired records are skipped; the index is trimmed on enqueue.
            if let Some(job) = self.job(&id).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// A job's events after stream position `after` (`"0"`: from the
    /// start), as `(position, JSON)`, without waiting.
    pub async fn events(&self, id: &str, after: &str) -> Result<Vec<(String, String)>> {
        read_events(&mut self.con.clone(), &self.shared.keys.events(id), after, None).await
    }

    /// A reader that waits for a job's next events on a connection of its
    /// own (one per watcher, so that waiting never holds up other commands).
    pub async fn event_reader(&self, wait: Duration) -> Result<EventReader> {
        Ok(EventReader { con: self.blocking_connection(wait).await?, queue: self.clone(), wait })
    }

    /// A connection for one blocking read: its response timeout is the
    /// read's own wait plus a margin, so a dead server cannot hang it.
    pub(crate) async fn blocking_connection(&self, wait: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(wait + Duration::from_secs(5)));
        Ok(self.shared.client.get_multiplexed_async_connection_with_config(&config).await?)
    }

    /// A reader of the queue under consumer name `name` (unique per worker).
    pub async fn consumer(&self, name: &str) -> Result<Consumer> {
        let con = self.blocking_connection(self.shared.config.block).await?;
        Ok(Consumer { queue: self.clone(), name: name.into(), con, buffered: VecDeque::new() })
    }

    /// Reclaims every delivery whose lease ran out (see
    /// [`scripts::REAP`]); any process may run it, at any time, as often as
    /// it likes. Returns `(reclaimed, dead-lettered)`.
    pub async fn reap(&self, reaper: &str) -> Result<(u64, u64)> {
        let k = &self.shared.keys;
        let c = &self.shared.config;
        let (mut reclaimed, mut dead) = (0, 0);
        for band in Band::ALL {
            let mut cursor = "0-0".to_owned();
            loop {
                let (r, d, next): (u64, u64, String) = scripts::REAP
                    .key(k.band(band))
                    .key(k.dead())
                    .key(k.stats())
                    .arg(GROUP)
                    .arg(reaper)
                    .arg(c.lease.as_millis() as u64)
                    .arg(c.max_deliveries)
                    .arg(&c.prefix)
                    .arg(100)
                    .arg(&cursor)
                    .arg(c.events_kept)
                    .arg(c.retention.as_secs().max(1))
                    .invoke_async(&mut self.con.clone())
                    .await?;
                reclaimed += r;
                dead += d;
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok((reclaimed, dead))
    }

    /// Records that worker `name` is alive, holding `leases`.
    pub async fn heartbeat(&self, name: &str, leases: u64, draining: bool) -> Result<()> {
        let k = &self.shared.keys;
        let now = self.now_ms().await?;
        let ttl = (self.shared.config.worker_timeout * 4).as_secs().max(1);
        redis::pipe()
            .atomic()
            .zadd(k.workers(), name, now)
            .hset_multiple(
                k.worker(name),
                &[("leases", leases.to_string()), ("draining", u8::from(draining).to_string())],
            )
            .expire(k.worker(name), ttl as i64)
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(())
    }

    /// Takes worker `name` off the list (it stopped on purpose).
    pub async fn leave(&self, name: &str) -> Result<()> {
        let k = &self.shared.keys;
        redis::pipe().zrem(k.workers(), name).del(k.worker(name)).query_async::<()>(&mut self.con.clone()).await?;
        Ok(())
    }

    async fn now_ms(&self) -> Result<u64> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.con.clone()).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Depth, leases, counters and workers.
    pub async fn stats(&self) -> Result<QueueStats> {
        let k = &self.shared.keys;
        let mut con = self.con.clone();
        let mut queued = HashMap::new();
        let mut leased = 0;
        for band in Band::ALL {
            let len: u64 = con.xlen(k.band(band)).await?;
            let pending: Value = redis::cmd("XPENDING").arg(k.band(band)).arg(GROUP).query_async(&mut con).await?;
            let pending = match pending {
                Value::Array(v) => v.first().and_then(|n| redis::from_redis_value_ref::<u64>(n).ok()).unwrap_or(0),
                _ => 0,
            };
            leased += pending;
            queued.insert(band.as_str(), len.saturating_sub(pending));
        }
        let counters: HashMap<String, u64> = con.hgetall(k.stats()).await?;
        let get = |name: &str| counters.get(name).copied().unwrap_or(0);
        let now = self.now_ms().await?;
        let seen: Vec<(String, u64)> = con.zrange_withscores(k.workers(), 0, -1).await?;
        let timeout = self.shared.config.worker_timeout.as_millis() as u64;
        let mut workers = Vec::new();
        for (name, at) in seen {
            let info: HashMap<String, u64> = con.hgetall(k.worker(&name)).await?;
            let ago = now.saturating_sub(at);
            if ago > timeout * 4 {
                // Long gone: forget it.
                let _: () = con.zrem(k.workers(), &name).await?;
                continue;
            }
            workers.push(WorkerInfo {
                name,
                seen_ms_ago: ago,
                leases: info.get("leases").copied().unwrap_or(0),
                draining: info.get("draining").copied().unwrap_or(0) == 1,
                alive: ago <= timeout,
            });
        }
        Ok(QueueStats {
            queued,
            leased,
            commits: get("commits"),
            refused_commits: get("refused"),
            reclaims: get("reclaims"),
            dead_letters: get("dead"),
            handed_back: get("handed_back"),
            workers,
        })
    }

    /// The newest `count` dead letters, newest first.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>> {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(self.shared.keys.dead())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con.clone())
            .await?;
        Ok(parse_entries(reply)?
            .into_iter()
            .map(|(_, f)| DeadLetter {
                job: f.get("job").cloned().unwrap_or_default(),
                reason: f.get("reason").cloned().unwrap_or_default(),
                deliveries: f.get("deliveries").and_then(|d| d.parse().ok()).unwrap_or(0),
                worker: f.get("worker").cloned().unwrap_or_default(),
            })
            .collect())
    }
}

/// Waits for a job's events (see [`Queue::event_reader`]).
pub struct EventReader {
    con: MultiplexedConnection,
    queue: Queue,
    wait: Duration,
}

impl EventReader {
    /// The job's events after `after`, waiting up to the reader's wait for
    /// the first one; empty when none came.
    pub async fn next(&mut self, id: &str, after: &str) -> Result<Vec<(String, String)>> {
        let key = self.queue.shared.keys.events(id);
        read_events(&mut self.con, &key, after, Some(self.wait)).await
    }
}

async fn read_events(
    con: &mut impl redis::aio::ConnectionLike,
    key: &str,
    after: &str,
    wait: Option<Duration>,
) -> Result<Vec<(String, String)>> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT").arg(512);
    if let Some(wait) = wait {
        cmd.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
    }
    let reply: Value = cmd.arg("STREAMS").arg(key).arg(after).query_async(con).await?;
    let mut out = Vec::new();
    for (_, entries) in parse_read(reply)? {
        for (position, fields) in entries {
            if let Some(event) = fields.get("event") {
                out.push((position, event.clone()));
            }
        }
    }
    Ok(out)
}

/// One worker's reader of the queue. Bands are read highest first; a
/// blocking read over all three may return an entry from more than one,
/// and the extra ones wait here (claimed only when their turn comes).
pub struct Consumer {
    queue: Queue,
    name: String,
    con: MultiplexedConnection,
    buffered: VecDeque<(Band, String, String)>,
}

impl Consumer {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next job for this worker, or `None` when nothing came within the
    /// configured block time (call again).
    pub async fn next(&mut self) -> Result<Option<Lease>> {
        loop {
            if self.buffered.is_empty() {
                self.read().await?;
            }
            let Some((band, entry, job)) = self.buffered.pop_front() else { return Ok(None) };
            if let Some(lease) = self.claim(band, entry, job).await? {
                return Ok(Some(lease));
            }
        }
    }

    /// Fills the buffer: the first band that has an entry, without waiting;
    /// failing that, one blocking read over all bands.
    async fn read(&mut self) -> Result<()> {
        let shared = self.queue.shared.clone();
        let k = &shared.keys;
        for band in Band::ALL {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.name)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(k.band(band))
                .arg(">")
                .query_async(&mut self.con)
                .await?;
            self.push(reply)?;
            if !self.buffered.is_empty() {
                return Ok(());
            }
        }
        let block = self.queue.shared.config.block.as_millis() as u64;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.name).arg("COUNT").arg(1).arg("BLOCK").arg(block).arg("STREAMS");
        for band in Band::ALL {
            cmd.arg(k.band(band));
        }
        cmd.arg(">").arg(">").arg(">");
        let reply: Value = cmd.query_async(&mut self.con).await?;
        self.push(reply)
    }

    fn push(&mut self, reply: Value) -> Result<()> {
        let k = &self.queue.shared.keys;
        let mut got = Vec::new();
        for (stream, entries) in parse_read(reply)? {
            let band = Band::ALL.into_iter().find(|b| k.band(*b) == stream).ok_or_else(|| protocol(stream.clone()))?;
            for (entry, fields) in entries {
                let job = fields.get("job").cloned().unwrap_or_default();
                got.push((band, entry, job));
            }
        }
        got.sort_by_key(|(band, ..)| band.index());
        self.buffered.extend(got);
        Ok(())
    }

    async fn claim(&mut self, band: Band, entry: String, job: String) -> Result<Option<Lease>> {
        let k = &self.queue.shared.keys;
        let stale = !valid_job_id(&job);
        if !stale {
            let reply: Vec<Value> = scripts::CLAIM
                .key(k.job(&job))
                .key(k.events(&job))
                .key(k.stats())
                .arg(&self.name)
                .arg(&entry)
                .arg(self.queue.shared.config.events_kept)
                .arg(self.queue.shared.config.retention.as_secs().max(1))
                .invoke_async(&mut self.queue.con.clone())
                .await?;
            if let [epoch, deliveries, payload] = reply.as_slice() {
                let num = |v: &Value| redis::from_redis_value_ref::<u64>(v).map_err(|e| protocol(e.to_string()));
                return Ok(Some(Lease {
                    queue: self.queue.clone(),
                    consumer: self.name.clone(),
                    job,
                    band,
                    entry,
                    epoch: num(epoch)?,
                    deliveries: num(deliveries)?,
                    payload: redis::from_redis_value_ref::<String>(payload).map_err(|e| protocol(e.to_string()))?,
                }));
            }
        }
        // The entry no longer stands for a job that can run.
        let _: i64 =
            scripts::DISCARD.key(k.band(band)).arg(GROUP).arg(&entry).invoke_async(&mut self.queue.con.clone()).await?;
        Ok(None)
    }
}

type Entry = (String, HashMap<String, String>);

/// `XREAD`/`XREADGROUP` replies: `[[stream, [[id, [field, value, …]], …]], …]`
/// (RESP2: the connections never ask for RESP3), or nil when nothing came.
pub(crate) fn parse_read(reply: Value) -> Result<Vec<(String, Vec<Entry>)>> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        other => return Err(protocol(format!("{other:?}"))),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut pair) = stream else { return Err(protocol("a stream reply that is not a pair")) };
        if pair.len() != 2 {
            return Err(protocol("a stream reply that is not a pair"));
        }
        let entries = parse_entries(pair.pop().unwrap_or(Value::Nil))?;
        let name: String =
            redis::from_redis_value(pair.pop().unwrap_or(Value::Nil)).map_err(|e| protocol(e.to_string()))?;
        out.push((name, entries));
    }
    Ok(out)
}

/// `[[id, [field, value, …]], …]`; entries deleted since (nil fields) are skipped.
fn parse_entries(reply: Value) -> Result<Vec<Entry>> {
    let Value::Array(items) = reply else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for item in items {
        let Value::Array(mut pair) = item else { continue };
        if pair.len() != 2 {
            continue;
        }
        let fields = pair.pop().unwrap_or(Value::Nil);
        let id: String =
            redis::from_redis_value(pair.pop().unwrap_or(Value::Nil)).map_err(|e| protocol(e.to_string()))?;
        let Value::Array(flat) = fields else { continue };
        let mut map = HashMap::new();
        for kv in flat.chunks(2) {
            if let [k, v] = kv {
                let k: String = redis::from_redis_value_ref(k).map_err(|e| protocol(e.to_string()))?;
                let v: String = redis::from_redis_value_ref(v).map_err(|e| protocol(e.to_string()))?;
                map.insert(k, v);
            }
        }
        out.push((id, map));
    }
    Ok(out)
}
