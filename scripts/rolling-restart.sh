#!/usr/bin/env bash
# The rolling-restart loss measurement of issue #18: two wsserver instances behind the shipped
# nginx config, 200 subscribers of one broadcast channel, 50 messages/s, clients reconnecting
# like ws4redis.js (first retry within 1 s), one instance restarted with SIGTERM after 3 s of
# publishing; reports messages lost, clients losing, duplicates and out-of-order deliveries.
# Everything runs on private servers (tests/examples/rolling_restart.rs; redis-server and nginx
# must be installed).
#
# Usage: scripts/rolling-restart.sh [--release] [--before] [example options...]
#
#   --release   build and run with the release profile (default: debug; the loss counts do
#               not depend on it)
#   --before    only the cases without history (what a server without recovery can run)
#
# Cases, one table row each: Redis PUBLISH and the API without history or recovery; the API
# with history, clients not opting in (today's frames) and opting in; Redis PUBLISH with
# history and recovery (plain PUBLISH messages carry no position). Example options (--clients,
# --rate, --seconds, --restart-after, --first-retry-ms, --seed) apply to every case.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=lib/script.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/script.sh"

PROFILE=()
PROFILE_NAME=debug
BEFORE=0
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --release)
            PROFILE=(--release)
            PROFILE_NAME=release
            ;;
        --before) BEFORE=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done

export CRIER_TEST_REDIS_SERVER=${CRIER_TEST_REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
export CRIER_TEST_NGINX=${CRIER_TEST_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
raise_nofile

log "building ($PROFILE_NAME)"
(cd "$ROOT" && cargo build --quiet ${PROFILE[@]+"${PROFILE[@]}"} -p crier-wsserver -p crier-webserver --bins &&
    cargo build --quiet ${PROFILE[@]+"${PROFILE[@]}"} -p crier-tests --example rolling_restart)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE_NAME
export CRIER_TEST_BIN_DIR=$BIN

CASES=("--publish redis" "--publish api")
if [[ $BEFORE -eq 0 ]]; then
    CASES+=("--publish api --history" "--publish api --history --recover" "--publish redis --history --recover")
fi

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "rolling restart, commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), $PROFILE_NAME build, options: ${ARGS[*]-(defaults)}"
echo
echo "| publish | history | recovery | published | lost | clients losing | max lost per client | clients disconnected | duplicates | out of order | gaps | publish errors |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for case in "${CASES[@]}"; do
    log "case: $case"
    # shellcheck disable=SC2086 # each case is a list of options
    "$BIN/examples/rolling_restart" $case --row ${ARGS[@]+"${ARGS[@]}"}
done
