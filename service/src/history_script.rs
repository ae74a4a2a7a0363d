//! The two Lua scripts of the history (append-and-publish, read) and how they are run: EVALSHA,
//! and on NOSCRIPT (first use, Redis restarted, SCRIPT FLUSH) SCRIPT LOAD and once more.

use std::sync::OnceLock;

use redis::aio::ConnectionLike;
use redis::{RedisError, RedisResult, Value};

/// Appends one message to a channel's history and publishes it, atomically, so that the order
/// of the history is the order of delivery.
/// KEYS: stream, meta, channel. ARGV: payload, size, ttl, meta ttl, new epoch, expire, magic,
/// publish command (`PUBLISH`, or `SPUBLISH` on a cluster).
/// A missing meta (first publish, evicted, expired, Redis restarted) starts the new epoch and
/// deletes any stale stream, so XADD can never meet an id "equal or smaller" than its top.
/// The stream is trimmed approximately (`MAXLEN ~ size`: whole stream nodes only, never below
/// `size`; up to one node, `stream-node-max-entries`, more stay stored), which costs about a third
/// less Redis time per append than exact trimming once a channel's history is full (BENCHMARKS.md,
/// "Recovery: the publish path"). What a reconnect can be served stays exactly `size` messages:
/// READ hands out entries only when the client is at most `size` behind.
/// Returns `{epoch, offset, receivers}`.
pub const APPEND: &str = r#"
local e = redis.call('HGET', KEYS[2], 'e')
if not e then
  e = ARGV[5]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e, 's', 0)
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[2], 's', 1))
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], offset .. '-0', 'd', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local n = redis.call(ARGV[8], KEYS[3], ARGV[7] .. e .. ':' .. offset .. '\0' .. ARGV[1])
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[6])
end
return {e, offset, n}
"#;

/// Reads a channel's history position and, for a client position in the current epoch, the
/// messages after it; starts an epoch when the channel has none, so a first connection always
/// gets a position to continue from.
/// KEYS: stream, meta. ARGV: new epoch, meta ttl, size, then pairs of client epoch and offset.
/// Returns `{epoch, top, client offset or nil, entries or nil}`; entries are read only when the
/// history can hold them all (at most `size`).
pub const READ: &str = r#"
local e = redis.call('HGET', KEYS[2], 'e')
local top = 0
if not e then
  e = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e, 's', 0)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  top = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
end
local client = nil
for i = 4, #ARGV - 1, 2 do
  if ARGV[i] == e then
    local o = tonumber(ARGV[i + 1])
    if o and (client == nil or o > client) then client = o end
  end
end
local entries = nil
if client ~= nil and client < top and top - client <= tonumber(ARGV[3]) then
  entries = redis.call('XRANGE', KEYS[1], string.format('%d', client + 1) .. '-0', '+', 'COUNT', top - client)
end
local client_text = nil
if client ~= nil then client_text = string.format('%d', client) end
return {e, string.format('%d', top), client_text or false, entries or false}
"#;

/// One script call: its keys and its arguments.
pub type Call<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);

/// A script and its SHA1 (learned from SCRIPT LOAD, which answers the same digest every time).
pub struct Script {
    source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub const fn new(source: &'static str) -> Script {
        Script { source, sha: OnceLock::new() }
    }

    async fn load<C: ConnectionLike + Send>(&self, conn: &mut C) -> RedisResult<String> {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(self.source).query_async(conn).await?;
        let _ = self.sha.set(sha.clone());
        Ok(sha)
    }

    /// Runs one EVALSHA per argument list (in one pipeline when there are several) and returns
    /// each answer (a script error is an `Err` in its place; a connection error fails the whole
    /// call). All of them are retried once after SCRIPT LOAD when Redis did not know the script,
    /// which is all or none of them.
    pub async fn run<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        calls: &[Call<'_>],
    ) -> RedisResult<Vec<RedisResult<Value>>> {
        let answers = match self.sha.get() {
            Some(sha) => pipeline(conn, sha, calls).await?,
            None => {
                let sha = self.load(conn).await?;
                pipeline(conn, &sha, calls).await?
            }
        };
        if !answers.iter().any(is_noscript) {
            return Ok(answers);
        }
        let sha = self.load(conn).await?;
        pipeline(conn, &sha, calls).await
    }
}

fn is_noscript(answer: &RedisResult<Value>) -> bool {
    matches!(answer, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}

async fn pipeline<C: ConnectionLike + Send>(
    conn: &mut C,
    sha: &str,
    calls: &[Call<'_>],
) -> RedisResult<Vec<RedisResult<Value>>> {
    if let [(keys, args)] = calls {
        // One call: a plain command, without a pipeline's allocations.
        return match evalsha(sha, keys, args).query_async::<Value>(conn).await {
            Err(e) if !is_script_error(&e) => Err(e),
            answer => Ok(vec![answer.and_then(into_result)]),
        };
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (keys, args) in calls {
        pipe.add_command(evalsha(sha, keys, args));
    }
    let values: Vec<Value> = pipe.query_async(conn).await?;
    Ok(values.into_iter().map(into_result).collect())
}

/// An error Redis answered for this call (the connection is fine).
fn is_script_error(e: &RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::Server(_)) || e.code().is_some()
}

fn into_result(value: Value) -> RedisResult<Value> {
    match value {
        Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

fn evalsha(sha: &str, keys: &[&[u8]], args: &[&[u8]]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    for a in args {
        cmd.arg(*a);
    }
    cmd
}
