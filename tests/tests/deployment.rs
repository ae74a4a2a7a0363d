//! Deployment bundle checks: runs `scripts/test-deploy.sh` (systemd service and socket units verified, the services rated by
//! `systemd-analyze`, `nginx -t` on the production site, `scripts/install.sh` into a scratch
//! DESTDIR, exit codes, and the generated `docs/configuration.md` against the binaries' `--help`).
//!
//! The script runs the debug binaries of `webserver` and `wsserver`. Test runners build only test
//! targets, so they are built here when missing (`cargo build --bin webserver --bin wsserver`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

#[test]
fn deployment_bundle_passes_its_checks() {
    let root = workspace_root();
    let bin_dir = target_dir(&root).join("debug");
    if !["webserver", "wsserver"].iter().all(|b| bin_dir.join(b).is_file()) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", "webserver", "--bin", "wsserver"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin webserver --bin wsserver failed");
    }

    let output = Command::new("bash")
        .arg(root.join("scripts/test-deploy.sh"))
        .current_dir(&root)
        .env("CRIER_BIN_DIR", &bin_dir)
        .output()
        .expect("run bash scripts/test-deploy.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        output.status.success() && summary.ends_with(" 0 failed"),
        "scripts/test-deploy.sh failed ({}): {summary}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}
