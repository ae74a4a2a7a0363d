//! The real `wsserver` and `webserver` binaries as child processes, for what an in-process `run`
//! cannot show: signal handling and exit codes (SIGTERM), and an instance dying outright
//! (SIGKILL). The binaries (and the load generator `loadgen`, see [`loadgen_bin`]) are built
//! once per test process with the same profile as the test (`cargo build --bin …`, a no-op when
//! fresh); `CRIER_TEST_BIN_DIR` points at prebuilt ones instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::http;
use crate::nginx::free_port;
use crate::process::{signal, ChildProcess};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The directory holding `wsserver`, `webserver` and `loadgen`, built if needed.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CRIER_TEST_BIN_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        // target/<profile>/deps/<test binary> → target/<profile>
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).args([
            "build",
            "--quiet",
            "--bin",
            "wsserver",
            "--bin",
            "webserver",
            "--bin",
            "loadgen",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the server and loadgen binaries");
        assert!(status.success(), "cargo build --bin wsserver --bin webserver --bin loadgen failed");
        dir
    })
    .clone()
}

/// The `loadgen` binary (crate `crier-loadgen`), built by [`bin_dir`] if needed.
pub fn loadgen_bin() -> PathBuf {
    bin_dir().join("loadgen")
}

/// A server binary running as a child process (killed on drop).
pub struct ServerProcess {
    name: &'static str,
    process: ChildProcess,
    /// The main listener's TCP address (websockets for wsserver, HTTP for webserver);
    /// `0.0.0.0:0` for a server on a unix socket ([`ServerProcess::wsserver_on_unix`]).
    pub addr: SocketAddr,
    /// The main listener as nginx's `server` line names it: `127.0.0.1:port` or `unix:/path`.
    pub upstream: String,
    /// wsserver's admin listener (None for webserver).
    pub admin: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `wsserver` on free loopback ports with `--redis-url redis_url` and `args`, and
    /// waits until its /readyz answers 200.
    pub async fn wsserver(redis_url: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::wsserver_at(redis_url, free_port(), free_port(), args).await
    }

    /// Like [`ServerProcess::wsserver`], on given addresses: a restarted instance comes back
    /// where nginx and its clients expect it.
    pub async fn wsserver_at(redis_url: &str, addr: SocketAddr, admin: SocketAddr, args: &[&str]) -> ServerProcess {
        ServerProcess::wsserver_with(&["--redis-url".to_owned(), redis_url.to_owned()], addr, admin, args).await
    }

    /// Like [`ServerProcess::wsserver_at`] with any Redis flags (`--redis-sentinels …`, TLS
    /// files; see [`crate::topology::Topology::crier_flags`]) instead of a URL.
    pub async fn wsserver_with(
        redis_flags: &[String],
        addr: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
    ) -> ServerProcess {
        let mut all = vec!["--listen".to_owned(), addr.to_string(), "--admin-listen".into(), admin.to_string()];
        all.extend(redis_flags.iter().cloned());
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = ServerProcess::spawn("wsserver", &all, addr, Some(admin));
        server.wait_ready(&format!("http://{admin}/readyz")).await;
        server
    }

    /// Like [`ServerProcess::wsserver`], with extra environment variables (the hand-off's
    /// test-only switches).
    pub async fn wsserver_with_env(redis_url: &str, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let (addr, admin) = (free_port(), free_port());
        let mut all = vec![
            "--listen".to_owned(),
            addr.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--redis-url".into(),
            redis_url.into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut command = Command::new(bin_dir().join("wsserver"));
        command.args(&all).env("RUST_LOG", "info").envs(env.iter().copied());
        let mut server = ServerProcess {
            name: "wsserver",
            process: ChildProcess::spawn("wsserver", command),
            addr,
            upstream: addr.to_string(),
            admin: Some(admin),
        };
        server.wait_ready(&format!("http://{admin}/readyz")).await;
        server
    }

    /// Starts `wsserver` listening on the unix socket `socket` (admin on a free loopback port)
    /// with `--redis-url redis_url` and `args`, and waits until its /readyz answers 200.
    pub async fn wsserver_on_unix(redis_url: &str, socket: &std::path::Path, args: &[&str]) -> ServerProcess {
        let mut server = ServerProcess::wsserver_on_unix_unready(redis_url, socket, args);
        let admin = server.admin.expect("admin listener");
        server.wait_ready(&format!("http://{admin}/readyz")).await;
        server
    }

    /// Like [`ServerProcess::wsserver_on_unix`] without waiting: for a start meant to fail.
    pub fn wsserver_on_unix_unready(redis_url: &str, socket: &std::path::Path, args: &[&str]) -> ServerProcess {
        let admin = free_port();
        let listen = format!("unix:{}", socket.display());
        let mut all = vec![
            "--listen".to_owned(),
            listen.clone(),
            "--admin-listen".into(),
            admin.to_string(),
            "--redis-url".into(),
        ];
        all.push(redis_url.into());
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = ServerProcess::spawn("wsserver", &all, SocketAddr::from(([0, 0, 0, 0], 0)), Some(admin));
        server.upstream = listen;
        server
    }

    /// Starts `webserver` on a free loopback port with `--redis-url redis_url` and `args`,
    /// and waits until its /healthz answers 200.
    pub async fn webserver(redis_url: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::webserver_with(&["--redis-url".to_owned(), redis_url.to_owned()], free_port(), args).await
    }

    /// Starts `webserver` on `addr` with any Redis flags and `args`, and waits until its
    /// /healthz answers 200.
    pub async fn webserver_with(redis_flags: &[String], addr: SocketAddr, args: &[&str]) -> ServerProcess {
        let mut all = vec!["--listen".to_owned(), addr.to_string()];
        all.extend(redis_flags.iter().cloned());
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = ServerProcess::spawn("webserver", &all, addr, None);
        server.wait_ready(&format!("http://{addr}/healthz")).await;
        server
    }

    fn spawn(name: &'static str, args: &[String], addr: SocketAddr, admin: Option<SocketAddr>) -> ServerProcess {
        let mut command = Command::new(bin_dir().join(name));
        command.args(args).env("RUST_LOG", "info");
        ServerProcess { name, process: ChildProcess::spawn(name, command), addr, upstream: addr.to_string(), admin }
    }

    async fn wait_ready(&mut self, url: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = false;
        while !self.has_exited() && Instant::now() < deadline {
            if http::try_get(url).await.is_ok_and(|r| r.status == 200) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !self.has_exited(),
            "{} exited during startup ({:?}); output:\n{}",
            self.name,
            self.process.status(),
            self.output()
        );
        assert!(
            ready,
            "{} did not answer 200 on {url} within {READY_TIMEOUT:?}; output:\n{}",
            self.name,
            self.output()
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        self.process.has_exited()
    }

    /// Sends a signal by name ("TERM", "KILL", …).
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("process was started");
        assert!(signal(pid, name), "kill -{name} {pid}");
    }

    /// Waits for the process to exit, up to `timeout`; its exit status, or None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout).await
    }

    /// SIGKILLs the process (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// `http://<admin><path>` (wsserver only).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("wsserver has an admin listener"))
    }

    /// One unlabelled sample from this wsserver's /metrics.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = http::try_get(&self.admin_url("/metrics")).await.ok()?.body;
        crate::prometheus::sample(&text, name)
    }

    /// The end of the process's stdout and stderr so far.
    pub fn output(&self) -> String {
        self.process.output()
    }
}
