#!/usr/bin/env bash
# Run Crier's whole test suite: unit tests and the end-to-end tests, which start a real
# redis-server and a real nginx.
#
# Usage: scripts/test.sh [extra args for cargo nextest run / cargo test]
#
# Runs the gates first (cargo fmt --check, cargo clippy -D warnings, shellcheck scripts/).
# Installs redis-server, nginx, curl, chromium and chromium-driver with apt-get when missing,
# the browser tests' node modules (`npm ci` in tests/browser), and for the Debian package's test
# (tests/tests/package.rs) systemd-container, lintian and cargo-deb (`cargo install`, once, into
# ~/.cargo/bin: about 3 minutes on 2 cores), then runs
# `cargo nextest run --workspace --no-fail-fast` (one build for all test binaries), or
# `cargo test --workspace --no-fail-fast` when cargo-nextest is not installed.
#
# Exports for the tests (unless already set):
#   CRIER_TEST_NGINX          path of the nginx binary (found in PATH or /usr/sbin)
#   CRIER_TEST_REDIS_SERVER   path of the redis-server binary
#   CRIER_TEST_CHROMIUM       path of the chromium binary (browser tests)
#
# CRIER_TEST_SKIP_AUTOBAHN=1 skips the Autobahn conformance subset (and installing wstest).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

log() { printf '[test] %s\n' "$*" >&2; }

ensure_packages redis-server nginx curl || {
    log "error: could not install redis-server, nginx and curl"
    exit 1
}

CRIER_TEST_NGINX=${CRIER_TEST_NGINX:-$(find_tool nginx)}
CRIER_TEST_REDIS_SERVER=${CRIER_TEST_REDIS_SERVER:-$(find_tool redis-server)}
export CRIER_TEST_NGINX CRIER_TEST_REDIS_SERVER
log "nginx: $CRIER_TEST_NGINX"
log "redis-server: $CRIER_TEST_REDIS_SERVER"

# The browser tests (tests/tests/browser.rs): Debian's Chromium and ChromeDriver, and
# playwright-core from tests/browser/package-lock.json (no browser download).
ensure_packages chromium chromium-driver || {
    log "error: could not install chromium and chromium-driver"
    exit 1
}
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    if ! command -v npm >/dev/null 2>&1; then
        log "error: npm not found; the browser tests need Node.js 20 and npm"
        exit 1
    fi
    log "installing the browser tests' node modules (npm ci in tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund) || {
        log "error: npm ci in tests/browser failed"
        exit 1
    }
fi
CRIER_TEST_CHROMIUM=${CRIER_TEST_CHROMIUM:-$(find_tool chromium)}
export CRIER_TEST_CHROMIUM
log "chromium: $CRIER_TEST_CHROMIUM"

# The Debian package's test (scripts/test-package.sh): systemd-nspawn boots the container, lintian
# checks the package, cargo-deb builds it. As root only: elsewhere that test skips itself.
if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
    ensure_packages systemd-container lintian || {
        log "error: could not install systemd-container and lintian"
        exit 1
    }
    ensure_cargo_deb || {
        log "error: could not install cargo-deb"
        exit 1
    }
fi

# The Autobahn conformance subset (tests/tests/conformance.rs) needs wstest, which
# scripts/autobahn.sh installs into target/autobahn-venv (Python 2.7 and PyPI). Where that is
# impossible, CRIER_TEST_SKIP_AUTOBAHN=1 skips the subset; otherwise it is a failure.
if [[ "${CRIER_TEST_SKIP_AUTOBAHN:-0}" != 1 ]]; then
    scripts/autobahn.sh --install || {
        log "error: could not install wstest; set CRIER_TEST_SKIP_AUTOBAHN=1 to run the suite without the Autobahn subset"
        exit 1
    }
fi

# Gates: formatting (rustfmt.toml), lints as errors, and shellcheck on the scripts. They run
# before the tests so that CI keeps them; CRIER_TEST_SKIP_GATES=1 skips them for a quick rerun.
if [[ "${CRIER_TEST_SKIP_GATES:-0}" != 1 ]]; then
    ensure_packages shellcheck || {
        log "error: could not install shellcheck"
        exit 1
    }
    log "gate: cargo fmt --all -- --check"
    cargo fmt --all -- --check
    log "gate: cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
    log "gate: shellcheck scripts/"
    mapfile -t shell_scripts < <(find scripts -name '*.sh' | sort)
    shellcheck -x "${shell_scripts[@]}"
fi

# Many sockets in the end-to-end tests need many descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if cargo nextest --version >/dev/null 2>&1; then
    log "running: cargo nextest run --workspace --no-fail-fast $*"
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    log "cargo-nextest not found; running: cargo test --workspace --no-fail-fast $*"
    exec cargo test --workspace --no-fail-fast "$@"
fi
