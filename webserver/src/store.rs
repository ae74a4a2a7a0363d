//! webserver's Redis data: publishing, login sessions and accounts. All key names come from
//! [`protocol::KeyPrefix`].

use std::time::Duration;

use protocol::{ChannelName, KeyPrefix, Name, SessionKey, SessionRecord};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::accounts::Account;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt record under {key}: {problem}")]
    Corrupt { key: String, problem: String },
}

/// Cloneable handle; clones share one multiplexed connection.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    pub prefix: KeyPrefix,
}

impl Store {
    pub fn new(client: redis::Client, prefix: KeyPrefix) -> Result<Store, StoreError> {
        Ok(Store { conn: service::redis_link::command_connection(client)?, prefix })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Publishes to every channel; returns the number of receiving subscriptions.
    pub async fn publish(&self, channels: &[ChannelName], message: &[u8], expire: u64) -> Result<u64, StoreError> {
        Ok(service::redis_link::publish(&mut self.conn(), channels, message, expire).await?)
    }

    pub async fn ping(&self) -> bool {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.is_ok()
    }

    // --- sessions -------------------------------------------------------------------------

    /// Stores a new session for `record` with a TTL; returns its key.
    pub async fn create_session(&self, record: &SessionRecord, ttl: Duration) -> Result<SessionKey, StoreError> {
        let key = SessionKey::parse(&crate::random::token()).expect("hex tokens are valid keys");
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.prefix.session_record(&key)).arg(record.to_json()).arg("EX").arg(ttl.as_secs()).ignore();
        pipe.cmd("SADD").arg(self.prefix.user_sessions(&record.user)).arg(key.as_str()).ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(key)
    }

    pub async fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let redis_key = self.prefix.session_record(key);
        let raw: Option<Vec<u8>> = self.conn().get(&redis_key).await?;
        raw.map(|r| SessionRecord::from_json(&r).map_err(|e| StoreError::Corrupt { key: redis_key, problem: e.to_string() }))
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
}
