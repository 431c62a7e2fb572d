//! Which component version of each stage the cluster runs, so that an
//! upload or a rollback on any API process reaches every process.
//!
//! Redis holds the truth: a hash `{prefix}:stages` (stage → the active
//! version's digest; the component's bytes are in the shared blob store),
//! a short history per stage for rollbacks (`{prefix}:stage-history:{name}`,
//! oldest first, the active one last), and a change log stream
//! (`{prefix}:stage-log`) that every process follows with a blocking read,
//! so a change reaches them as soon as it is written. The log only wakes
//! them: each then applies what the hash says, so a missed or repeated
//! entry changes nothing.

use crate::error::{ClusterError, Result};
use crate::queue::Queue;
use redis::{AsyncCommands, Script, Value};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

/// Versions kept per stage for rollbacks.
const HISTORY_KEPT: i64 = 20;

/// KEYS: the active hash, the stage's history, the change log.
/// ARGV: stage, new digest, the digest active before (seeds an empty
/// history, so the first upload can be rolled back), history kept.
/// Makes the new digest active. Returns 1.
static UPLOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('LLEN', KEYS[2]) == 0 and ARGV[3] ~= '' and ARGV[3] ~= ARGV[2] then
  redis.call('RPUSH', KEYS[2], ARGV[3])
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'stage', ARGV[1], 'digest', ARGV[2])
return 1
"#,
    )
});

/// KEYS: the active hash, the stage's history, the change log. ARGV: stage.
/// Makes the version before the active one active again. Returns the
/// digest now active, or `''` when there is no earlier version.
static ROLLBACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('LLEN', KEYS[2]) < 2 then return '' end
redis.call('RPOP', KEYS[2])
local digest = redis.call('LINDEX', KEYS[2], -1)
redis.call('HSET', KEYS[1], ARGV[1], digest)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'stage', ARGV[1], 'digest', digest)
return digest
"#,
    )
});

impl Queue {
    fn stage_keys(&self, stage: &str) -> (String, String, String) {
        let p = &self.shared.config.prefix;
        (format!("{p}:stages"), format!("{p}:stage-history:{stage}"), format!("{p}:stage-log"))
    }

    /// Makes `digest` the active version of `stage` on every process
    /// (its bytes must already be in the blob store). `before` is the
    /// digest this process ran until now, kept so the first upload can be
    /// rolled back.
    pub async fn publish_stage(&self, stage: &str, digest: &str, before: Option<&str>) -> Result<()> {
        let (active, history, log) = self.stage_keys(stage);
        let _: i64 = UPLOAD
            .key(active)
            .key(history)
            .key(log)
            .arg(stage)
            .arg(digest)
            .arg(before.unwrap_or_default())
            .arg(HISTORY_KEPT)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    /// Makes the version of `stage` before the active one active again on
    /// every process. Returns its digest, or None when the cluster has no
    /// earlier version of the stage.
    pub async fn rollback_stage(&self, stage: &str) -> Result<Option<String>> {
        let (active, history, log) = self.stage_keys(stage);
        let digest: String =
            ROLLBACK.key(active).key(history).key(log).arg(stage).invoke_async(&mut self.con.clone()).await?;
        Ok((!digest.is_empty()).then_some(digest))
    }

    /// The active version of every stage the cluster has changed, by digest.
    pub async fn stage_versions(&self) -> Result<HashMap<String, String>> {
        let (active, _, _) = self.stage_keys("");
        Ok(self.con.clone().hgetall(active).await?)
    }

    /// A follower of the stage change log on a connection of its own.
    pub async fn stage_changes(&self, wait: Duration) -> Result<StageChanges> {
        let (_, _, log) = self.stage_keys("");
        let mut con = self.con.clone();
        // Start after the newest entry: what came before is in the hash.
        let newest: Value =
            redis::cmd("XREVRANGE").arg(&log).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut con).await?;
        let after = match newest {
            Value::Array(entries) => entries
                .first()
                .and_then(|e| match e {
                    Value::Array(parts) => parts.first().and_then(|id| redis::from_redis_value_ref::<String>(id).ok()),
                    _ => None,
                })
                .unwrap_or_else(|| "0-0".into()),
            _ => "0-0".into(),
        };
        Ok(StageChanges { con: self.blocking_connection(wait).await?, log, after, wait })
    }
}

/// Follows the stage change log (see [`Queue::stage_changes`]).
pub struct StageChanges {
    con: redis::aio::MultiplexedConnection,
    log: String,
    after: String,
    wait: Duration,
}

impl StageChanges {
    /// Waits up to the follower's wait for changes; returns the stages
    /// named by the entries that came (empty when none did).
    pub async fn next(&mut self) -> Result<Vec<String>> {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(self.wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.log)
            .arg(&self.after)
            .query_async(&mut self.con)
            .await?;
        let mut stages = Vec::new();
        for (_, entries) in crate::queue::parse_read(reply)? {
            for (position, fields) in entries {
                self.after = position;
                match fields.get("stage") {
                    Some(stage) => stages.push(stage.clone()),
                    None => return Err(ClusterError::Protocol("a stage log entry without a stage".into())),
                }
            }
        }
        Ok(stages)
    }
}
