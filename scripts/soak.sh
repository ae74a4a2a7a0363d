#!/usr/bin/env bash
# Soak test: thousands of sockets churning (connect, subscribe, receive, disconnect) against one
# release-built wsserver for a configurable time, sampling its memory and descriptors before,
# during and after. A benchmark script, not a unit test.
#
# Usage: scripts/soak.sh
#
# Environment:
#   SOAK_SECONDS        churn duration (default 600)
#   SOAK_SOCKETS        concurrent sockets (default 2000)
#   SOAK_CHANNELS       facilities the sockets spread over (default 50)
#   SOAK_WARMUP         warm-up churn before the "before" sample, in seconds (default 240: with
#                       the fan-out threads' allocator arenas wsserver's RSS levels off after
#                       about 3 minutes of churn; see BENCHMARKS.md "Soak")
#   SOAK_TOLERANCE_PCT  allowed RSS and fd difference between before and after (default 5)
#   SOAK_SAMPLE_EVERY   seconds between samples during the churn (default 10)
#
# Passes when, after the churn has ended and every socket is closed:
#   - wsserver's RSS (VmRSS) and open descriptors are within SOAK_TOLERANCE_PCT of "before";
#   - PUBSUB NUMSUB is 0 for every channel used and PUBSUB CHANNELS lists none of them;
#   - the churn itself saw at most 1 % failed cycles.
# "before" is taken after a warm-up churn with the same number of sockets, once they are all
# closed: the allocator has then reached its working size, so what is compared is growth during
# the long churn (a leak), not the allocator's first high-water mark. The fresh process's
# numbers are printed too.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"
# shellcheck source=lib/free-port.sh
source "$ROOT/scripts/lib/free-port.sh"

SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_SOCKETS=${SOAK_SOCKETS:-2000}
SOAK_CHANNELS=${SOAK_CHANNELS:-50}
SOAK_WARMUP=${SOAK_WARMUP:-240}
SOAK_TOLERANCE_PCT=${SOAK_TOLERANCE_PCT:-5}
SOAK_SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-10}
PREFIX=soak
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '[soak] %s\n' "$*" >&2; }

ensure_packages redis-server || { log "error: redis-server is needed"; exit 1; }
REDIS_SERVER=$(find_tool redis-server)
# Each side holds thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ $(ulimit -n) -lt $((SOAK_SOCKETS + 1000)) ]]; then
    log "error: open file limit $(ulimit -n) is too low for $SOAK_SOCKETS sockets"
    exit 1
fi

log "building wsserver and the churn client (release)"
cargo build --quiet --release --bin wsserver
cargo build --quiet --release -p crier-tests --example churn

WORK=$(mktemp -d "${TMPDIR:-/tmp}/crier-soak.XXXXXX")
REDIS_PID='' WS_PID=''
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
    local pid
    for pid in "$WS_PID" "$REDIS_PID"; do
        if [[ -n $pid ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

SOCK=$WORK/redis.sock
"$REDIS_SERVER" --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no >/dev/null 2>&1 &
REDIS_PID=$!
rcli() { redis-cli -s "$SOCK" "$@"; }
for _ in $(seq 1 100); do
    [[ $(rcli PING 2>/dev/null) == PONG ]] && break
    sleep 0.05
done

read -r PORT ADMIN_PORT < <(free_ports 2)
"$TARGET/release/wsserver" \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --redis-url "unix://$SOCK" --prefix "$PREFIX" \
    --max-connections "$((SOAK_SOCKETS * 2))" >"$WORK/wsserver.log" 2>&1 &
WS_PID=$!

admin() { curl -fsS "http://127.0.0.1:$ADMIN_PORT$1"; }
metric() { admin /metrics | awk -v m="$1" '$1 == m { print $2 }'; }
for _ in $(seq 1 200); do
    admin /readyz >/dev/null 2>&1 && break
    kill -0 "$WS_PID" 2>/dev/null || { log "wsserver exited:"; cat "$WORK/wsserver.log" >&2; exit 1; }
    sleep 0.05
done

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$WS_PID/status"; }
fds() { find "/proc/$WS_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
sample() {
    printf '%-8s t=%5ss rss=%7s kB fds=%6s sockets_open=%6s\n' "$1" "$(($(date +%s) - START))" \
        "$(rss_kb)" "$(fds)" "$(metric crier_ws_sockets_open)"
}

# Waits until every socket is closed on the server and the channels are released.
settle() {
    for _ in $(seq 1 600); do
        [[ $(metric crier_ws_sockets_open) == 0 ]] && break
        sleep 0.1
    done
    # Unsubscribes and freed buffers follow the sockets' end.
    sleep 3
}

churn() {
    "$TARGET/release/examples/churn" --url "ws://127.0.0.1:$PORT" --redis-url "unix://$SOCK" \
        --prefix "$PREFIX" --sockets "$SOAK_SOCKETS" --channels "$SOAK_CHANNELS" --seconds "$1"
}

START=$(date +%s)
log "wsserver pid $WS_PID on 127.0.0.1:$PORT; $SOAK_SOCKETS sockets over $SOAK_CHANNELS channels"
sample fresh

log "warm-up churn: ${SOAK_WARMUP}s"
churn "$SOAK_WARMUP" >"$WORK/warmup.log"
tail -n 1 "$WORK/warmup.log"
settle
BEFORE_RSS=$(rss_kb) BEFORE_FDS=$(fds)
sample before

log "churn: ${SOAK_SECONDS}s"
churn "$SOAK_SECONDS" &
CHURN_PID=$!
PEAK_RSS=0 PEAK_FDS=0
while kill -0 "$CHURN_PID" 2>/dev/null; do
    sleep "$SOAK_SAMPLE_EVERY"
    kill -0 "$CHURN_PID" 2>/dev/null || break
    r=$(rss_kb) f=$(fds)
    ((r > PEAK_RSS)) && PEAK_RSS=$r
    ((f > PEAK_FDS)) && PEAK_FDS=$f
    sample during
done
CHURN_OK=0
wait "$CHURN_PID" || CHURN_OK=$?

settle
AFTER_RSS=$(rss_kb) AFTER_FDS=$(fds)
sample after

# Channels used: soak:broadcast:soak-0 … soak-(N-1).
BUSY=0
for k in $(seq 0 $((SOAK_CHANNELS - 1))); do
    n=$(rcli PUBSUB NUMSUB "$PREFIX:broadcast:soak-$k" | tail -n 1)
    [[ $n == 0 ]] || { log "still subscribed: $PREFIX:broadcast:soak-$k ($n)"; BUSY=$((BUSY + 1)); }
done
LEFT=$(rcli PUBSUB CHANNELS "$PREFIX:broadcast:soak-*" | grep -c . || true)

within() { # within BEFORE AFTER → true when |AFTER-BEFORE| <= BEFORE * pct / 100
    local diff=$(($2 - $1))
    ((diff < 0)) && diff=$((-diff))
    ((diff * 100 <= $1 * SOAK_TOLERANCE_PCT))
}
pct() { awk -v b="$1" -v a="$2" 'BEGIN { printf "%+.1f%%", (a - b) * 100 / b }'; }

FAIL=0
echo "---"
echo "soak: ${SOAK_SECONDS}s, $SOAK_SOCKETS concurrent sockets over $SOAK_CHANNELS channels (warm-up ${SOAK_WARMUP}s)"
echo "rss: before ${BEFORE_RSS} kB, peak ${PEAK_RSS} kB, after ${AFTER_RSS} kB ($(pct "$BEFORE_RSS" "$AFTER_RSS"))"
echo "fds: before ${BEFORE_FDS}, peak ${PEAK_FDS}, after ${AFTER_FDS} ($(pct "$BEFORE_FDS" "$AFTER_FDS"))"
echo "redis: channels still subscribed by NUMSUB: $BUSY; test channels in PUBSUB CHANNELS: $LEFT"
echo "server: upgrades accepted $(metric crier_ws_upgrades_accepted_total), slow-consumer closes $(metric crier_ws_slow_consumer_closes_total), messages out $(metric crier_ws_messages_out_total)"
if ! within "$BEFORE_RSS" "$AFTER_RSS"; then echo "FAIL: RSS did not return within ${SOAK_TOLERANCE_PCT}%"; FAIL=1; fi
if ! within "$BEFORE_FDS" "$AFTER_FDS"; then echo "FAIL: descriptors did not return within ${SOAK_TOLERANCE_PCT}%"; FAIL=1; fi
if [[ $BUSY -ne 0 || $LEFT -ne 0 ]]; then echo "FAIL: channels left subscribed in Redis"; FAIL=1; fi
if [[ $CHURN_OK -ne 0 ]]; then echo "FAIL: the churn client reported failures (exit $CHURN_OK)"; FAIL=1; fi
if ! kill -0 "$WS_PID" 2>/dev/null; then echo "FAIL: wsserver died"; FAIL=1; fi
if [[ $FAIL -eq 0 ]]; then echo "PASS"; fi
exit "$FAIL"
