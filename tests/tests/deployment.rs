//! Deployment bundle checks: runs `scripts/test-deploy.sh` (systemd service and socket units verified, the services rated by
//! `systemd-analyze`, `nginx -t` on the production site, `scripts/install.sh` into a scratch
//! DESTDIR, exit codes, and the generated `docs/configuration.md` against the binaries' `--help`).
//!
//! The script runs the debug binaries of `webserver` and `wsserver`. Test runners build only test
//! targets, so they are built here when missing (`cargo build --bin webserver --bin wsserver`).

use crier_tests::built_binaries::{debug_bin_dir, workspace_root};
use std::process::Command;

#[test]
fn deployment_bundle_passes_its_checks() {
    let root = workspace_root();
    let bin_dir = debug_bin_dir();

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
