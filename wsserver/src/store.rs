//! Redis commands other than pub/sub: replay GETs, client publishes (PUBLISH + SET EX) and
//! session lookups, over one multiplexed, self-reconnecting connection shared by all sockets.

use std::time::Duration;

use bytes::Bytes;
use protocol::ChannelName;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest a command may take before the caller gets an error instead of waiting.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct StoreError(#[from] redis::RedisError);

/// Cloneable handle; clones share the connection.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
}

impl Store {
    /// Connects lazily: the process starts even while Redis is down.
    pub fn new(client: redis::Client) -> Result<Store, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        Ok(Store { conn: ConnectionManager::new_lazy_with_config(client, config)? })
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
        let mut pipe = redis::pipe();
        for c in channels {
            pipe.cmd("PUBLISH").arg(c.as_str()).arg(payload);
            if expire > 0 {
                pipe.cmd("SET").arg(c.as_str()).arg(payload).arg("EX").arg(expire).ignore();
            }
        }
        let receivers: Vec<u64> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(receivers.iter().sum())
    }

    /// A string value (session records).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redis::cmd("GET").arg(key).query_async(&mut self.conn.clone()).await?)
    }

    /// True when Redis answers PING now.
    pub async fn ping(&self) -> bool {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.is_ok()
    }
}
