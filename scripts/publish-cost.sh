#!/usr/bin/env bash
# CPU per publish of webserver and redis-server, per build and history setting, alternating.
#
#   scripts/publish-cost.sh [--runs N] [--rate R] [--seconds S] [--channels C] LABEL=BIN_DIR[:HISTORY] ...
#
# Each LABEL=BIN_DIR[:HISTORY] is one system: wsserver + webserver from BIN_DIR (release builds),
# CRIER_HISTORY=HISTORY (empty: no history; `bench` is the facility loadgen publishes on), a
# private redis-server. For every run, the systems in turn (their order alternating between
# runs): start fresh, C logged-in users on C channels (channels10k's setup; default 10,000), one
# fixed-rate phase of R publishes/s (default 8,000) for S seconds (default 8) from 32 API
# connections, stop. webserver's and redis-server's CPU (utime + stime, sampled every 0.25 s) is
# taken over the phase only (loadgen's phase start and length), not over the connect phase, and
# divided by the publishes in it; Redis' INFO commandstats gives usec_per_call of EVALSHA and
# PUBLISH (the time inside the command, the script's whole run for EVALSHA). Prints one line per
# measurement and the medians per system. With fewer channels each channel's history fills
# (C=1000 at 8,000/s for 30 s: 240 messages per channel, past the default size of 100).
#
# Example, an old build against a new one, history on, and the old one without history:
#   scripts/publish-cost.sh --runs 3 old=/tmp/old:bench new=target/release:bench nohist=/tmp/old
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/free-port.sh
source "$REPO/scripts/lib/free-port.sh"
# shellcheck source=scripts/lib/bench-stack.sh
source "$REPO/scripts/lib/bench-stack.sh"

RUNS=3 RATE=8000 SECONDS_=8 CHANNELS=10000
systems=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --seconds) SECONDS_=$2; shift 2 ;;
        --channels) CHANNELS=$2; shift 2 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *=*) systems+=("$1"); shift ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ ${#systems[@]} -gt 0 ]] || { echo "no system given (see --help)" >&2; exit 2; }
for tool in jq redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
LOADGEN=${LOADGEN:-$REPO/target/release/loadgen}
[[ -x $LOADGEN ]] || { echo "no loadgen at $LOADGEN (cargo build --release -p crier-loadgen, or LOADGEN=)" >&2; exit 2; }
OUT=$(mktemp -d "${TMPDIR:-/tmp}/publish-cost.XXXXXX")
# webserver's admin listener would default to a fixed port another process may hold.
export CRIER_WEB_ADMIN_LISTEN=""

SAMPLER=""
cleanup() {
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
    bench_crier_stop 2>/dev/null || true
    [[ -n ${REDIS_PID:-} ]] && _bench_kill "$REDIS_PID" 10
    wait 2>/dev/null || true
}
trap cleanup EXIT

# measure LABEL BIN HISTORY DIR: one phase; appends "label web redis evalsha publish" to results.
measure() {
    local label=$1 bin=$2 history=$3 dir=$4 start dur pubs lost stats
    mkdir -p "$dir"
    bench_redis_start "$dir"
    bench_crier_start "$dir" "$bin" "$history"
    (
        while true; do
            echo "$(date +%s%6N) $(awk '{print $14 + $15}' "/proc/$WEB_PID/stat") $(awk '{print $14 + $15}' "/proc/$REDIS_PID/stat")"
            sleep 0.25
        done
    ) >"$dir/cpu.txt" &
    SAMPLER=$!
    "$LOADGEN" --label "$label" --ws-url "ws://127.0.0.1:$WS_PORT/ws/bench?subscribe-user" \
        --facility bench --audience user --publish api --publish-url "http://127.0.0.1:$WEB_PORT/api/publish" \
        --publish-token "$CRIER_TOKEN" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
        --server-pid "webserver=$WEB_PID,redis=$REDIS_PID,wsserver=$WS_PID" \
        -n "$CHANNELS" --channels "$CHANNELS" --connect-rate 5000 --rate "$RATE" --duration "$SECONDS_" \
        --publish-concurrency 32 --json "$dir/loadgen.json" --quiet >"$dir/loadgen.txt" 2>&1 || true
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
    stats=$(redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r')
    bench_crier_stop
    _bench_kill "$REDIS_PID" 10
    REDIS_PID=""
    start=$(jq '.phases[0].start_us' "$dir/loadgen.json")
    dur=$(jq '.phases[0].seconds' "$dir/loadgen.json")
    pubs=$(jq '.phases[0].published' "$dir/loadgen.json")
    lost=$(jq '.phases[0].lost' "$dir/loadgen.json")
    awk -v s="$start" -v d="$dur" -v p="$pubs" -v label="$label" -v lost="$lost" -v dir="$dir" \
        -v ev="$(sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")" \
        -v pu="$(sed -n 's/^cmdstat_publish:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")" '
        { if ($1 >= s && !a) { a = 1; t0 = $1; w0 = $2; r0 = $3 } if ($1 <= s + d * 1e6) { t1 = $1; w1 = $2; r1 = $3 } }
        END {
            n = p / d * (t1 - t0) / 1e6
            if (n <= 0 || lost != 0) { printf "%s measurement failed (lost %s; see %s)\n", label, lost, dir > "/dev/stderr"; exit 1 }
            printf "%s\t%.2f\t%.2f\t%s\t%s\n", label, (w1 - w0) * 1e4 / n, (r1 - r0) * 1e4 / n, (ev == "" ? "-" : ev), (pu == "" ? "-" : pu)
        }' "$dir/cpu.txt" >>"$OUT/results.tsv"
    tail -n 1 "$OUT/results.tsv"
}

echo "results in $OUT; label, webserver and redis CPU µs per publish, EVALSHA and PUBLISH usec_per_call"
for ((run = 1; run <= RUNS; run++)); do
    order=("${systems[@]}")
    if ((run % 2 == 0)); then
        mapfile -t order < <(printf '%s\n' "${systems[@]}" | tac)
    fi
    for sys in "${order[@]}"; do
        label=${sys%%=*} rest=${sys#*=}
        bin=${rest%%:*} history=""
        [[ $rest == *:* ]] && history=${rest#*:}
        measure "$label" "$bin" "$history" "$OUT/run$run-$label" || true
    done
done

echo "medians (web, redis, web+redis µs per publish; EVALSHA, PUBLISH usec_per_call):"
for sys in "${systems[@]}"; do
    label=${sys%%=*}
    awk -F'\t' -v l="$label" '$1 == l { w[n] = $2; r[n] = $3; t[n] = $2 + $3; e[n] = $4; p[n] = $5; n++ }
        function med(a, n,   i, j, x) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] + 0 < a[i] + 0) { x = a[i]; a[i] = a[j]; a[j] = x }
                                     return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
        END { if (n) printf "%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t(n=%d)\n", l, med(w, n), med(r, n), med(t, n), (e[0] == "-" ? "-" : med(e, n)), med(p, n), n }' \
        "$OUT/results.tsv"
done
