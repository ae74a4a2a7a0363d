//! Finding the external binaries and signalling child processes (through kill(1), since this
//! workspace forbids unsafe code).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
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
