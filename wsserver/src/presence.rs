//! Presence recording: which users have sockets on which facility, kept in Redis so that every
//! wsserver instance and webserver see the same list (layout in `protocol::presence`).
//!
//! One actor task owns it: sockets send enter/leave through a queue (so the order of a user's
//! join and leave is kept), the actor keeps local reference counts and runs atomic Lua scripts
//! that add or remove this instance's entry and publish `join`/`leave` only when the user
//! appears on or disappears from the facility as a whole. Every `ttl / 3` the actor re-adds its
//! entries with a new expiry and sweeps expired ones (a crashed instance's entries vanish within
//! `ttl`), publishing `leave` for users left with no entry.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use service::clock::now_ms;

use protocol::presence::{member, PresenceEvent};
use protocol::{Facility, KeyPrefix, Name};
use service::redis_link::CommandConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which facilities record presence.
#[derive(Debug, Clone)]
pub enum PresenceScope {
    Off,
    All,
    Only(Vec<String>),
}

impl PresenceScope {
    pub fn parse(items: &[String]) -> PresenceScope {
        let items: Vec<String> = items.iter().map(|i| i.trim().to_owned()).filter(|i| !i.is_empty()).collect();
        if items.iter().any(|i| i == "*") {
            PresenceScope::All
        } else if items.is_empty() {
            PresenceScope::Off
        } else {
            PresenceScope::Only(items)
        }
    }

    pub fn covers(&self, facility: &Facility) -> bool {
        match self {
            PresenceScope::Off => false,
            PresenceScope::All => !facility.as_str().starts_with(protocol::presence::EVENTS_FACILITY_PREFIX),
            PresenceScope::Only(list) => list.iter().any(|f| f == facility.as_str()),
        }
    }
}

enum Change {
    Enter(Facility, Name),
    Leave(Facility, Name),
}

#[cfg(test)]
mod tests;

/// Handle the sockets use; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    scope: PresenceScope,
    changes: mpsc::UnboundedSender<Change>,
}

/// Held by a socket that counts as present; dropping it records the leave.
pub struct PresenceGuard {
    changes: mpsc::UnboundedSender<Change>,
    facility: Facility,
    user: Name,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let _ = self.changes.send(Change::Leave(self.facility.clone(), self.user.clone()));
    }
}

impl Presence {
    /// Records `user` on `facility` when presence covers it.
    pub fn enter(&self, facility: &Facility, user: &Name) -> Option<PresenceGuard> {
        if !self.scope.covers(facility) || user.as_str().contains(protocol::presence::MEMBER_SEPARATOR) {
            return None;
        }
        let _ = self.changes.send(Change::Enter(facility.clone(), user.clone()));
        Some(PresenceGuard { changes: self.changes.clone(), facility: facility.clone(), user: user.clone() })
    }
}

/// The actor.
pub struct PresenceRecorder {
    conn: CommandConnection,
    prefix: KeyPrefix,
    instance: String,
    ttl: Duration,
    changes: mpsc::UnboundedReceiver<Change>,
    local: HashMap<(Facility, Name), usize>,
}

/// Adds this instance's entry; publishes `join` when it is the user's only live entry.
/// KEYS: zset, events channel (one slot: see `KeyPrefix::presence`). ARGV: member, user, expiry
/// ms, now ms, event json, key ttl ms, publish command (`SPUBLISH` on a cluster).
const ENTER: &str = r"
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local prefix = ARGV[2] .. '|'
local n = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[4], '+inf')) do
  if string.sub(m, 1, #prefix) == prefix then n = n + 1 end
end
if n == 1 then redis.call(ARGV[7], KEYS[2], ARGV[5]) end
return n
";

/// Removes this instance's entry; publishes `leave` when the user has no live entry left.
/// KEYS: zset, events channel. ARGV: member, user, now ms, event json, publish command.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
local prefix = ARGV[2] .. '|'
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')) do
  if string.sub(m, 1, #prefix) == prefix then return 0 end
end
redis.call(ARGV[5], KEYS[2], ARGV[4])
return 1
";

/// Removes expired entries and publishes `leave` for users left without one.
/// KEYS: zset, events channel. ARGV: now ms, facility, publish command.
const SWEEP: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if #expired == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local live = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  live[string.match(m, '^([^|]*)')] = true
end
local gone = {}
for _, m in ipairs(expired) do
  local user = string.match(m, '^([^|]*)')
  if not live[user] and not gone[user] then
    gone[user] = true
    redis.call(ARGV[3], KEYS[2], cjson.encode({event = 'leave', user = user, facility = ARGV[2]}))
  end
end
return #expired
";

impl PresenceRecorder {
    pub fn new(
        conn: CommandConnection,
        prefix: KeyPrefix,
        scope: PresenceScope,
        ttl: Duration,
    ) -> (Presence, PresenceRecorder) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut id = [0u8; 8];
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ^ u128::from(std::process::id());
        id.copy_from_slice(&seed.to_le_bytes()[..8]);
        let instance = id.iter().map(|b| format!("{b:02x}")).collect();
        (
            Presence { scope, changes: tx },
            PresenceRecorder { conn, prefix, instance, ttl, changes: rx, local: HashMap::new() },
        )
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut refresh = tokio::time::interval(self.ttl / 3);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                change = self.changes.recv() => match change {
                    Some(change) => self.apply(change).await,
                    None => break,
                },
                _ = refresh.tick() => self.refresh().await,
            }
        }
        // Shutdown: remove this instance's entries (and announce leaves) while Redis is there.
        let present: Vec<(Facility, Name)> = self.local.drain().map(|(k, _)| k).collect();
        for (facility, user) in present {
            self.leave_script(&facility, &user).await;
        }
    }

    async fn apply(&mut self, change: Change) {
        match change {
            Change::Enter(facility, user) => {
                let count = self.local.entry((facility.clone(), user.clone())).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.enter_script(&facility, &user).await;
                }
            }
            Change::Leave(facility, user) => {
                let key = (facility, user);
                if let Some(count) = self.local.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.local.remove(&key);
                        self.leave_script(&key.0, &key.1).await;
                    }
                }
            }
        }
    }

    fn event(&self, event: &str, facility: &Facility, user: &Name) -> String {
        PresenceEvent { event: event.to_owned(), user: user.to_string(), facility: facility.to_string() }.to_json()
    }

    async fn enter_script(&mut self, facility: &Facility, user: &Name) {
        let now = now_ms();
        let result: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(ENTER)
            .arg(2)
            .arg(self.prefix.presence(facility))
            .arg(self.prefix.presence_events(facility).as_str())
            .arg(member(user, &self.instance))
            .arg(user.as_str())
            .arg(now + self.ttl.as_millis() as u64)
            .arg(now)
            .arg(self.event("join", facility, user))
            .arg(self.ttl.as_millis() as u64 * 2)
            .arg(self.conn.publish_command().as_str())
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = result {
            tracing::warn!("presence: cannot record a join (retried at the next refresh): {e}");
        }
    }

    async fn leave_script(&mut self, facility: &Facility, user: &Name) {
        let result: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(LEAVE)
            .arg(2)
            .arg(self.prefix.presence(facility))
            .arg(self.prefix.presence_events(facility).as_str())
            .arg(member(user, &self.instance))
            .arg(user.as_str())
            .arg(now_ms())
            .arg(self.event("leave", facility, user))
            .arg(self.conn.publish_command().as_str())
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = result {
            tracing::warn!("presence: cannot record a leave (the entry expires within the presence TTL): {e}");
        }
    }

    /// Re-adds every local entry with a fresh expiry, then sweeps expired entries.
    async fn refresh(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let now = now_ms();
        let expiry = now + self.ttl.as_millis() as u64;
        let mut facilities: Vec<&Facility> = self.local.keys().map(|(f, _)| f).collect();
        facilities.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        facilities.dedup();
        let mut pipe = redis::pipe();
        for (facility, user) in self.local.keys() {
            pipe.cmd("ZADD").arg(self.prefix.presence(facility)).arg(expiry).arg(member(user, &self.instance)).ignore();
        }
        for facility in &facilities {
            pipe.cmd("PEXPIRE").arg(self.prefix.presence(facility)).arg(self.ttl.as_millis() as u64 * 2).ignore();
            pipe.cmd("EVAL")
                .arg(SWEEP)
                .arg(2)
                .arg(self.prefix.presence(facility))
                .arg(self.prefix.presence_events(facility).as_str())
                .arg(now)
                .arg(facility.as_str())
                .arg(self.conn.publish_command().as_str())
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut self.conn).await {
            tracing::warn!("presence: refresh failed: {e}");
        }
    }
}
