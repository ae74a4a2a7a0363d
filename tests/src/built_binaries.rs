//! The workspace's debug binaries for tests that run shell scripts against them
//! (scripts/test-deploy.sh, scripts/test-package.sh): where they are, built when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of tests/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `target/debug` (or `$CARGO_TARGET_DIR/debug`) holding `webserver` and `wsserver`, which are
/// built first when either is missing.
pub fn debug_bin_dir() -> PathBuf {
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let bin_dir = target.join("debug");
    if !["webserver", "wsserver"].iter().all(|b| bin_dir.join(b).is_file()) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", "webserver", "--bin", "wsserver"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin webserver --bin wsserver failed");
    }
    bin_dir
}
