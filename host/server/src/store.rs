//! The durable job store: one SQLite file (`<home>/jobs.sqlite3`, WAL mode),
//! which also keeps each artifact's name and media type by digest.
//! A job is written (with its input blobs already in the blob store) before
//! the caller gets its `202`; state moves `queued → running → succeeded |
//! failed | cancelled`, and a job in a final state is never claimed again,
//! so a restart resumes what was left `queued` or `running` and nothing
//! runs twice.

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// An input file of a job, kept in the blob store by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    pub name: String,
    pub media_type: String,
    pub digest: String,
}

/// What is known about a blob besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactMeta {
    pub digest: String,
    pub name: String,
    pub media_type: String,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    /// The pipeline source (YAML or JSON) and the name it was given.
    #[serde(skip)]
    pub pipeline: String,
    pub file: String,
    pub input_text: Option<String>,
    pub inputs: Vec<InputRef>,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    /// How many times the job was started (1 unless a restart resumed it).
    pub runs: u32,
    /// The run report with artifact links, once finished.
    pub report: Option<Value>,
    pub error: Option<String>,
    /// Events of the finished run, for late subscribers.
    #[serde(skip)]
    pub events: Option<Vec<Value>>,
    /// Set when a cancel was asked for (survives a restart).
    pub cancel_requested: bool,
}

/// A job as listed by `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub state: JobState,
    pub file: String,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub error: Option<String>,
}

/// The job table behind a mutex: statements are short, and SQLite
/// serialises writers anyway.
pub struct JobStore {
    conn: Mutex<Connection>,
}

pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

const COLUMNS: &str = "id, state, pipeline, file, input_text, inputs, created_at, started_at, finished_at, runs, report, error, events, cancel_requested";

impl JobStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening the job store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL").context("WAL mode")?;
        conn.pragma_update(None, "synchronous", "NORMAL").context("synchronous")?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).context("busy timeout")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                pipeline TEXT NOT NULL,
                file TEXT NOT NULL,
                input_text TEXT,
                inputs TEXT NOT NULL,
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL,
                runs INTEGER NOT NULL DEFAULT 0,
                report TEXT,
                error TEXT,
                events TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
            CREATE TABLE IF NOT EXISTS artifacts (
                digest TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                media_type TEXT NOT NULL
            );",
        )
        .context("creating the jobs and artifacts tables")?;
        // Small artifacts of synchronous invocations live in the row itself
        // (stores made before this column get it added).
        let has_data: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('artifacts') WHERE name = 'data'")?
            .exists([])
            .context("reading the artifacts table's columns")?;
        if !has_data {
            conn.execute_batch("ALTER TABLE artifacts ADD COLUMN data BLOB").context("adding artifacts.data")?;
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a new queued job.
    pub fn insert(
        &self,
        id: &str,
        pipeline: &str,
        file: &str,
        input_text: Option<&str>,
        inputs: &[InputRef],
    ) -> anyhow::Result<()> {
        let inputs = serde_json::to_string(inputs)?;
        self.conn()
            .execute(
                "INSERT INTO jobs (id, state, pipeline, file, input_text, inputs, created_at) VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6)",
                params![id, pipeline, file, input_text, inputs, now()],
            )
            .context("writing the job")?;
        Ok(())
    }

    /// Marks a queued (or interrupted running) job as running and counts the
    /// run. False when the job is already final or unknown: do not run it.
    pub fn claim(&self, id: &str) -> anyhow::Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE jobs SET state = 'running', runs = runs + 1, started_at = ?2 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![id, now()],
            )
            .context("claiming the job")?;
        Ok(n == 1)
    }

    /// Records the end of a job (only if it is not final yet).
    pub fn finish(
        &self,
        id: &str,
        state: JobState,
        report: Option<&Value>,
        error: Option<&str>,
        events: &[Value],
    ) -> anyhow::Result<bool> {
        let report = report.map(serde_json::to_string).transpose()?;
        let events = serde_json::to_string(events)?;
        let n = self
            .conn()
            .execute(
                "UPDATE jobs SET state = ?2, report = ?3, error = ?4, events = ?5, finished_at = ?6 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![id, state.as_str(), report, error, events, now()],
            )
            .context("recording the job's end")?;
        Ok(n == 1)
    }

    /// Notes that a cancel was asked for.
    pub fn request_cancel(&self, id: &str) -> anyhow::Result<()> {
        self.conn().execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Remembers the name and media type of blobs, so that
    /// `GET /v1/artifacts/{digest}` can answer with them (the last name
    /// given to the same bytes wins). One transaction for all of them.
    pub fn record_artifacts(&self, artifacts: &[ArtifactMeta]) -> anyhow::Result<()> {
        self.record_artifacts_with_data(artifacts.iter().map(|a| (a, None)))
    }

    /// Records names and media types, and keeps the bytes given alongside
    /// in the row itself: one transaction for many small artifacts instead
    /// of a file each (a file create, write and rename cost more than the
    /// invocation that made a small artifact).
    pub fn record_artifacts_with_data<'a>(
        &self,
        artifacts: impl IntoIterator<Item = (&'a ArtifactMeta, Option<&'a [u8]>)>,
    ) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().context("recording artifacts")?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO artifacts (digest, name, media_type, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(digest) DO UPDATE SET name = excluded.name, media_type = excluded.media_type,
                     data = COALESCE(excluded.data, artifacts.data)",
            )?;
            for (a, data) in artifacts {
                stmt.execute(params![a.digest, a.name, a.media_type, data]).context("recording an artifact")?;
            }
        }
        tx.commit().context("recording artifacts")?;
        Ok(())
    }

    /// Forgets the finished jobs past the newest `keep` (by when they
    /// finished), with their reports and events; returns how many.
    pub fn prune_jobs(&self, keep: usize) -> anyhow::Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.conn()
            .execute(
                "DELETE FROM jobs WHERE id IN (
                     SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled')
                     ORDER BY finished_at DESC LIMIT -1 OFFSET ?1)",
                params![keep],
            )
            .context("pruning finished jobs")
    }

    /// Forgets the artifact records (and any bytes kept in them) past the
    /// newest `keep`, first recorded first; returns how many.
    pub fn prune_artifacts(&self, keep: usize) -> anyhow::Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.conn()
            .execute(
                "DELETE FROM artifacts WHERE rowid IN (
                     SELECT rowid FROM artifacts ORDER BY rowid DESC LIMIT -1 OFFSET ?1)",
                params![keep],
            )
            .context("pruning artifact records")
    }

    /// An artifact's bytes kept in its row, if any. Checked against the
    /// digest like [`BlobStore::get`](stagecraft_orchestrator::BlobStore::get):
    /// damaged bytes are never served.
    pub fn artifact_data(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT data FROM artifacts WHERE digest = ?1 AND data IS NOT NULL")?;
        let data: Option<Vec<u8>> = stmt.query_row(params![digest], |r| r.get(0)).optional()?;
        Ok(data.filter(|d| {
            let intact = stagecraft_orchestrator::blobs::sha256_hex(d) == digest;
            if !intact {
                tracing::warn!(digest, "artifact bytes in the store do not match their digest; ignoring them");
            }
            intact
        }))
    }

    /// The name and media type a blob was stored with, if known.
    pub fn artifact(&self, digest: &str) -> anyhow::Result<Option<ArtifactMeta>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT digest, name, media_type FROM artifacts WHERE digest = ?1")?;
        Ok(stmt
            .query_row(params![digest], |r| {
                Ok(ArtifactMeta { digest: r.get(0)?, name: r.get(1)?, media_type: r.get(2)? })
            })
            .optional()?)
    }

    pub fn get(&self, id: &str) -> anyhow::Result<Option<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
        Ok(stmt.query_row(params![id], row_to_job).optional()?)
    }

    /// Jobs to resume after a start: queued or running, oldest first.
    pub fn unfinished(&self) -> anyhow::Result<Vec<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at"))?;
        let rows = stmt.query_map([], row_to_job)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The newest `limit` jobs, newest first, without their reports and
    /// events (a list, not the jobs themselves).
    pub fn recent(&self, limit: usize) -> anyhow::Result<Vec<JobSummary>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, state, file, created_at, started_at, finished_at, error FROM jobs
             ORDER BY created_at DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                let state: String = r.get(1)?;
                Ok(JobSummary {
                    id: r.get(0)?,
                    state: JobState::parse(&state).unwrap_or(JobState::Failed),
                    file: r.get(2)?,
                    created_at: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    error: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Number of jobs per state.
    pub fn counts(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Value>(&s).ok());
    let state: String = r.get(1)?;
    let inputs: String = r.get(5)?;
    Ok(JobRecord {
        id: r.get(0)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        pipeline: r.get(2)?,
        file: r.get(3)?,
        input_text: r.get(4)?,
        inputs: serde_json::from_str(&inputs).unwrap_or_default(),
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        runs: r.get::<_, i64>(9)? as u32,
        report: json(r.get(10)?),
        error: r.get(11)?,
        events: json(r.get(12)?).and_then(|v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        }),
        cancel_requested: r.get::<_, i64>(13)? != 0,
    })
}
