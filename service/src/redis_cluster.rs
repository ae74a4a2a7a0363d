//! A Redis Cluster reached through seed nodes. Commands go through redis-rs' cluster
//! connection (slot routing, `MOVED`/`ASK`, topology refresh on errors); the topology wsserver's
//! sharded subscriber follows is read here with `CLUSTER SHARDS` (Redis 7.0+) from whichever
//! known node answers first, and so are the node clients its pub/sub connections use. The user,
//! password and TLS settings apply to every node.

use std::fmt;
use std::sync::Mutex;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisResult, Value};

use crate::redis_link::RESPONSE_TIMEOUT;
use crate::redis_sentinel::HostPort;
use crate::redis_tls::TlsFiles;

/// What [`Cluster`] needs: seed nodes and how to talk to every node.
#[derive(Clone)]
pub struct ClusterSettings {
    pub seeds: Vec<HostPort>,
    /// User and password of the nodes (from `--redis-url`); the db is always 0 in a cluster.
    pub redis: RedisConnectionInfo,
    /// With TLS (a `rediss://` URL), to every node.
    pub tls: Option<TlsFiles>,
}

impl fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("seeds", &self.seeds.iter().map(ToString::to_string).collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// One shard as `CLUSTER SHARDS` describes it: its slot ranges and its master, when it has a
/// healthy one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    /// `None` while the master is marked failed and no replica was promoted yet.
    pub master: Option<HostPort>,
    /// Every node of the shard (master and replicas), as announced.
    pub nodes: Vec<HostPort>,
}

/// The cluster of one process, shared by its command connections and its pub/sub connections.
pub struct Cluster {
    settings: ClusterSettings,
    client: redis::cluster::ClusterClient,
    /// Nodes seen in the last topology read, asked first next time (the seeds after them).
    known: Mutex<Vec<HostPort>>,
    /// The connection the last topology read went through, kept for the next one.
    topology: tokio::sync::Mutex<Option<(HostPort, redis::aio::MultiplexedConnection)>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

impl Cluster {
    pub(crate) fn new(settings: ClusterSettings) -> RedisResult<Cluster> {
        let seeds: Vec<redis::ConnectionInfo> =
            settings.seeds.iter().map(|s| node_info(&settings, s)).collect::<RedisResult<_>>()?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(RESPONSE_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // A command that meets a failover fails to its caller (503) instead of waiting it out.
            .overall_response_timeout(Some(RESPONSE_TIMEOUT))
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(400)
            .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        if let Some(user) = settings.redis.username() {
            builder = builder.username(user);
        }
        if let Some(password) = settings.redis.password() {
            builder = builder.password(password);
        }
        if let Some(tls) = &settings.tls {
            builder = builder.certs(tls.certificates());
        }
        Ok(Cluster {
            client: builder.build()?,
            settings,
            known: Mutex::new(Vec::new()),
            topology: tokio::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// A command connection that connects in the background (needs the tokio runtime).
    pub(crate) fn command_connection(&self) -> redis::cluster_async::ClusterConnection {
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(RESPONSE_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        self.client.get_pending_async_connection_with_config(config)
    }

    /// A client for one node, with the cluster's credentials and TLS; `resp3` for the pub/sub
    /// connections that receive `SSUBSCRIBE` messages as pushes.
    pub fn node_client(&self, node: &HostPort, resp3: bool) -> RedisResult<redis::Client> {
        let mut info = node_info(&self.settings, node)?;
        if resp3 {
            let redis = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(redis);
        }
        crate::redis_link::client_for(info, self.settings.tls.as_ref())
    }

    /// Nodes to ask, the last topology's first, then the seeds.
    fn candidates(&self) -> Vec<HostPort> {
        let mut list = self.known.lock().expect("not poisoned").clone();
        for seed in &self.settings.seeds {
            if !list.contains(seed) {
                list.push(seed.clone());
            }
        }
        list
    }

    /// The shards, read with `CLUSTER SHARDS` from the first node that answers (over the
    /// connection of the last read while it works).
    pub async fn shards(&self) -> RedisResult<Vec<Shard>> {
        let mut kept = self.topology.lock().await;
        let mut problems = Vec::new();
        let mut candidates = self.candidates();
        if let Some((node, _)) = kept.as_ref() {
            candidates.retain(|c| c != node);
            candidates.insert(0, node.clone());
        }
        for node in candidates {
            let cached = kept.take().filter(|(n, _)| *n == node).map(|(_, c)| c);
            let attempt = async {
                let mut conn = match cached {
                    Some(conn) => conn,
                    None => {
                        self.node_client(&node, false)?
                            .get_multiplexed_async_connection_with_config(&crate::redis_link::async_config())
                            .await?
                    }
                };
                let value = redis::cmd("CLUSTER").arg("SHARDS").query_async::<Value>(&mut conn).await?;
                RedisResult::Ok((value, conn))
            };
            let answer = tokio::time::timeout(RESPONSE_TIMEOUT * 2, attempt)
                .await
                .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
            match answer {
                Ok((value, conn)) => {
                    *kept = Some((node.clone(), conn));
                    let shards = parse_shards(&value, self.settings.tls.is_some()).map_err(|problem| {
                        redis::RedisError::from(std::io::Error::other(format!(
                            "{node} answered CLUSTER SHARDS unexpectedly: {problem}"
                        )))
                    })?;
                    let mut nodes: Vec<HostPort> = shards.iter().flat_map(|s| s.nodes.iter().cloned()).collect();
                    nodes.dedup();
                    if !nodes.is_empty() {
                        *self.known.lock().expect("not poisoned") = nodes;
                    }
                    return Ok(shards);
                }
                Err(e) => {
                    if crate::redis_tls::certificate_problem(&e).is_some() || is_auth(&e) {
                        return Err(e);
                    }
                    problems.push(format!("{node}: {e}"));
                }
            }
        }
        Err(std::io::Error::other(format!("no cluster node answered: {}", problems.join("; "))).into())
    }

    /// A classic (RESP2) pub/sub connection to any node that answers: a plain `PUBLISH` reaches
    /// every node of a cluster, so one such connection hears all of them.
    pub async fn any_node_pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let mut last = None;
        for node in self.candidates() {
            let attempt = async { self.node_client(&node, false)?.get_async_pubsub().await };
            match tokio::time::timeout(RESPONSE_TIMEOUT, attempt).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no cluster nodes configured").into()))
    }
}

fn is_auth(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

fn node_info(settings: &ClusterSettings, node: &HostPort) -> RedisResult<redis::ConnectionInfo> {
    let addr = match settings.tls {
        Some(_) => ConnectionAddr::TcpTls {
            host: node.host().to_owned(),
            port: node.port(),
            insecure: false,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(node.host().to_owned(), node.port()),
    };
    Ok(addr
        .into_connection_info()?
        .set_redis_settings(settings.redis.clone())
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// The fields of a RESP3 map or a RESP2 flat key/value array.
fn fields(value: &Value) -> Vec<(&str, &Value)> {
    match value {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Array(items) => items.chunks(2).filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?))).collect(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        v => text(v)?.parse().ok(),
    }
}

/// `CLUSTER SHARDS`: per shard `slots` (flat start/end pairs) and `nodes` (each with `ip`,
/// `endpoint`, `port`, `tls-port`, `role`, `health`).
pub(crate) fn parse_shards(value: &Value, tls: bool) -> Result<Vec<Shard>, String> {
    let Value::Array(list) = value else { return Err(format!("not an array: {value:?}")) };
    let mut shards = Vec::new();
    for shard in list {
        let shard_fields = fields(shard);
        let get = |name: &str| shard_fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let slots: Vec<i64> = match get("slots") {
            Some(Value::Array(s)) => s.iter().filter_map(number).collect(),
            _ => return Err(format!("a shard without slots: {shard:?}")),
        };
        let slots = slots
            .chunks(2)
            .filter_map(|p| match p {
                [a, b] => Some((u16::try_from(*a).ok()?, u16::try_from(*b).ok()?)),
                _ => None,
            })
            .collect();
        let mut master = None;
        let mut nodes = Vec::new();
        if let Some(Value::Array(list)) = get("nodes") {
            for node in list {
                let node_fields = fields(node);
                let get = |name: &str| node_fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
                let endpoint = get("endpoint").and_then(text).filter(|e| !e.is_empty() && *e != "?");
                let Some(host) = endpoint.or_else(|| get("ip").and_then(text)) else { continue };
                let port = if tls { get("tls-port").or(get("port")) } else { get("port") };
                let Some(port) = port.and_then(number).and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
                    continue;
                };
                let addr = HostPort::new(host, port);
                let role = get("role").and_then(text).unwrap_or("");
                let health = get("health").and_then(text).unwrap_or("");
                if role == "master" && health == "online" {
                    master = Some(addr.clone());
                }
                nodes.push(addr);
            }
        }
        shards.push(Shard { slots, master, nodes });
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk(health),
        ])
    }

    #[test]
    fn shards_name_their_healthy_master() {
        let answer = Value::Array(vec![
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![Value::Int(0), Value::Int(5460), Value::Int(10923), Value::Int(10930)]),
                bulk("nodes"),
                Value::Array(vec![node(7001, "replica", "online"), node(7000, "master", "online")]),
            ]),
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![Value::Int(5461), Value::Int(10922)]),
                bulk("nodes"),
                Value::Array(vec![node(7002, "master", "failed"), node(7003, "replica", "online")]),
            ]),
        ]);
        let shards = parse_shards(&answer, false).unwrap();
        assert_eq!(shards[0].slots, [(0, 5460), (10923, 10930)]);
        assert_eq!(shards[0].master, Some(HostPort::new("127.0.0.1", 7000)));
        assert_eq!(shards[0].nodes.len(), 2);
        assert_eq!(shards[1].master, None, "a failed master is no master");
        assert!(parse_shards(&bulk("x"), false).is_err());
    }
}
