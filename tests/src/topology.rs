//! The Redis a test runs Crier against, seen from both sides: the Redis flags every Crier process
//! takes, and the harness's own commands and publishes, routed as that Redis needs. A single
//! server ([`Redis`]) and a Sentinel set ([`SentinelSet`]) implement it, so one test body runs
//! against either, and a Redis Cluster ([`RedisCluster`]) too.

use std::future::Future;

use redis::FromRedisValue;

use crate::cluster::RedisCluster;
use crate::redis_server::Redis;
use crate::sentinel::SentinelSet;

/// A running Redis topology the tests can hand to Crier processes.
pub trait Topology {
    /// A short name for messages (`"single redis"`, `"sentinel"`).
    fn name(&self) -> &'static str;

    /// The flags every Crier process gets to reach this Redis (`--redis-url …`, TLS files,
    /// `--redis-sentinels …`).
    fn crier_flags(&self) -> Vec<String>;

    /// Runs one command on the harness's connection (to the master, or the node owning the
    /// key); panics on error or timeout.
    fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> impl Future<Output = T>;

    /// Publishes `message` on `channel` the way Crier's publisher does on this topology (PUBLISH,
    /// or SPUBLISH on a cluster); the number of receivers Redis reports.
    fn publish(&self, channel: &str, message: &str) -> impl Future<Output = i64>;

    /// The servers' logs, for failure messages.
    fn logs(&self) -> String;
}

impl Topology for Redis {
    fn name(&self) -> &'static str {
        "single redis"
    }

    /// The URL the servers take (TCP when started with a port, so that other processes reach it
    /// as another host would), plus TLS files when it speaks TLS.
    fn crier_flags(&self) -> Vec<String> {
        let url = match (self.test_ca(), self.port()) {
            (None, Some(port)) => format!("redis://127.0.0.1:{port}"),
            _ => self.server_url(),
        };
        let mut flags = vec!["--redis-url".to_owned(), url];
        flags.extend(self.server_args());
        flags
    }

    fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> impl Future<Output = T> {
        Redis::query(self, cmd)
    }

    fn publish(&self, channel: &str, message: &str) -> impl Future<Output = i64> {
        Redis::publish(self, channel, message)
    }

    fn logs(&self) -> String {
        self.log_tail()
    }
}

impl Topology for SentinelSet {
    fn name(&self) -> &'static str {
        if self.tls() {
            "sentinel over tls"
        } else {
            "sentinel"
        }
    }

    fn crier_flags(&self) -> Vec<String> {
        SentinelSet::crier_flags(self)
    }

    /// On the master the set started with (these tests fail nothing over).
    fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> impl Future<Output = T> {
        self.master.query(cmd)
    }

    fn publish(&self, channel: &str, message: &str) -> impl Future<Output = i64> {
        self.master.publish(channel, message)
    }

    fn logs(&self) -> String {
        format!("--- master:\n{}\n--- replica:\n{}\n{}", self.master.log_tail(), self.replica.log_tail(), self.logs())
    }
}

impl Topology for RedisCluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn crier_flags(&self) -> Vec<String> {
        RedisCluster::crier_flags(self)
    }

    /// Through a cluster connection, which routes by the command's key.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = self.connection().await;
        cmd.query_async(&mut conn).await.unwrap_or_else(|e| panic!("{cmd:?} on the cluster: {e}"))
    }

    /// `SPUBLISH`, as Crier publishes on a cluster.
    async fn publish(&self, channel: &str, message: &str) -> i64 {
        Topology::query(self, redis::cmd("SPUBLISH").arg(channel).arg(message)).await
    }

    fn logs(&self) -> String {
        RedisCluster::logs(self)
    }
}
