//! A Sentinel-managed Redis for failover tests: a master and a replica (each a [`Redis`] with a
//! loopback TCP port beside the harness's Unix socket) and three `redis-sentinel` processes
//! watching them with a one-second down-after time, all on loopback ports of this test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{find_program, stop_child, tail};
use crate::redis_server::{free_port, Redis, RedisOptions};
use crate::tempdir::TempDir;
use crate::wait::wait_until;

/// The master name the Sentinels monitor.
pub const MASTER_NAME: &str = "crier-master";
const READY: Duration = Duration::from_secs(30);

/// One `redis-sentinel` (killed on drop).
struct SentinelProcess {
    port: u16,
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
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let master = Redis::start_with(RedisOptions { port: Some(free_port()), ..RedisOptions::default() }).await;
        let master_port = master.port().expect("tcp port");
        let replica = Redis::start_with(RedisOptions {
            port: Some(free_port()),
            args: vec!["--replicaof".into(), "127.0.0.1".into(), master_port.to_string()],
            ..RedisOptions::default()
        })
        .await;
        wait_until(READY, "the replica is in sync", || async {
            let info: String = replica.query(redis::cmd("INFO").arg("replication")).await;
            info.contains("master_link_status:up")
        })
        .await;
        let bin = find_program("CRIER_TEST_REDIS_SENTINEL", "redis-sentinel", &["/usr/bin/redis-sentinel"]);
        let sentinels: Vec<SentinelProcess> = (0..3).map(|_| spawn_sentinel(&bin, master_port)).collect();
        let set = SentinelSet { master, replica, sentinels };
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

    /// `127.0.0.1:<port>` of each Sentinel, comma-separated.
    pub fn sentinel_list(&self) -> String {
        self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",")
    }

    /// The Redis flags of both Crier servers for this set.
    pub fn crier_flags(&self) -> Vec<String> {
        vec![
            "--redis-url".into(),
            "redis://sentinel-managed/0".into(),
            "--redis-sentinels".into(),
            self.sentinel_list(),
            "--redis-master".into(),
            MASTER_NAME.into(),
        ]
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

fn spawn_sentinel(bin: &PathBuf, master_port: u16) -> SentinelProcess {
    let dir = TempDir::new("sentinel").expect("sentinel temp dir");
    let port = free_port();
    let config = dir.path().join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.path().display()
        ),
    )
    .expect("write sentinel.conf");
    let child = Command::new(bin)
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    SentinelProcess { port, dir, child }
}
