#!/usr/bin/env bash
# Load-test a Crier deployment (or an Nchan one) with loadgen. See loadgen/README.md.
#
# Usage: scripts/loadtest.sh [--no-build] [--local] [loadgen options...]
#
#   --no-build   use target/release/loadgen as it is
#   --local      start a private stack first (redis-server, wsserver, webserver on free
#                127.0.0.1 ports, release binaries) and point loadgen at it; it is stopped on exit
#
# Everything else goes to loadgen (`loadgen --help` lists every option). Examples:
#
#   # 2,000 subscribers through nginx, 20 publishes/s for 30 s through the publish API:
#   CRIER_PUBLISH_TOKEN=... scripts/loadtest.sh -n 2000 \
#       --ws-url 'ws://127.0.0.1:8080/ws/loadgen?subscribe-broadcast' \
#       --publish-url http://127.0.0.1:8080/api/publish --rate 20 --duration 30 \
#       --server-pid wsserver=$(pidof wsserver) --json out.json --svg out.svg
#
#   # the same against a throw-away local stack (--ws-url, --publish-url, the token, Redis and
#   # --server-pid are filled in; --audience user switches the URL to ?subscribe-user):
#   scripts/loadtest.sh --local -n 1000 --rate 10,50 --search-from 100
#   scripts/loadtest.sh --local -n 1000 --audience user --channels 1000 --rate 500
#
# The open-file limit is raised to the hard limit; loadgen splits the clients over worker
# processes below it. Spread many clients over source addresses with --source-addrs
# 127.0.0.2-127.0.0.9 when testing on loopback (each address has ~28k ephemeral ports).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=lib/script.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/script.sh"

BUILD=1
LOCAL=0
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-build) BUILD=0 ;;
        --local) LOCAL=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ $BUILD -eq 1 ]]; then
    packages=(-p crier-loadgen)
    [[ $LOCAL -eq 1 ]] && packages+=(-p crier-wsserver -p crier-webserver)
    log "building (release)"
    (cd "$ROOT" && cargo build --release "${packages[@]}")
fi
[[ -x $BIN/loadgen ]] || {
    log "error: $BIN/loadgen not found; run without --no-build"
    exit 1
}
raise_nofile

if [[ $LOCAL -eq 1 ]]; then
    # shellcheck source=lib/free-port.sh
    source "$ROOT/scripts/lib/free-port.sh"
    # shellcheck source=lib/bench-stack.sh
    source "$ROOT/scripts/lib/bench-stack.sh"
    command -v redis-server >/dev/null || {
        log "error: --local needs redis-server"
        exit 1
    }
    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/crier-loadtest.XXXXXX")
    cleanup() {
        bench_crier_stop 2>/dev/null || true
        bench_redis_stop 2>/dev/null || true
        rm -rf "$SCRATCH"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    bench_redis_start "$SCRATCH"
    bench_crier_start "$SCRATCH" "$BIN"
    log "local stack: wsserver 127.0.0.1:$WS_PORT (pid $WS_PID), webserver 127.0.0.1:$WEB_PORT, redis 127.0.0.1:$REDIS_PORT"
    # Defaults through the environment, so that options given on the command line still win.
    flag=subscribe-broadcast
    if [[ " ${ARGS[*]-} " == *" --audience user "* || " ${ARGS[*]-} " == *" --audience=user "* ]]; then
        flag=subscribe-user
    fi
    export LOADGEN_WS_URL="ws://127.0.0.1:$WS_PORT/ws/loadgen?$flag"
    export LOADGEN_PUBLISH_URL="http://127.0.0.1:$WEB_PORT/api/publish"
    export LOADGEN_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    export LOADGEN_SERVER_PID="wsserver=$WS_PID,webserver=$WEB_PID,redis=$REDIS_PID"
    export CRIER_PUBLISH_TOKEN=$CRIER_TOKEN
    "$BIN/loadgen" ${ARGS[@]+"${ARGS[@]}"}
else
    exec "$BIN/loadgen" ${ARGS[@]+"${ARGS[@]}"}
fi
