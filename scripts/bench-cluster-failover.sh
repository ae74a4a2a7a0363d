#!/usr/bin/env bash
# Redis Cluster failover time: from a master's death (SIGKILL) to the first API publish
# delivered to every subscriber again, measured by the end-to-end test
# tests/tests/redis_cluster.rs (three masters with one replica each, cluster-node-timeout
# 2000 ms, both servers, nginx, five sockets on a channel of the killed master's shard). Runs it N
# times (default 5) and prints each time, the replica's promotion time, and the medians.
#
# Usage: scripts/bench-cluster-failover.sh [runs]
# Needs redis-server, redis-cli and nginx (installed when missing, as scripts/test.sh does).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"
RUNS=${1:-5}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [runs]" >&2; exit 2; }

ensure_packages redis-server redis-tools nginx
CRIER_TEST_NGINX=${CRIER_TEST_NGINX:-$(find_tool nginx)}
CRIER_TEST_REDIS_SERVER=${CRIER_TEST_REDIS_SERVER:-$(find_tool redis-server)}
export CRIER_TEST_NGINX CRIER_TEST_REDIS_SERVER

median() {
    sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

cd "$ROOT"
times=()
promotions=()
for run in $(seq 1 "$RUNS"); do
    out=$(cargo nextest run -p crier-tests -E 'binary(redis_cluster) and test(a_killed_master)' --no-capture 2>&1) || {
        printf '%s\n' "$out" | tail -50 >&2
        echo "run $run failed" >&2
        exit 1
    }
    line=$(printf '%s\n' "$out" | grep 'cluster failover: delivery resumed' | head -1)
    ms=$(printf '%s\n' "$line" | sed -n 's/.*delivery resumed \([0-9]*\) ms.*/\1/p')
    promoted=$(printf '%s\n' "$line" | sed -n 's/.*promoted after \([0-9]*\) ms.*/\1/p')
    [[ -n $ms && -n $promoted ]] || { echo "run $run: no measurement in the test output" >&2; exit 1; }
    echo "run $run: delivery resumed ${ms} ms after the kill (replica promoted after ${promoted} ms)"
    times+=("$ms")
    promotions+=("$promoted")
done
echo "median of $RUNS: $(printf '%s\n' "${times[@]}" | median) ms from SIGKILL of the master to delivery resumed;" \
    "$(printf '%s\n' "${promotions[@]}" | median) ms to the replica's promotion"
