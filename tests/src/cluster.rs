//! A Redis Cluster for tests: six `redis-server --cluster-enabled yes` processes on loopback
//! ports (each a [`Redis`], with the harness's Unix socket beside), joined by
//! `redis-cli --cluster create … --cluster-replicas 1` into three masters with one replica each,
//! a two-second `cluster-node-timeout`, and ready once every node says `cluster_state:ok`, sees
//! three shards with a master each, and every replica's link to its master is up. Helpers read the topology (`CLUSTER
//! SHARDS`, `CLUSTER KEYSLOT`), publish on the right node, and move a slot between masters.

use std::process::{Command, Stdio};
use std::time::Duration;

use redis::Value;

use crate::process::find_program;
use crate::redis_server::{free_port, Redis, RedisOptions};
use crate::wait::wait_until;

/// Failure detection time of every node; a replica is promoted a little after it.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2000);
const READY: Duration = Duration::from_secs(60);

/// One shard as the test sees it: indexes into [`RedisCluster::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestShard {
    pub slots: Vec<(u16, u16)>,
    pub master: Option<usize>,
    pub replicas: Vec<usize>,
}

/// Three masters, three replicas.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    ports: Vec<u16>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let node = Redis::start_with(RedisOptions {
                port: Some(port),
                args: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    // The bus port defaults to port + 10000, beyond 65535 for a high free port.
                    "--cluster-port".into(),
                    free_port().to_string(),
                    "--cluster-node-timeout".into(),
                    NODE_TIMEOUT.as_millis().to_string(),
                    // A replica with stale data still takes over: the tests kill masters.
                    "--cluster-replica-validity-factor".into(),
                    "0".into(),
                ],
                ..RedisOptions::default()
            })
            .await;
            nodes.push(node);
            ports.push(port);
        }
        let cli = find_program("CRIER_TEST_REDIS_CLI", "redis-cli", &["/usr/bin/redis-cli"]);
        let output = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes, ports };
        cluster.wait_settled(&(0..6).collect::<Vec<_>>()).await;
        let this = &cluster;
        for i in 0..6 {
            wait_until(READY, "every replica is in sync with its master", || async move {
                let info: Option<String> = this.try_query(i, redis::cmd("INFO").arg("replication")).await;
                info.is_some_and(|info| info.contains("role:master") || info.contains("master_link_status:up"))
            })
            .await;
        }
        cluster
    }

    /// Waits until every node in `alive` says `cluster_state:ok` and reports three shards, each
    /// with a master among `alive`.
    pub async fn wait_settled(&self, alive: &[usize]) {
        for &i in alive {
            wait_until(READY, "every node reports cluster_state:ok and three shards with a master", || async move {
                let Some(info) = self.try_query::<String>(i, redis::cmd("CLUSTER").arg("INFO")).await else {
                    return false;
                };
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                let Some(shards) = self.shards_seen_by(i).await else { return false };
                shards.len() == 3 && shards.iter().all(|s| s.master.is_some_and(|m| alive.contains(&m)))
            })
            .await;
        }
    }

    /// The flags of both Crier servers for this cluster.
    pub fn crier_flags(&self) -> Vec<String> {
        let seeds: Vec<String> = self.ports.iter().take(3).map(|p| format!("127.0.0.1:{p}")).collect();
        vec!["--redis-url".into(), "redis://cluster".into(), "--redis-cluster-nodes".into(), seeds.join(",")]
    }

    /// `127.0.0.1:<port>` of every node.
    pub fn addresses(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    /// A command on node `i` over a fresh connection (failovers close the harness's); `None` on
    /// any error.
    pub async fn try_query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> Option<T> {
        let attempt = async {
            let mut conn = self.nodes[i].client().get_multiplexed_async_connection().await.ok()?;
            cmd.query_async(&mut conn).await.ok()
        };
        tokio::time::timeout(Duration::from_secs(3), attempt).await.ok().flatten()
    }

    /// Like [`RedisCluster::try_query`], panicking on failure.
    pub async fn query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> T {
        match self.try_query(i, cmd).await {
            Some(value) => value,
            None => panic!("redis command on node {i} (port {}) failed:\n{}", self.ports[i], self.nodes[i].log_tail()),
        }
    }

    fn index_of_port(&self, port: i64) -> Option<usize> {
        self.ports.iter().position(|p| i64::from(*p) == port)
    }

    /// `CLUSTER SHARDS` as node `i` sees it; a master counts only while its health is online.
    pub async fn shards_seen_by(&self, i: usize) -> Option<Vec<TestShard>> {
        let value: Value = self.try_query(i, redis::cmd("CLUSTER").arg("SHARDS")).await?;
        let Value::Array(list) = value else { return None };
        let mut shards = Vec::new();
        for shard in list {
            let fields = pairs(&shard);
            let slots: Vec<i64> = match get(&fields, "slots") {
                Some(Value::Array(s)) => s.iter().filter_map(int).collect(),
                _ => Vec::new(),
            };
            let slots = slots.chunks(2).map(|p| (p[0] as u16, p[1] as u16)).collect();
            let mut master = None;
            let mut replicas = Vec::new();
            if let Some(Value::Array(nodes)) = get(&fields, "nodes") {
                for node in nodes {
                    let f = pairs(node);
                    let Some(index) = get(&f, "port").and_then(int).and_then(|p| self.index_of_port(p)) else {
                        continue;
                    };
                    let role = get(&f, "role").and_then(text).unwrap_or_default();
                    let health = get(&f, "health").and_then(text).unwrap_or_default();
                    match (role.as_str(), health.as_str()) {
                        ("master", "online") => master = Some(index),
                        ("replica", _) => replicas.push(index),
                        _ => {}
                    }
                }
            }
            shards.push(TestShard { slots, master, replicas });
        }
        Some(shards)
    }

    /// The shards as the first answering node among `alive` sees them.
    pub async fn shards(&self, alive: &[usize]) -> Vec<TestShard> {
        for &i in alive {
            if let Some(shards) = self.shards_seen_by(i).await {
                return shards;
            }
        }
        panic!("no node answered CLUSTER SHARDS");
    }

    /// `CLUSTER KEYSLOT key`, asked of node `i`.
    pub async fn keyslot(&self, i: usize, key: &str) -> u16 {
        self.query::<u16>(i, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await
    }

    /// The master (index) owning `slot`, as seen by the first answering node among `alive`.
    pub async fn master_of_slot(&self, alive: &[usize], slot: u16) -> Option<usize> {
        let shards = self.shards(alive).await;
        shards.iter().find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))).and_then(|s| s.master)
    }

    /// `PUBSUB SHARDNUMSUB channel` on node `i`.
    pub async fn shardnumsub(&self, i: usize, channel: &str) -> Option<i64> {
        let answer: Option<(String, i64)> =
            self.try_query(i, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel)).await;
        answer.map(|(_, n)| n)
    }

    /// `CLUSTER MYID` of node `i`.
    pub async fn node_id(&self, i: usize) -> String {
        self.query(i, redis::cmd("CLUSTER").arg("MYID")).await
    }

    /// Moves `slot` from master `from` to master `to` as `redis-cli --cluster reshard` does:
    /// IMPORTING on the target, MIGRATING on the source, MIGRATE of its keys, then NODE on both
    /// masters (the source drops the slot, which unsubscribes its shard channels).
    pub async fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (self.node_id(from).await, self.node_id(to).await);
        let setslot = |state: &str, id: &str| redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id).clone();
        let _: () = self.query(to, &setslot("IMPORTING", &from_id)).await;
        let _: () = self.query(from, &setslot("MIGRATING", &to_id)).await;
        loop {
            let keys: Vec<String> =
                self.query(from, redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100)).await;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate.arg("127.0.0.1").arg(self.ports[to]).arg("").arg(0).arg(5000).arg("KEYS").arg(&keys);
            let _: Value = self.query(from, &migrate).await;
        }
        let _: () = self.query(to, &setslot("NODE", &to_id)).await;
        let _: () = self.query(from, &setslot("NODE", &to_id)).await;
        for i in 0..self.nodes.len() {
            if i != from && i != to {
                let _: Option<()> = self.try_query(i, &setslot("NODE", &to_id)).await;
            }
        }
    }

    /// A redis-rs cluster connection (routes by slot, follows MOVED), for test data.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let client = redis::cluster::ClusterClient::new(self.addresses().iter().map(|a| format!("redis://{a}")))
            .expect("cluster client");
        client.get_async_connection().await.expect("connect to the cluster")
    }

    /// The nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().zip(&self.ports).map(|(n, p)| format!("--- node {p}:\n{}\n", n.log_tail())).collect()
    }
}

fn pairs(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Array(items) => items.chunks(2).filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?))).collect(),
        Value::Map(items) => items.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        _ => Vec::new(),
    }
}

fn get<'a>(fields: &'a [(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        v => text(v)?.parse().ok(),
    }
}
