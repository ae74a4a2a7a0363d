//! Browser tests: a Node.js script under `tests/browser/` drives headless Chromium (Debian's
//! `chromium`) with playwright-core against the stack.
//!
//! The script talks back over a line protocol: a stdout line `@@crier <command>` asks the test
//! to act on the stack (say, restart wsserver); the test answers `ok` on the script's stdin.
//! Every other line is the script's report, kept for the failure message.
//!
//! Needs `node` and `tests/browser/node_modules` (`npm ci` there; `scripts/test.sh` runs it).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{KeyPrefix, Name};
use tokio::sync::mpsc;

use crate::process::{find_program, stop_child};
use crate::redis_server::Redis;

/// Prefix of the script's requests on stdout.
pub const REQUEST_PREFIX: &str = "@@crier ";

/// `tests/browser/`.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where screenshots go: `$CARGO_TARGET_DIR/test-artifacts`, or `target/test-artifacts` of the
/// workspace.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("test-artifacts")
}

/// The Chromium binary: `CRIER_TEST_CHROMIUM`, PATH, or Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    find_program("CRIER_TEST_CHROMIUM", "chromium", &["/usr/bin/chromium", "/usr/bin/chromium-browser"])
}

/// Panics with what to do when the Node.js dependencies are not installed.
pub fn require_node_modules() {
    let module = browser_dir().join("node_modules").join("playwright-core");
    assert!(module.is_dir(), "{} is missing: run `npm ci` in tests/browser (scripts/test.sh does)", module.display());
}

/// Creates (or replaces) an account directly in Redis, as `webserver users add` does.
pub async fn add_account(redis: &Redis, prefix: &KeyPrefix, name: &str, password: &str, groups: &[&str]) {
    let store = webserver::store::Store::new(
        &service::redis_target::RedisTarget::single(redis.client().clone()),
        prefix.clone(),
        protocol::HistorySettings::off(),
        Default::default(),
    )
    .expect("webserver store");
    let account = webserver::accounts::Account {
        name: Name::parse(name).expect("valid user name"),
        password_hash: webserver::accounts::hash_password(password).expect("hashable password"),
        groups: groups.iter().map(|g| Name::parse(g).expect("valid group name")).collect(),
    };
    store.put_account(&account).await.expect("store account");
}

/// A running Node.js script (killed on drop). Its output is read by threads, so the test's
/// runtime needs no process support.
pub struct NodeScript {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    output: Arc<Mutex<Vec<String>>>,
}

impl NodeScript {
    /// Starts `node <args...>` (a script and its arguments) in `tests/browser` with `env` added.
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> NodeScript {
        let node = find_program("CRIER_TEST_NODE", "node", &["/usr/bin/node", "/usr/local/bin/node"]);
        let mut command = Command::new(&node);
        command
            .args(args)
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", node.display()));
        let output = Arc::new(Mutex::new(Vec::new()));

        let stderr = child.stderr.take().expect("piped stderr");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[node] {line}");
                sink.lock().expect("output lock").push(line);
            }
        });

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeScript { stdin: child.stdin.take(), child, stdout: rx, output }
    }

    /// The next request of the script, or `None` once its stdout closed (it exited).
    pub async fn next_request(&mut self) -> Option<String> {
        while let Some(line) = self.stdout.recv().await {
            println!("[node] {line}");
            if let Some(request) = line.strip_prefix(REQUEST_PREFIX) {
                return Some(request.trim().to_owned());
            }
            self.output.lock().expect("output lock").push(line);
        }
        None
    }

    /// Answers the script's last request.
    pub fn reply(&mut self, answer: &str) {
        let stdin = self.stdin.as_mut().expect("the script's stdin is open");
        stdin.write_all(format!("{answer}\n").as_bytes()).expect("write to the script");
        stdin.flush().expect("flush the script's stdin");
    }

    /// Waits for the script to exit (killing it after `timeout`).
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(None) => {
                    stop_child(&mut self.child, "TERM", Duration::from_secs(5));
                    return Err(format!("the script did not exit within {timeout:?}"));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Everything the script printed so far (requests excepted).
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").join("\n")
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        // SIGTERM lets playwright close Chromium; SIGKILL after the grace period.
        stop_child(&mut self.child, "TERM", Duration::from_secs(5));
    }
}
