//! A private `redis-server` on a Unix socket in a scratch directory, for this crate's unit tests
//! of the Redis-facing steps (the end-to-end harness is tests/src/redis_server.rs).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running redis-server, killed and its directory removed on drop.
pub struct TestRedis {
    dir: PathBuf,
    child: Child,
    pub client: redis::Client,
}

impl TestRedis {
    /// Starts `CRIER_TEST_REDIS_SERVER` (default /usr/bin/redis-server) and waits until it
    /// answers PING (10 s at most).
    pub async fn start() -> TestRedis {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let bin = std::env::var("CRIER_TEST_REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
        let dir = std::env::temp_dir().join(format!(
            "crier-wsserver-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the redis temp dir");
        let socket = dir.join("redis.sock");
        let child = Command::new(&bin)
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (set CRIER_TEST_REDIS_SERVER): {e}"));
        let client = redis::Client::open(format!("unix://{}", socket.display())).expect("redis client");
        let redis = TestRedis { dir, child, client };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = async {
                let mut conn = redis.client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), ping).await {
                return redis;
            }
            assert!(Instant::now() < deadline, "redis-server not ready within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client.get_multiplexed_async_connection().await.expect("redis connection")
    }

    /// Waits (10 s at most) until `check` holds.
    pub async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
