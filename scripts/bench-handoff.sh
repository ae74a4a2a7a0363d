#!/usr/bin/env bash
# Measures a live hand-off (SIGUSR2, docs/handoff.md) under load: N loadgen subscribers of one
# broadcast channel on a private wsserver, RATE messages/s published straight into Redis in three
# phases of DURATION seconds; one second into the second phase wsserver is told to hand off.
# Prints the hand-off's time (signal to "done", and the socket part alone, from wsserver's log)
# and loadgen's per-phase summary: the second phase holds the hand-off, the first and third are
# the baseline; lost and reordered deliveries must be 0.
#
# Usage: scripts/bench-handoff.sh [--no-build] N [RATE] [DURATION]
#        (defaults: RATE 100, DURATION 10; release binaries in target/release)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/free-port.sh
source "$ROOT/scripts/lib/free-port.sh"
# shellcheck source=lib/bench-stack.sh
source "$ROOT/scripts/lib/bench-stack.sh"
log() { printf '[bench-handoff] %s\n' "$*" >&2; }

BUILD=1
if [[ ${1:-} == --no-build ]]; then
    BUILD=0
    shift
fi
N=${1:?usage: scripts/bench-handoff.sh [--no-build] N [RATE] [DURATION]}
RATE=${2:-100}
DURATION=${3:-10}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ $BUILD -eq 1 ]]; then
    (cd "$ROOT" && cargo build --release -p crier-loadgen -p crier-wsserver -p crier-webserver)
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DIR=$(mktemp -d /tmp/crier-handoff.XXXXXX)
NEW_PID=''
cleanup() {
    if [[ -n $NEW_PID ]]; then kill "$NEW_PID" 2>/dev/null || true; fi
    bench_crier_stop || true
    bench_redis_stop || true
}
trap cleanup EXIT

bench_redis_start "$DIR"
bench_crier_start "$DIR" "$BIN"
metric() { curl -fsS "http://127.0.0.1:$WS_ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# One second into the second phase: the first phase's messages plus RATE more have reached wsserver.
trigger_at=$((RATE * DURATION + RATE))
(
    while :; do
        seen=$(metric crier_ws_redis_messages_total 2>/dev/null || echo 0)
        [[ ${seen%.*} -ge $trigger_at ]] && break
        sleep 0.05
    done
    kill -USR2 "$WS_PID"
) &
TRIGGER=$!

log "$N subscribers, $RATE msg/s, 3 phases of ${DURATION}s; hand-off one second into phase 2"
"$BIN/loadgen" --label "handoff-$N" -n "$N" --source-addrs 127.0.0.2-127.0.0.9 \
    --ws-url "ws://127.0.0.1:$WS_PORT/ws/loadgen?subscribe-broadcast" \
    --publish redis --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --rate "$RATE,$RATE,$RATE" --duration "$DURATION" --json "$DIR/loadgen.json" | tee "$DIR/loadgen.txt"
wait "$TRIGGER" || true
NEW_PID=$(metric crier_ws_process_id || true)
NEW_PID=${NEW_PID%.*}

signal=$(grep -m1 'SIGUSR2 received' "$DIR/wsserver.log" | cut -d' ' -f1)
done_line=$(grep -m1 'live hand-off done; the new process serves now' "$DIR/wsserver.log" || true)
[[ -n $done_line ]] || {
    log "no hand-off in the log:"
    tail -20 "$DIR/wsserver.log" >&2
    exit 1
}
python3 - "$signal" "${done_line%% *}" <<'PY'
import sys
from datetime import datetime
a, b = (datetime.fromisoformat(t.rstrip("Z")) for t in sys.argv[1:3])
print(f"hand-off: signal to done {(b - a).total_seconds():.3f} s")
PY
grep -o 'handed=[0-9]* elapsed=[^ ]*' <<<"$done_line" | sed 's/^/sockets: /'
printf 'process %s -> %s; taken by the new process: %s\n' "$WS_PID" "$NEW_PID" "$(metric crier_ws_handoff_sockets_taken_total)"
log "scratch directory: $DIR"
