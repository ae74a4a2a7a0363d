#!/usr/bin/env bash
# Sentinel failover time: from the master's death (SIGKILL) to the first API publish delivered
# to every subscriber again, measured by the end-to-end test
# tests/tests/redis_sentinel.rs (one master, one replica, three Sentinels with
# down-after-milliseconds 1000, both servers, nginx, five sockets). Runs it N times (default 5)
# and prints each time and the median.
#
# Usage: scripts/bench-sentinel-failover.sh [runs]
# Needs redis-server, redis-sentinel and nginx (installed when missing, as scripts/test.sh does).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"
RUNS=${1:-5}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [runs]" >&2; exit 2; }

ensure_packages redis-server redis-sentinel nginx
CRIER_TEST_NGINX=${CRIER_TEST_NGINX:-$(find_tool nginx)}
CRIER_TEST_REDIS_SERVER=${CRIER_TEST_REDIS_SERVER:-$(find_tool redis-server)}
export CRIER_TEST_NGINX CRIER_TEST_REDIS_SERVER

cd "$ROOT"
times=()
for run in $(seq 1 "$RUNS"); do
    out=$(cargo nextest run -p crier-tests -E 'binary(redis_sentinel)' --no-capture 2>&1) || {
        printf '%s\n' "$out" | tail -50 >&2
        echo "run $run failed" >&2
        exit 1
    }
    ms=$(printf '%s\n' "$out" | sed -n 's/.*sentinel failover: delivery resumed \([0-9]*\) ms.*/\1/p' | head -1)
    [[ -n $ms ]] || { echo "run $run: no measurement in the test output" >&2; exit 1; }
    echo "run $run: ${ms} ms"
    times+=("$ms")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
echo "median of $RUNS: ${median} ms (from SIGKILL of the master to delivery resumed)"
