//! The fast subset of the Autobahn|Testsuite conformance run (scripts/autobahn.sh): framing,
//! pings, reserved bits, opcodes, fragmentation, UTF-8, close handling and auto-fragmentation
//! (cases 1.* to 7.* and 10.*). The full run, with the performance cases, is the script itself.
//!
//! Every machine that runs the suite is expected to run this subset: when wstest cannot be
//! installed (no Python 2.7, or its install from PyPI failed: the script exits 3) the test fails
//! and says why. Only `CRIER_TEST_SKIP_AUTOBAHN=1`, set on purpose, skips it. `AUTOBAHN_CASES`
//! overrides the subset.

use std::process::{Command, Output};

use crier_tests::server_process::bin_dir;
use crier_tests::TempDir;

const SUBSET: &str = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*";
/// scripts/autobahn.sh's exit status when wstest cannot be installed.
const CANNOT_INSTALL: i32 = 3;
/// The explicit opt-out: set to 1 to skip the subset on a machine that cannot run wstest.
const OPT_OUT: &str = "CRIER_TEST_SKIP_AUTOBAHN";

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Runs scripts/autobahn.sh with `envs` added to the environment.
fn autobahn(envs: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(format!("{ROOT}/scripts/autobahn.sh"))
        .current_dir(ROOT)
        .envs(envs.iter().copied())
        .output()
        .expect("run scripts/autobahn.sh")
}

/// The suite's verdict on one run of the script: Err says what failed, and for a machine where
/// wstest cannot be installed, how to make it installable or to opt out.
fn verdict(cases: &str, output: &Output) -> Result<(), String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok(()),
        Some(CANNOT_INSTALL) => Err(format!(
            "wstest (Autobahn|Testsuite) cannot be installed here: it needs Python 2.7 (pyenv, or \
             AUTOBAHN_PYTHON2) and PyPI. Fix that, or set {OPT_OUT}=1 to run the suite without \
             the conformance subset.\n{stderr}"
        )),
        _ => Err(format!("Autobahn cases {cases} did not all pass ({}):\n{stdout}\n{stderr}", output.status)),
    }
}

#[test]
fn autobahn_fast_subset_passes() {
    if std::env::var(OPT_OUT).as_deref() == Ok("1") {
        eprintln!("NOTICE: Autobahn conformance subset SKIPPED: {OPT_OUT}=1");
        return;
    }
    let reports = TempDir::new("autobahn").expect("report dir");
    let cases = std::env::var("AUTOBAHN_CASES").unwrap_or_else(|_| SUBSET.to_owned());
    let wsserver = bin_dir().join("wsserver");
    let output = autobahn(&[
        ("AUTOBAHN_CASES", &cases),
        ("AUTOBAHN_REPORTS", reports.path().to_str().expect("UTF-8 temp path")),
        ("CRIER_WSSERVER_BIN", wsserver.to_str().expect("UTF-8 binary path")),
    ]);
    eprintln!("{}{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout));
    if let Err(why) = verdict(&cases, &output) {
        panic!("{why}");
    }
}

#[test]
fn a_machine_that_cannot_install_wstest_fails_the_subset_and_names_the_opt_out() {
    let dir = TempDir::new("autobahn-no-python2").expect("temp dir");
    let venv = dir.path().join("venv");
    let output = autobahn(&[
        ("AUTOBAHN_PYTHON2", "/nonexistent/python2.7"),
        ("AUTOBAHN_VENV", venv.to_str().expect("UTF-8 temp path")),
    ]);
    assert_eq!(output.status.code(), Some(CANNOT_INSTALL), "{}", String::from_utf8_lossy(&output.stderr));
    let why = verdict(SUBSET, &output).expect_err("an uninstallable wstest is a failure, not a pass");
    assert!(why.contains(OPT_OUT), "{why}");
    assert!(!venv.exists(), "a failed install leaves no half-made virtualenv");
}
