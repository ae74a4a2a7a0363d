//! webserver's Redis data: publishing (with the history on history facilities), login sessions and accounts. All key names come from
//! [`protocol::KeyPrefix`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protocol::{ChannelName, Facility, HistorySettings, KeyPrefix, Name, SessionKey, SessionRecord};
use redis::AsyncCommands;
use service::history::History;
use service::history_metrics::HistoryMetrics;
use service::redis_link::CommandConnection;
use service::redis_target::RedisTarget;

use crate::accounts::Account;
use crate::demo::game::{Game, GameId};
use crate::demo::lobby::{Invitation, InvitationId};

/// Replaces KEYS[1] with ARGV[2] only if it still holds ARGV[1]; ARGV[3] is the new TTL in ms,
/// or empty to keep the current one. Returns 1 when replaced.
const COMPARE_AND_SET: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("history: {0}")]
    History(#[from] service::history::HistoryError),
    #[error("corrupt record under {key}: {problem}")]
    Corrupt { key: String, problem: String },
    /// A session record's Redis key holds the session key, a bearer secret: never shown.
    #[error("corrupt session record (key withheld): {problem}")]
    CorruptSession { problem: String },
}

/// Cloneable handle; clones share one multiplexed connection.
#[derive(Clone)]
pub struct Store {
    conn: CommandConnection,
    pub prefix: KeyPrefix,
    history: Arc<History>,
    history_metrics: Arc<HistoryMetrics>,
}

/// What one publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Sum of PUBLISH receiver counts (Redis subscriptions, not sockets).
    pub receivers: u64,
    /// Channel histories appended to (0 on a facility without history).
    pub appended: u64,
}

impl Store {
    /// `history` decides per facility whether a publish also appends to the channel's history;
    /// its appends are counted in `history_metrics`.
    pub fn new(
        target: &RedisTarget,
        prefix: KeyPrefix,
        history: HistorySettings,
        history_metrics: Arc<HistoryMetrics>,
    ) -> Result<Store, StoreError> {
        let history = Arc::new(History::new(history, prefix.clone()).publishing_with(target.publish_command()));
        Ok(Store { conn: target.command_connection()?, prefix, history, history_metrics })
    }

    fn conn(&self) -> CommandConnection {
        self.conn.clone()
    }

    /// Publishes to every channel of `facility`: on a facility with history, appended and
    /// published atomically with its position; elsewhere the ws4redis PUBLISH (+ SET EX).
    pub async fn publish(
        &self,
        facility: &Facility,
        channels: &[ChannelName],
        message: &[u8],
        expire: u64,
    ) -> Result<Published, StoreError> {
        if !self.history.settings().enabled(facility) {
            let receivers = service::redis_link::publish(&mut self.conn(), channels, message, expire).await?;
            return Ok(Published { receivers, appended: 0 });
        }
        match self.history.append_and_publish(&mut self.conn(), channels, message, expire).await {
            Ok(list) => {
                self.history_metrics.appends.fetch_add(list.len() as u64, Ordering::Relaxed);
                Ok(Published { receivers: list.iter().map(|a| a.receivers).sum(), appended: list.len() as u64 })
            }
            Err(e) => {
                self.history_metrics.append_failures.fetch_add(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    pub async fn ping(&self) -> bool {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.is_ok()
    }

    // --- sessions -------------------------------------------------------------------------

    /// Stores a new session for `record` with a TTL; returns its key.
    pub async fn create_session(&self, record: &SessionRecord, ttl: Duration) -> Result<SessionKey, StoreError> {
        let key = SessionKey::parse(&crate::random::token()).expect("hex tokens are valid keys");
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.prefix.session_record(&key))
            .arg(record.to_json())
            .arg("EX")
            .arg(ttl.as_secs())
            .ignore();
        pipe.cmd("SADD").arg(self.prefix.user_sessions(&record.user)).arg(key.as_str()).ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(key)
    }

    pub async fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let redis_key = self.prefix.session_record(key);
        let raw: Option<Vec<u8>> = self.conn().get(&redis_key).await?;
        raw.map(|r| SessionRecord::from_json(&r).map_err(|e| StoreError::CorruptSession { problem: e.to_string() }))
            .transpose()
    }

    /// Ends a session and tells wsservers, which close its sockets.
    pub async fn delete_session(&self, key: &SessionKey, user: Option<&Name>) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.prefix.session_record(key)).ignore();
        if let Some(user) = user {
            pipe.cmd("SREM").arg(self.prefix.user_sessions(user)).arg(key.as_str()).ignore();
        }
        pipe.cmd("PUBLISH").arg(self.prefix.session_revocations().as_str()).arg(key.as_str()).ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// Members of a presence sorted set whose expiry is after `now_ms`.
    pub async fn live_members(&self, key: &str, now_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("ZRANGEBYSCORE").arg(key).arg(now_ms).arg("+inf").query_async(&mut self.conn()).await?)
    }

    // --- accounts -------------------------------------------------------------------------

    pub async fn account(&self, name: &Name) -> Result<Option<Account>, StoreError> {
        let key = self.prefix.account(name);
        let raw: Option<Vec<u8>> = self.conn().get(&key).await?;
        raw.map(|r| serde_json::from_slice(&r).map_err(|e| StoreError::Corrupt { key, problem: e.to_string() }))
            .transpose()
    }

    pub async fn put_account(&self, account: &Account) -> Result<(), StoreError> {
        let json = serde_json::to_string(account).expect("accounts serialise");
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.prefix.account(&account.name)).arg(json).ignore();
        pipe.cmd("SADD").arg(self.prefix.account_index()).arg(account.name.as_str()).ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// Deletes an account and every session it has; returns false when it did not exist.
    pub async fn delete_account(&self, name: &Name) -> Result<bool, StoreError> {
        let sessions: Vec<String> = self.conn().smembers(self.prefix.user_sessions(name)).await?;
        for session in sessions.iter().filter_map(|s| SessionKey::parse(s).ok()) {
            self.delete_session(&session, Some(name)).await?;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.prefix.account(name));
        pipe.cmd("SREM").arg(self.prefix.account_index()).arg(name.as_str()).ignore();
        pipe.cmd("DEL").arg(self.prefix.user_sessions(name)).ignore();
        let (deleted,): (u64,) = pipe.query_async(&mut self.conn()).await?;
        Ok(deleted > 0)
    }

    pub async fn account_names(&self) -> Result<Vec<Name>, StoreError> {
        let names: Vec<String> = self.conn().smembers(self.prefix.account_index()).await?;
        let mut names: Vec<Name> = names.iter().filter_map(|n| Name::parse(n).ok()).collect();
        names.sort();
        Ok(names)
    }

    // --- games and invitations ------------------------------------------------------------

    /// Replaces `key`'s value with `new` if it still is `old` (optimistic concurrency); `ttl`
    /// sets a new lifetime, `None` keeps the current one. False when someone else changed it.
    async fn compare_and_set(
        &self,
        key: &str,
        old: &[u8],
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let ttl = ttl.map(|t| t.as_millis().max(1).to_string()).unwrap_or_default();
        let replaced: i64 = redis::cmd("EVAL")
            .arg(COMPARE_AND_SET)
            .arg(1)
            .arg(key)
            .arg(old)
            .arg(new)
            .arg(ttl)
            .query_async(&mut self.conn())
            .await?;
        Ok(replaced == 1)
    }

    /// A JSON record and its raw bytes (for [`Store::compare_and_set`]).
    async fn record<T: serde::de::DeserializeOwned>(&self, key: String) -> Result<Option<(Vec<u8>, T)>, StoreError> {
        let raw: Option<Vec<u8>> = self.conn().get(&key).await?;
        match raw {
            None => Ok(None),
            Some(raw) => match serde_json::from_slice(&raw) {
                Ok(value) => Ok(Some((raw, value))),
                Err(e) => Err(StoreError::Corrupt { key, problem: e.to_string() }),
            },
        }
    }

    /// Stores a new invitation for `ttl` and indexes it under both players.
    pub async fn create_invitation(&self, invitation: &Invitation, ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.prefix.invitation(invitation.id.as_str()))
            .arg(invitation.to_json())
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        for user in [&invitation.from, &invitation.to] {
            let index = self.prefix.user_invitations(user);
            pipe.cmd("ZADD").arg(&index).arg(invitation.expires_ms).arg(invitation.id.as_str()).ignore();
            // Invitations share one TTL, so the newest one expires last.
            pipe.cmd("PEXPIRE").arg(&index).arg(ttl_ms).ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// An invitation (with its stored bytes, for [`Store::replace_invitation`]); `None` once it
    /// expired.
    pub async fn invitation(&self, id: &InvitationId) -> Result<Option<(Vec<u8>, Invitation)>, StoreError> {
        self.record(self.prefix.invitation(id.as_str())).await
    }

    /// Replaces an invitation (keeping its TTL) if it is still `old`; false when it changed or
    /// expired meanwhile.
    pub async fn replace_invitation(&self, old: &[u8], invitation: &Invitation) -> Result<bool, StoreError> {
        self.compare_and_set(&self.prefix.invitation(invitation.id.as_str()), old, &invitation.to_json(), None).await
    }

    /// The live invitations `user` sent or received, oldest first.
    pub async fn invitations_of(&self, user: &Name, now_ms: u64) -> Result<Vec<Invitation>, StoreError> {
        let index = self.prefix.user_invitations(user);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE").arg(&index).arg("-inf").arg(format!("({now_ms}")).ignore();
        pipe.cmd("ZRANGEBYSCORE").arg(&index).arg(now_ms).arg("+inf");
        let (ids,): (Vec<String>,) = pipe.query_async(&mut self.conn()).await?;
        let keys: Vec<String> =
            ids.iter().filter_map(|id| InvitationId::parse(id)).map(|id| self.prefix.invitation(id.as_str())).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.conn()).await?;
        let mut invitations = Vec::with_capacity(raws.len());
        for (key, raw) in keys.iter().zip(raws) {
            match raw.map(|r| serde_json::from_slice::<Invitation>(&r)) {
                Some(Ok(invitation)) => invitations.push(invitation),
                Some(Err(e)) => tracing::warn!(key = %key, "skipping corrupt invitation: {e}"),
                None => {}
            }
        }
        invitations.sort_by_key(|i| i.created_ms);
        Ok(invitations)
    }

    /// Stores a new game for `ttl`; false if the id is taken (never, with random ids).
    pub async fn create_game(&self, game: &Game, ttl: Duration) -> Result<bool, StoreError> {
        let created: Option<String> = redis::cmd("SET")
            .arg(self.prefix.game(game.id.as_str()))
            .arg(game.to_json())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        Ok(created.is_some())
    }

    /// A game (with its stored bytes, for [`Store::replace_game`]); `None` once it expired.
    pub async fn game(&self, id: &GameId) -> Result<Option<(Vec<u8>, Game)>, StoreError> {
        self.record(self.prefix.game(id.as_str())).await
    }

    /// Replaces a game if it is still `old`, with a fresh `ttl`; false when another move came
    /// first or it expired.
    pub async fn replace_game(&self, old: &[u8], game: &Game, ttl: Duration) -> Result<bool, StoreError> {
        self.compare_and_set(&self.prefix.game(game.id.as_str()), old, &game.to_json(), Some(ttl)).await
    }

    pub async fn delete_game(&self, id: &GameId) -> Result<(), StoreError> {
        self.conn().del::<_, ()>(self.prefix.game(id.as_str())).await?;
        Ok(())
    }
}
