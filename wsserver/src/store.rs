//! Redis commands other than pub/sub: replay GETs, client publishes (PUBLISH + SET EX, or the
//! history's append-and-publish), history reads and session lookups, over one multiplexed, self-reconnecting connection shared by all sockets.

use bytes::Bytes;
use protocol::{ChannelName, Recover};
use service::history::{Appended, ChannelHistory, History};
use service::redis_link::CommandConnection;
use service::redis_target::RedisTarget;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("history: {0}")]
    History(#[from] service::history::HistoryError),
}

/// Cloneable handle; clones share the connection.
#[derive(Clone)]
pub struct Store {
    conn: CommandConnection,
}

impl Store {
    /// Connects lazily: the process starts even while Redis is down.
    pub fn new(target: &RedisTarget) -> Result<Store, StoreError> {
        Ok(Store { conn: target.command_connection()? })
    }

    /// The persisted last message of each channel, in order (`None` where there is none).
    pub async fn last_messages(&self, channels: &[ChannelName]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for c in channels {
            cmd.arg(c.as_str());
        }
        let values: Vec<Option<Vec<u8>>> = cmd.query_async(&mut self.conn.clone()).await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    /// PUBLISH to each channel, and SET .. EX `expire` when expire > 0, in one round trip.
    pub async fn publish(&self, channels: &[ChannelName], payload: &[u8], expire: u64) -> Result<u64, StoreError> {
        Ok(service::redis_link::publish(&mut self.conn.clone(), channels, payload, expire).await?)
    }

    /// Appends to each channel's history and publishes with the position (history facilities).
    pub async fn append_and_publish(
        &self,
        history: &History,
        channels: &[ChannelName],
        payload: &[u8],
        expire: u64,
    ) -> Result<Vec<Appended>, StoreError> {
        Ok(history.append_and_publish(&mut self.conn.clone(), channels, payload, expire).await?)
    }

    /// Each channel's history position and what a reconnecting socket missed.
    pub async fn read_history(
        &self,
        history: &History,
        channels: &[ChannelName],
        recover: &Recover,
    ) -> Result<Vec<ChannelHistory>, StoreError> {
        Ok(history.read(&mut self.conn.clone(), channels, recover).await?)
    }

    /// A string value (session records).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redis::cmd("GET").arg(key).query_async(&mut self.conn.clone()).await?)
    }
}
