//! The command connection to Redis both binaries use (multiplexed, reconnecting, with a response
//! timeout so callers get an error instead of hanging during an outage; for a Sentinel-managed
//! master, re-resolved as [`crate::redis_sentinel`] describes; for a cluster, redis-rs' cluster
//! connection), and the one place the ws4redis publish sequence (PUBLISH — SPUBLISH on a
//! cluster — then SET .. EX when expire > 0) is written.

use std::sync::Arc;
use std::time::Duration;

use protocol::ChannelName;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::redis_cluster::Cluster;
use crate::redis_sentinel::Sentinel;
use crate::redis_target::PublishCommand;
use crate::redis_tls::TlsFiles;

/// Longest a command may take before the caller gets an error.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `url` whose TCP connections send every command at once (`TCP_NODELAY`): with
/// Nagle's algorithm a command written while an earlier one is unanswered would wait for that
/// answer, one more round trip for pipelined publishes.
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    client_for(connection_info(url)?, None)
}

/// `url` parsed, with `TCP_NODELAY` set.
pub fn connection_info(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    Ok(url.into_connection_info()?.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// A client for `info`, verifying TLS with `tls`'s CA and presenting its client certificate
/// when `info` is a `rediss://` address (without `tls`: the system's trust store).
pub fn client_for(info: redis::ConnectionInfo, tls: Option<&TlsFiles>) -> redis::RedisResult<redis::Client> {
    match tls {
        Some(files) if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) => {
            redis::Client::build_with_tls(info, files.certificates())
        }
        _ => redis::Client::open(info),
    }
}

/// Connect and response timeouts of the connections made without a `ConnectionManager`.
pub(crate) fn async_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
}

/// A command connection that connects lazily, so a process starts while Redis is down. It
/// reconnects with the delays of [`crate::reconnect`], one retry per failed command.
pub fn command_connection(client: redis::Client) -> redis::RedisResult<CommandConnection> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(crate::reconnect::MIN_DELAY)
        .set_exponent_base(crate::reconnect::FACTOR as f32)
        .set_max_delay(crate::reconnect::MAX_DELAY);
    Ok(CommandConnection(Link::Single(ConnectionManager::new_lazy_with_config(client, config)?)))
}

/// The connection both binaries send commands (PUBLISH, SET, GET, scripts) through, whatever
/// the topology: cheap to clone, every clone shares the same connection.
#[derive(Clone)]
pub struct CommandConnection(Link);

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Sentinel(Arc<Sentinel>),
    /// redis-rs' cluster connection, made at the first command (it needs the runtime).
    Cluster(Arc<Cluster>, Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>),
}

impl CommandConnection {
    pub(crate) fn sentinel(sentinel: Arc<Sentinel>) -> CommandConnection {
        CommandConnection(Link::Sentinel(sentinel))
    }

    pub(crate) fn cluster(cluster: Arc<Cluster>) -> CommandConnection {
        CommandConnection(Link::Cluster(cluster, Arc::new(tokio::sync::OnceCell::new())))
    }

    /// `SPUBLISH` on a cluster, `PUBLISH` elsewhere.
    pub fn publish_command(&self) -> PublishCommand {
        match self.0 {
            Link::Cluster(..) => PublishCommand::SPublish,
            _ => PublishCommand::Publish,
        }
    }
}

async fn cluster_connection(
    cluster: &Cluster,
    cell: &tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
) -> redis::cluster_async::ClusterConnection {
    cell.get_or_init(|| async { cluster.command_connection() }).await.clone()
}

impl ConnectionLike for CommandConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Sentinel(sentinel) => Box::pin(async move {
                let (generation, mut conn) = sentinel.master_connection().await?;
                let result = conn.req_packed_command(cmd).await;
                sentinel.after_command(generation, result.as_ref().err());
                result
            }),
            Link::Cluster(cluster, cell) => Box::pin(async move {
                let mut conn = cluster_connection(cluster, cell).await;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(sentinel) => Box::pin(async move {
                let (generation, mut conn) = sentinel.master_connection().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                sentinel.after_command(generation, result.as_ref().err());
                result
            }),
            Link::Cluster(cluster, cell) => Box::pin(async move {
                let mut conn = cluster_connection(cluster, cell).await;
                if pipeline.is_transaction() || offset != 0 {
                    return conn.req_packed_commands(pipeline, offset, count).await;
                }
                crate::redis_cluster_pipeline::run_split(&mut conn, pipeline).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Link::Single(conn) => conn.get_db(),
            Link::Sentinel(sentinel) => sentinel.settings().redis.db(),
            Link::Cluster(..) => 0,
        }
    }
}

/// PUBLISH (SPUBLISH on a cluster) `payload` to each channel and, when `expire` > 0, store it
/// as the channel's last message with SET .. EX, in one round trip (on a cluster, one per node
/// concerned). Returns the sum of the receiver counts.
pub async fn publish(
    conn: &mut CommandConnection,
    channels: &[ChannelName],
    payload: &[u8],
    expire: u64,
) -> redis::RedisResult<u64> {
    let publish = conn.publish_command().as_str();
    if let ([channel], 0) = (channels, expire) {
        // The publish API's usual request: one command, without a pipeline's allocations.
        return redis::cmd(publish).arg(channel.as_str()).arg(payload).query_async(conn).await;
    }
    let mut pipe = redis::pipe();
    for c in channels {
        pipe.cmd(publish).arg(c.as_str()).arg(payload);
        if expire > 0 {
            pipe.cmd("SET").arg(c.as_str()).arg(payload).arg("EX").arg(expire).ignore();
        }
    }
    let receivers: Vec<u64> = pipe.query_async(conn).await?;
    Ok(receivers.iter().sum())
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_send_commands_without_nagle_delay() {
        let client = super::client("redis://127.0.0.1:6379/0").expect("a valid URL");
        assert!(client.get_connection_info().tcp_settings().nodelay());
        assert!(super::client("http://not-redis").is_err());
    }
}
