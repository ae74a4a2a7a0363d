#!/usr/bin/env bash
# Profile one system's fan-out at a fixed rate: N subscribers of one channel, `perf record` of
# the server's processes for a few seconds in the middle of the phase, then where their CPU went
# (kernel against user space, the top symbols) next to loadgen's summary line. This is how the
# "floor" findings of BENCHMARKS.md were measured; compare systems by running it for each in turn.
#
# Usage: scripts/profile-fanout.sh [--no-build] crier|crier-deployed|writer|writer-deployed|nchan [RATE=5] [CLIENTS=10000]
#
#   crier-deployed profiles nginx's workers and wsserver together (clients through nginx with the
#   shipped site, wsserver on a unix socket; PROFILE_SITE=FILE: another site, PROFILE_MAIN=FILE:
#   another main context); crier, wsserver alone. writer and writer-deployed are the same two
#   shapes with bench/loopback-send's minimal ws-writer in wsserver's place (BENCH_WRITER, as for
#   scripts/bench.sh): the floor of each.
#
#   PROFILE_SECONDS=5    length of the perf recording; 0: no perf, only the phase (for A/B runs
#                        of two builds, alternating BENCH_BIN_DIR)
#   PROFILE_DURATION     seconds of publishing (default 3 × PROFILE_SECONDS, at least 15)
#   PROFILE_CALLGRAPH=1  record call graphs (perf -g); 0 for a flat profile
#   PROFILE_OUT=bench-out/profile-<system>-<UTC time>   perf.data, loadgen's JSON and text
#   BENCH_BIN_DIR, BENCH_SERVER_WORKERS, BENCH_SERVER_NOFILE: as for scripts/bench.sh
#
# Needs perf (Debian: linux-perf), and what scripts/bench.sh needs (it installs nginx, Nchan and
# redis-server when missing: run it once first). Root, or perf_event_paranoid ≤ 0.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/free-port.sh
source "$ROOT/scripts/lib/free-port.sh"
# shellcheck source=lib/bench-stack.sh
source "$ROOT/scripts/lib/bench-stack.sh"
log() { printf '[profile] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

BUILD=1
if [[ ${1:-} == --no-build ]]; then BUILD=0; shift; fi
SYSTEM=${1:-}
RATE=${2:-5}
CLIENTS=${3:-10000}
[[ $SYSTEM =~ ^(crier|crier-deployed|writer|writer-deployed|nchan)$ ]] ||
    die "usage: scripts/profile-fanout.sh [--no-build] crier|crier-deployed|writer|writer-deployed|nchan [RATE] [CLIENTS]"
WRITER=${BENCH_WRITER:-$ROOT/bench/loopback-send/target/release/ws-writer}
SECONDS_REC=${PROFILE_SECONDS:-5}
DURATION=${PROFILE_DURATION:-$((SECONDS_REC * 3 < 15 ? 15 : SECONDS_REC * 3))}
BIN=${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=${PROFILE_OUT:-$ROOT/bench-out/profile-$SYSTEM-$(date -u +%Y%m%dT%H%M%SZ)}
((SECONDS_REC == 0)) || command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
command -v redis-server >/dev/null || die "redis-server is missing (scripts/bench.sh installs it)"
[[ $SYSTEM == crier ]] || command -v nginx >/dev/null || die "nginx is missing (scripts/bench.sh installs it with Nchan)"

if ((BUILD)); then
    (cd "$ROOT" && cargo build --release -q -p crier-loadgen -p crier-wsserver -p crier-webserver)
fi
if [[ $SYSTEM == writer* && ! -x $WRITER ]]; then
    (cd "$ROOT/bench/loopback-send" && cargo build --release -q --bin ws-writer)
fi
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
# A fresh 127.A.0.x block, so that this run's sockets never meet an earlier run's TIME_WAIT.
BLOCK=$((20 + RANDOM % 200))
common=(-n "$CLIENTS" --rate "$RATE" --duration "$DURATION" --connect-rate 5000
    --source-addrs "127.$BLOCK.0.1-127.$BLOCK.0.8" --json "$OUT/loadgen.json")

stop_all() { bench_writer_stop 2>/dev/null || true; bench_deployed_stop 2>/dev/null || true; bench_crier_stop 2>/dev/null || true; bench_redis_stop 2>/dev/null || true; bench_nchan_stop 2>/dev/null || true; }
trap stop_all EXIT
if [[ $SYSTEM == crier ]]; then
    bench_redis_start "$OUT"
    bench_crier_start "$OUT" "$BIN"
    TARGETS=$WS_PID
elif [[ $SYSTEM == crier-deployed ]]; then
    bench_redis_start "$OUT"
    bench_deployed_start "$OUT" "$BIN" "${PROFILE_SITE:-}" "${PROFILE_MAIN:-}"
    TARGETS=$(tr ' ' , <<<"$WS_PID $FRONT_WORKER_PIDS" | sed 's/,*$//')
elif [[ $SYSTEM == writer ]]; then
    bench_writer_start "$OUT" "$WRITER"
    TARGETS=$WRITER_PID
elif [[ $SYSTEM == writer-deployed ]]; then
    bench_writer_start "$OUT" "$WRITER" deployed "${PROFILE_SITE:-}" "${PROFILE_MAIN:-}"
    TARGETS=$(tr ' ' , <<<"$WRITER_PID $FRONT_WORKER_PIDS" | sed 's/,*$//')
else
    bench_nchan_start "$OUT" memory
    TARGETS=$(tr ' ' , <<<"$NCHAN_WORKER_PIDS")
fi
# The same endpoints and options as bench.sh's fanout10k.
read -ra system_args <<<"$(bench_loadgen_args "$SYSTEM" fanout10k)"
"$BIN/loadgen" --label "$SYSTEM" "${common[@]}" "${system_args[@]}" >"$OUT/loadgen.txt" 2>"$OUT/loadgen.log" &
LOADGEN=$!
loadgen_summary() {
    echo "== loadgen (cpuµs/d: server CPU per delivery) =="
    grep -E '^ *ph |fixed|^server ' "$OUT/loadgen.txt" || cat "$OUT/loadgen.txt"
    echo "== server CPU per delivery by process (µs, the fixed phase) =="
    jq -r '.phases[0] as $p | $p.server_cpu_us_by_label[]? | "\(.[0]) \(.[1] / ($p.received | if . > 0 then . else 1 end) | . * 100 | round / 100)"' \
        "$OUT/loadgen.json" 2>/dev/null || true
}

# Wait for the publishing phase (loadgen's progress line names it), at most 120 s.
for ((i = 0; i < 1200; i++)); do
    grep -q 'phase 0' "$OUT/loadgen.log" 2>/dev/null && break
    kill -0 "$LOADGEN" 2>/dev/null || break
    sleep 0.1
done
grep -q 'phase 0' "$OUT/loadgen.log" 2>/dev/null || { wait "$LOADGEN" || true; cat "$OUT/loadgen.log" >&2; die "loadgen did not reach its publishing phase"; }
if ((SECONDS_REC > 0)); then
    sleep "$SECONDS_REC"   # into the phase: past the first messages' warm-up
    graph=()
    [[ ${PROFILE_CALLGRAPH:-1} == 1 ]] && graph=(-g)
    log "perf record ${graph[*]} of $SYSTEM (pids $TARGETS) for ${SECONDS_REC}s"
    perf record "${graph[@]}" -F 1999 -o "$OUT/perf.data" -p "$TARGETS" -- sleep "$SECONDS_REC" >/dev/null 2>"$OUT/perf.log" \
        || die "perf record failed: $(tail -1 "$OUT/perf.log")"
fi
wait "$LOADGEN" || log "loadgen exited with $? (see $OUT/loadgen.log)"

loadgen_summary
if ((SECONDS_REC > 0)); then
    echo "== server samples by binary (kernel = [kernel.kallsyms]) =="
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep "%" | head -8 || true  # head closes the pipe early
    echo "== server samples by process and binary =="
    perf report -i "$OUT/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep "%" | head -10 || true
    echo "== top symbols, self =="
    perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep "%" | head -20 || true
fi
echo "== results in $OUT =="
