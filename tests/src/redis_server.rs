//! A private `redis-server` listening on a Unix socket in a scratch directory (the harness's own
//! connection), and on request also on loopback TCP and TLS ports (what the servers under test
//! use in the TLS and Sentinel tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::FromRedisValue;

use crate::process::{find_program, stop_child, tail};
use crate::tempdir::TempDir;
use crate::test_ca::TestCa;

/// How to start a [`Redis`] beyond the default Unix socket.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Also listen on 127.0.0.1 on this port (plain TCP).
    pub port: Option<u16>,
    /// Also listen with TLS on a free 127.0.0.1 port, with certificates of a fresh [`TestCa`]
    /// (clients must present its client certificate).
    pub tls: bool,
    /// Listen with TLS using this CA's certificates instead of a fresh CA's (servers that
    /// replicate from each other, or Sentinels, must share one).
    pub tls_ca: Option<TestCa>,
    /// More `redis-server` arguments (e.g. `--replicaof 127.0.0.1 6379`).
    pub args: Vec<String>,
}

/// A TCP port nothing listens on right now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Name the harness gives its own Redis connections, so that [`Redis::client_count`] counts
/// only the servers' connections.
pub const HARNESS_CLIENT_NAME: &str = "crier-test-harness";

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` (killed on drop). No persistence: a restart starts empty.
pub struct Redis {
    dir: TempDir,
    socket: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    options: RedisOptions,
    tls: Option<(TestCa, u16)>,
}

impl Redis {
    /// Starts redis-server (`CRIER_TEST_REDIS_SERVER`, PATH, or /usr/bin/redis-server) and
    /// waits until it answers PING.
    pub async fn start() -> Redis {
        Redis::start_with(RedisOptions::default()).await
    }

    /// Like [`Redis::start`], with TCP, TLS or more arguments.
    pub async fn start_with(options: RedisOptions) -> Redis {
        let dir = TempDir::new("redis").expect("create redis temp dir");
        let socket = dir.path().join("redis.sock");
        let bin = find_program(
            "CRIER_TEST_REDIS_SERVER",
            "redis-server",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        );
        let client =
            redis::Client::open(format!("unix://{}", socket.display())).expect("redis client for a unix socket");
        let tls = match (&options.tls_ca, options.tls) {
            (Some(ca), _) => Some((ca.clone(), free_port())),
            (None, true) => Some((TestCa::generate(dir.path()), free_port())),
            (None, false) => None,
        };
        let mut redis =
            Redis { dir, socket, bin, child: None, client, conn: tokio::sync::Mutex::new(None), options, tls };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut command = Command::new(&self.bin);
        command.arg("--port").arg(self.options.port.unwrap_or(0).to_string()).arg("--bind").arg("127.0.0.1");
        if let Some((ca, port)) = &self.tls {
            command
                .arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(ca.server_cert())
                .arg("--tls-key-file")
                .arg(ca.server_key())
                .arg("--tls-ca-cert-file")
                .arg(ca.ca())
                // What it presents when it connects out (to a master, as a replica).
                .arg("--tls-client-cert-file")
                .arg(ca.client_cert())
                .arg("--tls-client-key-file")
                .arg(ca.client_key());
        }
        let child = command
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--daemonize")
            .arg("no")
            .args(&self.options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Connects and PINGs with a short backoff until Redis answers, bounded by 10 s.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut backoff = Duration::from_millis(5);
        let mut last_error;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server exited ({status}) before it was ready; log:\n{}", tail(&self.log_path(), 4000));
            }
            let attempt = async {
                let mut conn = self.client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            match tokio::time::timeout(Duration::from_secs(1), attempt).await {
                Ok(Ok(pong)) if pong == "PONG" => return,
                Ok(Ok(other)) => last_error = format!("PING answered {other:?}"),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "PING timed out".into(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "redis-server not ready after {READY_TIMEOUT:?} (last error: {last_error}); log:\n{}",
                    tail(&self.log_path(), 4000)
                );
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// `unix:///…/redis.sock`, the URL both servers take.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The URL the servers under test take: `rediss://localhost:<tls port>` with TLS, else
    /// [`Redis::url`].
    pub fn server_url(&self) -> String {
        match &self.tls {
            Some((_, port)) => format!("rediss://localhost:{port}"),
            None => self.url(),
        }
    }

    /// The flags the servers under test need besides `--redis-url` (TLS files).
    pub fn server_args(&self) -> Vec<String> {
        self.tls.as_ref().map(|(ca, _)| ca.crier_args()).unwrap_or_default()
    }

    /// The certificates of a TLS Redis.
    pub fn test_ca(&self) -> Option<&TestCa> {
        self.tls.as_ref().map(|(ca, _)| ca)
    }

    /// The TLS port, when started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(_, port)| *port)
    }

    /// The plain TCP port, when started with one.
    pub fn port(&self) -> Option<u16> {
        self.options.port
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last part of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 4000)
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The harness's shared connection (named [`HARNESS_CLIENT_NAME`]), opened on first use.
    pub async fn conn(&self) -> MultiplexedConnection {
        let mut cached = self.conn.lock().await;
        if let Some(conn) = cached.as_ref() {
            return conn.clone();
        }
        let mut conn = tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .expect("connecting to redis timed out")
            .expect("connect to redis");
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(HARNESS_CLIENT_NAME)
            .query_async::<()>(&mut conn)
            .await
            .expect("CLIENT SETNAME");
        *cached = Some(conn.clone());
        conn
    }

    /// Runs one command on the harness connection; panics on error or after 10 s.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = self.conn().await;
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("redis command {:?} failed: {e}", cmd_name(cmd)),
            Err(_) => panic!("redis command {:?} timed out", cmd_name(cmd)),
        }
    }

    /// `PUBLISH channel message`; returns the number of receivers Redis reports.
    pub async fn publish(&self, channel: &str, message: &str) -> i64 {
        self.query(redis::cmd("PUBLISH").arg(channel).arg(message)).await
    }

    /// Publishes every message to `channel` in one pipeline (back to back, in order).
    pub async fn publish_pipelined<I, M>(&self, channel: &str, messages: I)
    where
        I: IntoIterator<Item = M>,
        M: redis::ToRedisArgs,
    {
        let mut pipe = redis::pipe();
        for message in messages {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let mut conn = self.conn().await;
        tokio::time::timeout(COMMAND_TIMEOUT * 3, pipe.query_async::<()>(&mut conn))
            .await
            .expect("pipelined PUBLISH timed out")
            .expect("pipelined PUBLISH");
    }

    /// `PUBSUB NUMSUB channel`: how many connections subscribe to it.
    pub async fn numsub(&self, channel: &str) -> i64 {
        let (_, n): (String, i64) = self.query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)).await;
        n
    }

    /// `CLIENT LIST`, one line per connection, without the harness's own connections.
    pub async fn client_list(&self) -> Vec<String> {
        let list: String = self.query(redis::cmd("CLIENT").arg("LIST")).await;
        let own = format!(" name={HARNESS_CLIENT_NAME} ");
        list.lines().filter(|l| !l.trim().is_empty() && !l.contains(&own)).map(str::to_owned).collect()
    }

    /// Number of client connections Redis holds, not counting the harness's own.
    pub async fn client_count(&self) -> usize {
        self.client_list().await.len()
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// `EXISTS key`.
    pub async fn exists(&self, key: &str) -> bool {
        let n: i64 = self.query(redis::cmd("EXISTS").arg(key)).await;
        n > 0
    }

    /// `TTL key` (-2: no key, -1: no expiry).
    pub async fn ttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("TTL").arg(key)).await
    }

    /// Kills the server (SIGKILL, as a crash would) and reaps it. Clients see the socket vanish.
    pub async fn stop(&mut self) {
        self.conn.lock().await.take();
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "KILL", Duration::ZERO);
        }
    }

    /// Stops the server if running and starts a fresh one on the same socket path (empty: no
    /// persistence), waiting until it answers PING.
    pub async fn restart(&mut self) {
        self.stop().await;
        let _ = std::fs::remove_file(&self.socket);
        self.spawn().await;
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            assert!(crate::process::signal(pid, "STOP"), "SIGSTOP redis-server");
        }
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            assert!(crate::process::signal(pid, "CONT"), "SIGCONT redis-server");
        }
    }
}

fn cmd_name(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .take(2)
        .map(|a| match a {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            redis::Arg::Cursor => "<cursor>".into(),
            _ => "?".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server would ignore nothing but SIGKILL anyway.
            stop_child(&mut child, "KILL", Duration::ZERO);
        }
    }
}
