//! Logged-in clients without logging in: session records written straight into Redis, as
//! webserver would write them at login, under names built by the protocol crate (through a
//! cluster client on a Redis Cluster).

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
    if cfg.redis_cluster_nodes.is_empty() {
        let client = redis::Client::open(cfg.redis_url.as_str()).context("--redis-url")?;
        let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
            .await
            .context("connecting to redis timed out")?
            .context("connecting to redis")?;
        return write_all(cfg, run_id, &prefix, &mut conn).await;
    }
    let nodes = cfg.redis_cluster_nodes.iter().map(|n| format!("redis://{}", n.trim()));
    let client = redis::cluster::ClusterClient::new(nodes).context("--redis-cluster-nodes")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_async_connection())
        .await
        .context("connecting to the redis cluster timed out")?
        .context("connecting to the redis cluster")?;
    // A cluster pipeline must stay in one slot: one SET at a time, routed by its key.
    let write = async {
        for i in 0..cfg.clients {
            let (key, json) = record(cfg, run_id, &prefix, i)?;
            redis::cmd("SET").arg(key).arg(json).arg("EX").arg(cfg.session_ttl).query_async::<()>(&mut conn).await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), write)
        .await
        .context("writing sessions timed out")?
        .context("writing sessions")
}

/// Client `i`'s session record key and JSON.
fn record(cfg: &Config, run_id: &str, prefix: &KeyPrefix, i: usize) -> anyhow::Result<(String, String)> {
    let key = SessionKey::parse(&session_key(run_id, i)).map_err(|e| anyhow::anyhow!("session key: {e}"))?;
    let user = Name::parse(&user_name(i % cfg.channels)).map_err(|e| anyhow::anyhow!("user name: {e}"))?;
    let record = SessionRecord { user, groups: Vec::new(), csrf: String::new() };
    Ok((prefix.session_record(&key), record.to_json()))
}

async fn write_all<C: redis::aio::ConnectionLike>(
    cfg: &Config,
    run_id: &str,
    prefix: &KeyPrefix,
    conn: &mut C,
) -> anyhow::Result<()> {
    for start in (0..cfg.clients).step_by(BATCH) {
        let mut pipe = redis::pipe();
        for i in start..(start + BATCH).min(cfg.clients) {
            let (key, json) = record(cfg, run_id, prefix, i)?;
            pipe.cmd("SET").arg(key).arg(json).arg("EX").arg(cfg.session_ttl).ignore();
        }
        tokio::time::timeout(Duration::from_secs(30), pipe.query_async::<()>(conn))
            .await
            .context("writing sessions timed out")?
            .context("writing sessions")?;
    }
    Ok(())
}
