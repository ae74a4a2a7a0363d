//! A Sentinel-managed Redis for failover tests: a master and a replica (each a [`Redis`] with a
//! loopback TCP port beside the harness's Unix socket) and three `redis-sentinel` processes
//! watching them with a one-second down-after time, all on loopback ports of this test.
//! [`SentinelSet::start_tls`] makes every link TLS (replication, Sentinel to Redis, Sentinel to
//! Sentinel, Crier to both); the Sentinels then also keep a plain port for the harness.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{find_program, stop_child, tail};
use crate::redis_server::{free_port, Redis, RedisOptions};
use crate::tempdir::TempDir;
use crate::test_ca::TestCa;
use crate::wait::wait_until;

/// The master name the Sentinels monitor.
pub const MASTER_NAME: &str = "crier-master";
const READY: Duration = Duration::from_secs(30);

/// One `redis-sentinel` (killed on drop).
struct SentinelProcess {
    /// Plain port (the harness's; Crier's too without TLS).
    port: u16,
    /// TLS port (Crier's) in a TLS set.
    tls_port: Option<u16>,
    dir: TempDir,
    child: Child,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child, "KILL", Duration::ZERO);
    }
}

/// A master, a replica and three Sentinels, ready: every Sentinel knows the replica and the other
/// two Sentinels.
pub struct SentinelSet {
    pub master: Redis,
    pub replica: Redis,
    sentinels: Vec<SentinelProcess>,
    /// The CA of a TLS set, and the directory holding its files (removed last).
    tls: Option<(TestCa, TempDir)>,
}

impl SentinelSet {
    /// Everything over plain TCP.
    pub async fn start() -> SentinelSet {
        SentinelSet::start_with(None).await
    }

    /// Everything over TLS with one test CA whose server certificate names `localhost` and
    /// `127.0.0.1` (Sentinels name the master by address). Master and replica listen with TLS
    /// only (their plain port is off; the harness uses their Unix sockets) and replicate over
    /// TLS; the Sentinels talk TLS to them and to each other (`tls-replication yes`).
    pub async fn start_tls() -> SentinelSet {
        let dir = TempDir::new("sentinel-ca").expect("a directory for the test CA");
        let ca = TestCa::generate_naming(dir.path(), "DNS:localhost,IP:127.0.0.1");
        SentinelSet::start_with(Some((ca, dir))).await
    }

    async fn start_with(tls: Option<(TestCa, TempDir)>) -> SentinelSet {
        let ca = tls.as_ref().map(|(ca, _)| ca.clone());
        // Both replicate over TLS in a TLS set: after a failover the old master follows the new.
        let server = |mut args: Vec<String>| match &ca {
            Some(ca) => {
                args.extend(["--tls-replication".into(), "yes".into()]);
                RedisOptions { tls_ca: Some(ca.clone()), args, ..RedisOptions::default() }
            }
            None => RedisOptions { port: Some(free_port()), args, ..RedisOptions::default() },
        };
        let master = Redis::start_with(server(Vec::new())).await;
        let master_port = master.tls_port().or(master.port()).expect("a tcp port");
        let replica =
            Redis::start_with(server(vec!["--replicaof".into(), "127.0.0.1".into(), master_port.to_string()])).await;
        wait_until(READY, "the replica is in sync", || async {
            let info: String = replica.query(redis::cmd("INFO").arg("replication")).await;
            info.contains("master_link_status:up")
        })
        .await;
        let bin = find_program("CRIER_TEST_REDIS_SENTINEL", "redis-sentinel", &["/usr/bin/redis-sentinel"]);
        let sentinels: Vec<SentinelProcess> = (0..3).map(|_| spawn_sentinel(&bin, master_port, ca.as_ref())).collect();
        let set = SentinelSet { master, replica, sentinels, tls };
        for sentinel in &set.sentinels {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", sentinel.port)).expect("client");
            wait_until(READY, "every Sentinel knows the replica and the two other Sentinels", || {
                let client = client.clone();
                async move {
                    let Ok(Ok(mut conn)) =
                        tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection()).await
                    else {
                        return false;
                    };
                    let replicas: redis::RedisResult<Vec<redis::Value>> =
                        redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME).query_async(&mut conn).await;
                    let others: redis::RedisResult<Vec<redis::Value>> =
                        redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME).query_async(&mut conn).await;
                    matches!((replicas, others), (Ok(r), Ok(o)) if r.len() == 1 && o.len() == 2)
                }
            })
            .await;
        }
        set
    }

    /// `127.0.0.1:<port>` of each Sentinel (its TLS port in a TLS set), comma-separated.
    pub fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.tls_port.unwrap_or(s.port)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether every link is TLS ([`SentinelSet::start_tls`]).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The Redis flags of both Crier servers for this set (`rediss://` and the CA and client
    /// certificate in a TLS set).
    pub fn crier_flags(&self) -> Vec<String> {
        let scheme = if self.tls() { "rediss" } else { "redis" };
        let mut flags = vec![
            "--redis-url".into(),
            format!("{scheme}://sentinel-managed/0"),
            "--redis-sentinels".into(),
            self.sentinel_list(),
            "--redis-master".into(),
            MASTER_NAME.into(),
        ];
        if let Some((ca, _)) = &self.tls {
            flags.extend(ca.crier_args());
        }
        flags
    }

    /// The ports the first Sentinel knows the replicas and the other Sentinels by (`SENTINEL
    /// REPLICAS`, `SENTINEL SENTINELS`): their TLS ports in a TLS set.
    pub async fn known_ports(&self) -> (Vec<u16>, Vec<u16>) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinels[0].port)).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect to a Sentinel");
        let mut ports = Vec::new();
        for what in ["REPLICAS", "SENTINELS"] {
            let entries: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg(what)
                .arg(MASTER_NAME)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("SENTINEL {what}: {e}"));
            ports.push(entries.iter().map(|e| e["port"].parse().expect("a port")).collect());
        }
        let sentinels = ports.pop().expect("sentinels");
        (ports.pop().expect("replicas"), sentinels)
    }

    /// Every Sentinel's TLS port (empty in a plain set).
    pub fn tls_ports(&self) -> Vec<u16> {
        self.sentinels.iter().filter_map(|s| s.tls_port).collect()
    }

    /// The master address the first Sentinel reports now.
    pub async fn reported_master_port(&self) -> Option<u16> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinels[0].port)).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let addr: Option<(String, u16)> =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME).query_async(&mut conn).await.ok()?;
        addr.map(|(_, port)| port)
    }

    /// `SENTINEL FAILOVER`: promote the replica while the master still runs (it is demoted).
    pub async fn force_failover(&self) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinels[0].port)).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect to a Sentinel");
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .expect("SENTINEL FAILOVER");
    }

    /// The Sentinels' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("--- sentinel {}:\n{}", s.port, tail(&s.dir.path().join("sentinel.log"), 3000)))
            .collect()
    }
}

fn spawn_sentinel(bin: &PathBuf, master_port: u16, ca: Option<&TestCa>) -> SentinelProcess {
    let dir = TempDir::new("sentinel").expect("sentinel temp dir");
    let port = free_port();
    let tls_port = ca.map(|_| free_port());
    let config = dir.path().join("sentinel.conf");
    let mut text =
        format!("port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n", dir = dir.path().display());
    if let (Some(ca), Some(tls_port)) = (ca, tls_port) {
        // tls-replication: TLS to the master and replica, and between Sentinels (they announce
        // their tls-port to each other).
        text.push_str(&format!(
            "tls-port {tls_port}\ntls-replication yes\ntls-cert-file {}\ntls-key-file {}\n\
             tls-client-cert-file {}\ntls-client-key-file {}\ntls-ca-cert-file {}\n",
            ca.server_cert().display(),
            ca.server_key().display(),
            ca.client_cert().display(),
            ca.client_key().display(),
            ca.ca().display()
        ));
    }
    text.push_str(&format!(
        "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 10000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n"
    ));
    std::fs::write(&config, text).expect("write sentinel.conf");
    let child = Command::new(bin)
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    SentinelProcess { port, tls_port, dir, child }
}
