//! Logged-in clients without logging in: session records written straight into Redis, as
//! webserver would write them at login, under names built by the protocol crate.

use std::time::Duration;

use anyhow::Context;
use protocol::{KeyPrefix, Name, SessionKey, SessionRecord};

use crate::config::Config;
use crate::worker::{session_key, user_name};

/// SETs per pipeline.
const BATCH: usize = 1000;

/// Writes one session per client: client i is user `lgu<i % channels>`.
pub async fn write_sessions(cfg: &Config, run_id: &str) -> anyhow::Result<()> {
    let prefix = KeyPrefix::new(&cfg.prefix).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
    let client = redis::Client::open(cfg.redis_url.as_str()).context("--redis-url")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
        .await
        .context("connecting to redis timed out")?
        .context("connecting to redis")?;
    for start in (0..cfg.clients).step_by(BATCH) {
        let mut pipe = redis::pipe();
        for i in start..(start + BATCH).min(cfg.clients) {
            let key = SessionKey::parse(&session_key(run_id, i)).map_err(|e| anyhow::anyhow!("session key: {e}"))?;
            let user = Name::parse(&user_name(i % cfg.channels)).map_err(|e| anyhow::anyhow!("user name: {e}"))?;
            let record = SessionRecord { user, groups: Vec::new(), csrf: String::new() };
            pipe.cmd("SET")
                .arg(prefix.session_record(&key))
                .arg(record.to_json())
                .arg("EX")
                .arg(cfg.session_ttl)
                .ignore();
        }
        tokio::time::timeout(Duration::from_secs(30), pipe.query_async::<()>(&mut conn))
            .await
            .context("writing sessions timed out")?
            .context("writing sessions")?;
    }
    Ok(())
}
