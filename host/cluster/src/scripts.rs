//! The queue's state changes, each one Lua script so that Redis runs it
//! atomically: no reader ever sees a job half-moved, and a check (is this
//! epoch still current? is there room?) and the change it guards cannot be
//! separated by another client's command.
//!
//! Keys: `KEYS` carries every key a script knows in advance. `REAP` also
//! touches the records of the entries it reclaims, whose ids it only learns
//! from `XAUTOCLAIM`; a standalone Redis allows that (these scripts carry no
//! `#!lua` shebang, so undeclared keys are permitted), Redis Cluster would
//! not, and stagecraft does not target it.
//!
//! Time is Redis's own (`TIME`), so that workers whose clocks disagree
//! still agree on when a lease ran out.
//!
//! Job record fields (a hash at `{prefix}:job:{id}`): `state` (queued,
//! running, succeeded, failed, cancelled, dead), `epoch` (bumped on every claim,
//! reclaim and hand-back: the fence), `deliveries` (claims so far, for the
//! delivery cap), `entry` (the stream entry that currently stands for the
//! job: older entries are stale), `band`, `payload`, `worker`, `result`,
//! `error`, `reason` (why it went to the dead letters), `cancel` (1 once a
//! cancel was asked for a running job), `commits` (how many times a final
//! state was written: 1), `enqueued_ms`, `started_ms`, `finished_ms`.
//!
//! Retention: when a job reaches a final state, its record and its event
//! stream get a time to live (`EXPIRE`), so Redis holds finished jobs for
//! a bounded time; the index of recent jobs (`{prefix}:recent`, a sorted
//! set by acceptance time) is trimmed to a bounded length on every enqueue.

use redis::Script;
use std::sync::LazyLock;

/// Lua shared by the scripts: Redis's clock in milliseconds, and an event
/// appended to a job's stream (bounded with `MAXLEN ~`).
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function event(stream, kept, json)
  redis.call('XADD', stream, 'MAXLEN', '~', kept, '*', 'event', json)
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// KEYS: the three band streams, the job record, its event stream, the
/// recent-jobs index.
/// ARGV: queued cap, band (1-3), job id, payload, group, events kept, the
/// `job_queued` event (JSON), recent jobs kept, listed (`1`: add it to the
/// recent-jobs index), seconds this job is kept once finished (`''`: the
/// queue's retention).
/// Returns `{1, queued}` when added, `{0, queued}` when full, `{-1, 0}`
/// when the id is taken. "Queued" counts entries not yet delivered, across
/// every band: the bound holds for the whole cluster.
pub static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0} end
local queued = 0
for i = 1, 3 do
  local pending = redis.call('XPENDING', KEYS[i], ARGV[5])[1]
  queued = queued + redis.call('XLEN', KEYS[i]) - pending
end
if queued >= tonumber(ARGV[1]) then return {0, queued} end
local entry = redis.call('XADD', KEYS[tonumber(ARGV[2])], '*', 'job', ARGV[3])
redis.call('HSET', KEYS[4], 'id', ARGV[3], 'state', 'queued', 'epoch', 0, 'deliveries', 0, 'commits', 0,
  'band', ARGV[2], 'payload', ARGV[4], 'entry', entry, 'enqueued_ms', now_ms())
if ARGV[10] ~= '' then redis.call('HSET', KEYS[4], 'keep', ARGV[10]) end
event(KEYS[5], ARGV[6], ARGV[7])
if ARGV[9] == '1' then
  redis.call('ZADD', KEYS[6], now_ms(), ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -(tonumber(ARGV[8]) + 1))
end
return {1, queued + 1}
"#,
    )
});

/// KEYS: the job record, its event stream, the stats hash. ARGV: worker,
/// the delivered entry id, events kept, seconds a finished job is kept.
/// Returns `{epoch, deliveries, payload}` when this worker now holds the
/// job, or `{-1}` when the delivered entry no longer stands for a job that
/// can run (forgotten, already final, or superseded by a newer entry): the
/// caller acks it and moves on. A job whose cancel was asked for while it
/// ran, and which came back to the queue since, ends `cancelled` here.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' or redis.call('HGET', KEYS[1], 'entry') ~= ARGV[2] then return {-1} end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HINCRBY', KEYS[1], 'commits', 1)
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', 'cancelled', 'finished_ms', now_ms())
  redis.call('HINCRBY', KEYS[3], 'commits', 1)
  event(KEYS[2], ARGV[3], cjson.encode({event = 'job_finished', job = redis.call('HGET', KEYS[1], 'id'),
    state = 'cancelled', error = 'cancelled'}))
  local keep = redis.call('HGET', KEYS[1], 'keep') or ARGV[4]
  redis.call('EXPIRE', KEYS[1], keep)
  redis.call('EXPIRE', KEYS[2], keep)
  return {-1}
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'started_ms', now_ms())
event(KEYS[2], ARGV[3], cjson.encode({event = 'job_started', job = redis.call('HGET', KEYS[1], 'id'),
  worker = ARGV[1], epoch = epoch, delivery = deliveries}))
return {epoch, deliveries, redis.call('HGET', KEYS[1], 'payload')}
"#,
    )
});

/// KEYS: a band stream. ARGV: group, entry. Acks and deletes an entry that
/// no longer stands for a job (see `CLAIM`). Returns 1.
pub static DISCARD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// KEYS: the job record, its band stream. ARGV: epoch, group, consumer,
/// entry. Renews the lease (resets the entry's idle time) if the epoch is
/// still this holder's. Returns 1 when renewed, 2 when renewed and a cancel
/// was asked for, 0 when the lease is lost.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local claimed = redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
if #claimed == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 2 end
return 1
"#,
    )
});

/// KEYS: the job record, its band stream, the stats hash, the job's event
/// stream. ARGV: epoch, group, entry, final state, result, the
/// `job_finished` event (JSON), events kept, error (`''`: none), seconds
/// the finished job is kept.
/// Writes the final state, appends the event and acks the entry, all or
/// nothing, only if the epoch is still the committer's and the job is
/// running. Returns 1, or 0 when refused.
pub static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  redis.call('HINCRBY', KEYS[3], 'refused', 1)
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'result', ARGV[5], 'finished_ms', now_ms())
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[8]) end
redis.call('HINCRBY', KEYS[1], 'commits', 1)
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], 'commits', 1)
event(KEYS[4], ARGV[7], ARGV[6])
local keep = redis.call('HGET', KEYS[1], 'keep') or ARGV[9]
redis.call('EXPIRE', KEYS[1], keep)
redis.call('EXPIRE', KEYS[4], keep)
return 1
"#,
    )
});

/// KEYS: the job record, its event stream. ARGV: epoch, event (JSON),
/// events kept. Appends an event if the epoch is still the sender's (a
/// worker that lost its lease cannot write into the job's history).
/// Returns 1, or 0 when refused.
pub static EVENT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
event(KEYS[2], ARGV[3], ARGV[2])
return 1
"#,
    )
});

/// KEYS: the job record, its band stream, the stats hash, its event
/// stream. ARGV: epoch, group, entry, events kept.
/// A draining worker gives a job back: a fresh entry at the back of its
/// band, the epoch bumped (the giver is fenced too) and the delivery not
/// counted against the cap. Returns 1, or 0 when the job was no longer
/// this worker's.
pub static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
local entry = redis.call('XADD', KEYS[2], '*', 'job', redis.call('HGET', KEYS[1], 'id'))
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
redis.call('HSET', KEYS[1], 'state', 'queued', 'entry', entry)
redis.call('HINCRBY', KEYS[3], 'handed_back', 1)
event(KEYS[4], ARGV[4], cjson.encode({event = 'job_requeued', job = redis.call('HGET', KEYS[1], 'id'),
  reason = 'handed back by a draining worker'}))
return 1
"#,
    )
});

/// KEYS: a band stream, the dead-letter stream, the stats hash.
/// ARGV: group, reaper consumer, lease (ms), delivery cap, key prefix,
/// most entries, cursor, events kept, seconds a finished job is kept.
/// Takes the band's entries whose lease ran out (`XAUTOCLAIM` from the
/// cursor), and for each: a job that may still run goes back to the end of
/// its band with its epoch bumped (its stalled holder is fenced at once);
/// one that used up its deliveries moves to the dead-letter stream with the
/// reason; a job still `queued` whose entry was delivered but never claimed
/// (its reader died in between) gets a fresh entry. Returns
/// `{reclaimed, dead, next cursor}`.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[7], 'COUNT', ARGV[6])
local reclaimed, dead = 0, 0
for _, item in ipairs(claimed[2]) do
  local id, fields = item[1], item[2]
  local job_id = nil
  if type(fields) == 'table' then
    for i = 1, #fields, 2 do if fields[i] == 'job' then job_id = fields[i + 1] end end
  end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
  if job_id then
    local key = ARGV[5] .. ':job:' .. job_id
    local events = ARGV[5] .. ':events:' .. job_id
    local state = redis.call('HGET', key, 'state')
    if redis.call('HGET', key, 'entry') == id and (state == 'running' or state == 'queued') then
      local deliveries = tonumber(redis.call('HGET', key, 'deliveries'))
      local worker = redis.call('HGET', key, 'worker') or '?'
      if state == 'running' then redis.call('HINCRBY', key, 'epoch', 1) end
      if state == 'running' and deliveries >= tonumber(ARGV[4]) then
        local reason = 'its lease ran out on each of ' .. deliveries ..
          ' deliveries (the worker died or stalled every time; the last was ' .. worker .. ')'
        redis.call('HSET', key, 'state', 'dead', 'reason', reason, 'finished_ms', now_ms())
        redis.call('XADD', KEYS[2], '*', 'job', job_id, 'reason', reason, 'deliveries', deliveries, 'worker', worker)
        redis.call('HINCRBY', KEYS[3], 'dead', 1)
        event(events, ARGV[8], cjson.encode({event = 'job_finished', job = job_id, state = 'dead', error = reason}))
        local keep = redis.call('HGET', key, 'keep') or ARGV[9]
        redis.call('EXPIRE', key, keep)
        redis.call('EXPIRE', events, keep)
        dead = dead + 1
      else
        local entry = redis.call('XADD', KEYS[1], '*', 'job', job_id)
        redis.call('HSET', key, 'state', 'queued', 'entry', entry)
        redis.call('HINCRBY', KEYS[3], 'reclaims', 1)
        event(events, ARGV[8], cjson.encode({event = 'job_requeued', job = job_id,
          reason = 'the lease of ' .. worker .. ' ran out'}))
        reclaimed = reclaimed + 1
      end
    end
  end
end
return {reclaimed, dead, claimed[1]}
"#,
    )
});

/// KEYS: the job record, its event stream, the stats hash.
/// ARGV: group, events kept, seconds a finished job is kept, key prefix,
/// the `job_finished` event for a job cancelled before it started (JSON).
/// A queued job ends `cancelled` at once (its entry acked and deleted, so
/// no worker gets it); a running one gets its `cancel` flag, which its
/// holder learns at its next renewal, and a `cancel_requested` event.
/// Returns `{0, ''}` for an unknown job, `{1, 'cancelled'}`, `{2,
/// 'running'}`, or `{3, state}` when it had already ended.
pub static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if state == 'queued' then
  local band = tonumber(redis.call('HGET', KEYS[1], 'band')) - 1
  local stream = ARGV[4] .. ':queue:' .. band
  local entry = redis.call('HGET', KEYS[1], 'entry')
  redis.call('XACK', stream, ARGV[1], entry)
  redis.call('XDEL', stream, entry)
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HINCRBY', KEYS[1], 'commits', 1)
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', 'cancelled before it started', 'finished_ms', now_ms())
  redis.call('HINCRBY', KEYS[3], 'commits', 1)
  event(KEYS[2], ARGV[2], ARGV[5])
  local keep = redis.call('HGET', KEYS[1], 'keep') or ARGV[3]
  redis.call('EXPIRE', KEYS[1], keep)
  redis.call('EXPIRE', KEYS[2], keep)
  return {1, 'cancelled'}
end
if state == 'running' then
  if redis.call('HGET', KEYS[1], 'cancel') ~= '1' then
    redis.call('HSET', KEYS[1], 'cancel', 1)
    event(KEYS[2], ARGV[2], cjson.encode({event = 'cancel_requested', job = redis.call('HGET', KEYS[1], 'id')}))
  end
  return {2, 'running'}
end
return {3, state}
"#,
    )
});
