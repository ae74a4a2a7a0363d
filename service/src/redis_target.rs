//! The Redis both binaries talk to, whatever its topology (one server over TCP, unix socket or
//! TLS; a Sentinel-managed master; a Redis Cluster): they ask it for a command connection and a
//! pub/sub connection and never branch on the topology themselves. A cluster adds one thing
//! wsserver asks for: the shards its sharded subscriber follows ([`RedisTarget::cluster`]).

use std::sync::Arc;

use redis::RedisResult;
use tokio::sync::watch;

use crate::redis_cluster::{Cluster, ClusterSettings};
use crate::redis_link::CommandConnection;
use crate::redis_sentinel::{Sentinel, SentinelSettings};

/// Where Redis is; built by [`crate::redis_config::RedisArgs::target`]. Cheap to clone.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Single(Box<redis::Client>),
    Sentinel(Arc<Sentinel>),
    Cluster(Arc<Cluster>),
}

/// The command that publishes to a channel: `SPUBLISH` in a cluster (the message stays on the
/// shard owning the channel's slot), `PUBLISH` elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishCommand {
    Publish,
    SPublish,
}

impl PublishCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishCommand::Publish => "PUBLISH",
            PublishCommand::SPublish => "SPUBLISH",
        }
    }
}

/// Why [`RedisTarget::probe`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Retrying will not help: certificates, credentials.
    #[error("{0}")]
    Fatal(String),
    /// Redis (or every Sentinel) is down or unreachable now; may heal.
    #[error("{0}")]
    Unavailable(String),
}

impl RedisTarget {
    /// One server reached through `client` (tests, and [`crate::redis_config`]).
    pub fn single(client: redis::Client) -> RedisTarget {
        RedisTarget::Single(Box::new(client))
    }

    pub(crate) fn sentinel(settings: SentinelSettings) -> RedisTarget {
        RedisTarget::Sentinel(Arc::new(Sentinel::new(settings)))
    }

    pub(crate) fn cluster_of(settings: ClusterSettings) -> RedisResult<RedisTarget> {
        Ok(RedisTarget::Cluster(Arc::new(Cluster::new(settings)?)))
    }

    /// The command connection (lazy: creating it never waits for Redis).
    pub fn command_connection(&self) -> RedisResult<CommandConnection> {
        match self {
            RedisTarget::Single(client) => crate::redis_link::command_connection((**client).clone()),
            RedisTarget::Sentinel(sentinel) => Ok(CommandConnection::sentinel(sentinel.clone())),
            RedisTarget::Cluster(cluster) => Ok(CommandConnection::cluster(cluster.clone())),
        }
    }

    /// How publishes are sent on this topology.
    pub fn publish_command(&self) -> PublishCommand {
        match self {
            RedisTarget::Cluster(_) => PublishCommand::SPublish,
            _ => PublishCommand::Publish,
        }
    }

    /// The cluster, when this is one: wsserver subscribes with `SSUBSCRIBE` on its shards too.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            RedisTarget::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// A new classic pub/sub connection: to the (current) master, or to any node of a cluster
    /// (where a plain `PUBLISH` reaches every node).
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match self {
            RedisTarget::Single(client) => client.get_async_pubsub().await,
            RedisTarget::Sentinel(sentinel) => {
                let (client, _) = sentinel.resolve().await?;
                client.get_async_pubsub().await
            }
            RedisTarget::Cluster(cluster) => cluster.any_node_pubsub().await,
        }
    }

    /// Announcements that the master changed; a pub/sub connection should reconnect on each.
    pub fn switches(&self) -> MasterSwitches {
        match self {
            RedisTarget::Single(_) | RedisTarget::Cluster(_) => MasterSwitches(None),
            RedisTarget::Sentinel(sentinel) => MasterSwitches(Some(sentinel.switches())),
        }
    }

    /// Connects once and PINGs: what `--check` and startup ask before serving.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        if let RedisTarget::Cluster(cluster) = self {
            let shards = tokio::time::timeout(crate::redis_link::RESPONSE_TIMEOUT * 3, cluster.shards())
                .await
                .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
            return match shards {
                Ok(shards) if shards.iter().any(|s| s.master.is_some()) => Ok(()),
                Ok(_) => Err(ProbeError::Unavailable("the cluster has no master up".to_owned())),
                Err(e) => Err(classify(&e)),
            };
        }
        let attempt = async {
            let mut conn = match self {
                RedisTarget::Single(client) => {
                    client.get_multiplexed_async_connection_with_config(&crate::redis_link::async_config()).await?
                }
                RedisTarget::Sentinel(sentinel) => sentinel.master_connection().await?.1,
                RedisTarget::Cluster(_) => unreachable!("answered above"),
            };
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        let result = tokio::time::timeout(crate::redis_link::RESPONSE_TIMEOUT * 3, attempt)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn classify(e: &redis::RedisError) -> ProbeError {
    if let Some(problem) = crate::redis_tls::certificate_problem(e) {
        return ProbeError::Fatal(problem);
    }
    let text = e.to_string();
    if text.contains("the Redis server's certificate") {
        // Already explained by the Sentinel path.
        return ProbeError::Fatal(text);
    }
    match e.kind() {
        redis::ErrorKind::AuthenticationFailed => ProbeError::Fatal(format!("Redis refused the credentials: {e}")),
        _ if e.code() == Some("WRONGPASS") || e.code() == Some("NOAUTH") => {
            ProbeError::Fatal(format!("Redis refused the credentials: {e}"))
        }
        _ => ProbeError::Unavailable(text),
    }
}

/// Master changes of a [`RedisTarget`]; never fires for a single server.
pub struct MasterSwitches(Option<watch::Receiver<crate::redis_sentinel::Announced>>);

impl MasterSwitches {
    /// Forgets announcements made so far (call before connecting).
    pub fn mark_seen(&mut self) {
        if let Some(rx) = &mut self.0 {
            rx.borrow_and_update();
        }
    }

    /// Resolves at the next announcement after the last [`MasterSwitches::mark_seen`] or call.
    pub async fn next(&mut self) {
        if let Some(rx) = &mut self.0 {
            if rx.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }
}
