//! Finding the external binaries, signalling child processes (through kill(1), since this
//! workspace forbids unsafe code), and [`ChildProcess`]: a child with its output in files,
//! waited for without blocking the runtime.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::tempdir::TempDir;

/// A child process whose stdout and stderr go to files in its own temp dir (killed on drop).
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    dir: TempDir,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `command` (stdin closed, stdout and stderr to files); `name` labels its temp dir.
    pub fn spawn(name: &str, mut command: Command) -> ChildProcess {
        let dir = TempDir::new(name).expect("temp dir for the child's output");
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).expect("stdout file");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        ChildProcess { name: name.to_owned(), child: Some(child), dir, status: None }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, once [`ChildProcess::has_exited`] has seen it.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.status = Some(status);
                return true;
            }
        }
        false
    }

    /// Waits for the process to exit, up to `timeout`; its exit status, or None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_exited() {
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILLs the process (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop_child(child, "KILL", Duration::ZERO);
        }
        self.has_exited();
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        let path = self.dir.path().join("stdout.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
    }

    /// The end of what the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        tail(&self.dir.path().join("stderr.log"), 8000)
    }

    /// The end of both, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.name,
            tail(&self.dir.path().join("stdout.log"), 8000),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "KILL", Duration::ZERO);
        }
    }
}

/// Resolves an external program: the environment variable if set, else the first match on PATH,
/// else the listed fallbacks.
pub fn find_program(env: &str, name: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    for fallback in fallbacks {
        let candidate = PathBuf::from(fallback);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} not found: set {env}, put it on PATH, or install it (scripts/test.sh does)");
}

/// Sends a signal by name ("TERM", "QUIT", "KILL", "STOP", "CONT") to a process.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Asks a child to stop with `sig`, waits up to `grace`, then kills it. Always reaps it.
pub fn stop_child(child: &mut Child, sig: &str, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if sig != "KILL" && signal(child.id(), sig) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether the current process runs as root (effective uid 0), read from /proc.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The last `max` bytes of a log file, for failure messages.
pub fn tail(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
