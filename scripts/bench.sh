#!/usr/bin/env bash
# Benchmark Crier against nginx + Nchan on this machine, in the same run, alternating the
# systems, and print medians and Crier/Nchan ratios (the table BENCHMARKS.md shows).
#
# Usage: scripts/bench.sh [--no-build]
#
# Scenarios (BENCH_SCENARIOS, space-separated; default all, in this order):
#   fanout1k     1,000 subscribers of one channel: latency at BENCH_FANOUT1K_RATE publishes/s,
#                then the highest publish rate held without loss (search from 50/s, x1.3 a step)
#   fanout10k    10,000 subscribers of one channel: latency at 5 publishes/s, then the search
#                (from 10/s)
#   overload1k   1,000 subscribers, 200 publishes/s asked: deliveries/s, loss
#   saturate1k   1,000 subscribers, BENCH_SATURATE_RATE publishes/s asked (default 2,000: beyond
#                the rate Nchan holds here, which 200/s is not on this machine): deliveries/s, loss
#   idle         19,000 idle sockets held BENCH_IDLE_HOLD seconds: server memory per socket
#   channels10k  10,000 clients each on its own channel (Crier: a logged-in user each), messages
#                to random channels through each system's HTTP publish API
#                (BENCH_PUBLISH_CONCURRENCY publishing connections): highest lossless rate
#                (search from 2,000/s, x1.15 a step)
# Systems (BENCH_SYSTEMS; default "crier-deployed crier nchan nchan-redis"):
#   crier-deployed  Crier as deployed: clients and publishes go through nginx with the shipped
#                site (nginx/crier.conf) to wsserver and webserver on unix sockets; nginx's main
#                context is Nchan's (bench/crier-nginx.conf.template). Its CPU and memory count
#                nginx's too
#   crier-deployed-b, crier-deployed-c, ...  the same with the site BENCH_SITE_B (_C, ...), the
#                main context BENCH_MAIN_B (_C, ...) and wsserver's arguments BENCH_WSSERVER_ARGS_B
#                (_C, ...) instead, each defaulting to the shipped one (a tuning measured against
#                the shipped configuration in the same run)
#   crier        wsserver alone (clients connect to it directly) + webserver (publish API) +
#                redis-server
#   crier-history  wsserver alone + webserver with the per-channel history on
#                (CRIER_HISTORY=BENCH_HISTORY): every publish is the append-and-publish script
#                (not in the default list)
#   writer       the floor of a fan-out server: bench/loopback-send's ws-writer (one thread, one
#                write per subscriber per message, Nchan-style HTTP publisher) on TCP, clients
#                connecting to it directly (not in the default list)
#   writer-deployed  the same writer on a unix socket behind nginx with the shipped site, as
#                crier-deployed runs wsserver: what the proxy hop alone costs (not in the default
#                list; writer-deployed-b, -c, ... take BENCH_SITE_B/BENCH_MAIN_B like crier-deployed-b)
#   crier-cluster  wsserver alone + webserver on a Redis Cluster of three masters (no replicas)
#                instead of the single redis-server: SPUBLISH and one SSUBSCRIBE connection per
#                master; records each master's SPUBLISH count (spublish_shard1..3). Not in the
#                default list
#   nchan        nginx + Nchan, memory store (websocket subscriber, HTTP publisher)
#   nchan-redis  nginx + Nchan with nchan_redis_server/nchan_redis_pass, + redis-server
#
# Environment:
#   BENCH_SCALE=1         multiplies every client count (0.1 for a quick run)
#   BENCH_RUNS=3          runs of every scenario and system; medians are reported
#   BENCH_DURATION=5      seconds of publishing per phase
#   BENCH_IDLE_HOLD=10    seconds the idle sockets are held
#   BENCH_MAX_P99_MS=1000 a phase whose p99 exceeds this counts as a backlog (not held)
#   BENCH_FANOUT1K_RATE=50  the fixed rate of fanout1k's latency phase
#   BENCH_SATURATE_RATE=2000  the rate saturate1k asks for
#   BENCH_SEARCH_STEPS=<per scenario>  cap on the search steps (0: the fixed-rate phases only)
#   BENCH_PUBLISH_CONCURRENCY=32  channels10k's publishing connections (each one request at a
#                         time): with few, the rate is bound by the publish round trip; with many,
#                         by the machine's CPU
#   BENCH_SEARCH_REFINE=2 phases after a search's first failed step that bisect between the last
#                         held rate and the failed one (a searched rate is then known to about a
#                         quarter of a step)
#   BENCH_HISTORY=bench   CRIER_HISTORY of the crier-history system (`bench` is the facility every
#                         scenario uses)
#   BENCH_OUT=bench-out/<UTC time>   where every summary (JSON, text, SVG, log) goes
#   BENCH_BIN_DIR=target/release         binaries to use (with --no-build)
#   BENCH_SERVER_WORKERS=<nproc>         tokio worker threads of each Crier binary, nginx workers
#   BENCH_SERVER_NOFILE=20000            descriptor cap of every server process
#   BENCH_SITE_B=FILE     the nginx site of systems crier-deployed-b and writer-deployed-b (a variant
#                         of nginx/crier.conf with the same three tokens); BENCH_SITE_C for -c, ...
#   BENCH_MAIN_B=FILE     their nginx main context (a variant of bench/crier-nginx.conf.template
#                         with the same placeholders); BENCH_MAIN_C for -c, ...
#   BENCH_WSSERVER_ARGS_B="--fanout-threads 1"  more wsserver arguments for crier-deployed-b (a
#                         wsserver setting measured against the defaults); _C for -c, ...
#   BENCH_DEPLOYED_PUBLISH=api  how crier-deployed publishes: api (POST /api/publish through
#                         nginx, as a browser or an HTTP publisher does), direct (the same POST to
#                         webserver's unix socket, as a publisher on the server's host can) or
#                         redis (PUBLISH straight into Redis, as ws4redis' Django publishers do)
#   BENCH_WRITER=bench/loopback-send/target/release/ws-writer  the writer systems' binary (built
#                         when missing)
#   BENCH_QUIET_WAIT=300  before each measurement, wait up to this many seconds for the machine
#                         to be idle (other work below 0.25 cores); the load found is recorded
#
# Every measurement starts its system fresh and stops it afterwards; Redis is flushed between
# measurements. Each loadgen run is bounded by its own deadline and by `timeout`. On a virtual
# machine the host may withhold CPU (steal) during a run, which no check beforehand can see: the
# run ends with a warning naming the measurements where that touched a reported figure.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"
# shellcheck source=lib/free-port.sh
source "$ROOT/scripts/lib/free-port.sh"
# shellcheck source=lib/bench-stack.sh
source "$ROOT/scripts/lib/bench-stack.sh"

usage() { sed -n '2,/^# shellcheck/{/^# shellcheck/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

BUILD=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-build) BUILD=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
    shift
done

SCALE=${BENCH_SCALE:-1}
RUNS=${BENCH_RUNS:-3}
DURATION=${BENCH_DURATION:-5}
IDLE_HOLD=${BENCH_IDLE_HOLD:-10}
MAX_P99=${BENCH_MAX_P99_MS:-1000}
FANOUT1K_RATE=${BENCH_FANOUT1K_RATE:-50}
SATURATE_RATE=${BENCH_SATURATE_RATE:-2000}
REFINE=${BENCH_SEARCH_REFINE:-2}
PUBLISH_CONCURRENCY=${BENCH_PUBLISH_CONCURRENCY:-32}
SCENARIOS=${BENCH_SCENARIOS:-fanout1k fanout10k overload1k saturate1k idle channels10k}
SYSTEMS=${BENCH_SYSTEMS:-crier-deployed crier nchan nchan-redis}
OUT=${BENCH_OUT:-$ROOT/bench-out/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}

ensure_packages redis-server redis-tools nginx libnginx-mod-nchan jq curl iproute2 ||
    die "could not install the packages the benchmark needs"
NGINX=$(find_tool nginx) || die "nginx is required"
export NGINX
[[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || die "the Nchan module is missing (libnginx-mod-nchan)"

if [[ $BUILD -eq 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p crier-loadgen -p crier-wsserver -p crier-webserver)
fi
for b in loadgen wsserver webserver; do
    [[ -x $BIN/$b ]] || die "$BIN/$b not found; run without --no-build"
done
case ${BENCH_DEPLOYED_PUBLISH:-api} in
    api | direct | redis) ;;
    *) die "BENCH_DEPLOYED_PUBLISH must be api, direct or redis, not '$BENCH_DEPLOYED_PUBLISH'" ;;
esac
WRITER=${BENCH_WRITER:-$ROOT/bench/loopback-send/target/release/ws-writer}
if [[ " ${BENCH_SYSTEMS:-} " == *" writer"* && ! -x $WRITER ]]; then
    log "building the minimal writer (bench/loopback-send)"
    (cd "$ROOT/bench/loopback-send" && cargo build --release --bin ws-writer)
fi
# Clients need many descriptors: take the hard limit (loadgen splits into worker processes
# below it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/crier-bench.XXXXXX")
cleanup() {
    bench_deployed_stop 2>/dev/null || true
    bench_crier_stop 2>/dev/null || true
    bench_nchan_stop 2>/dev/null || true
    bench_writer_stop 2>/dev/null || true
    bench_redis_stop 2>/dev/null || true
    bench_cluster_stop 2>/dev/null || true
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# steps N: the scenario's search steps, capped by BENCH_SEARCH_STEPS.
steps() { local n=$1 cap=${BENCH_SEARCH_STEPS:-$1}; echo $((cap < n ? cap : n)); }

scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s + 0.5); print (v < 1 ? 1 : v) }'; }

# Each loadgen run binds its clients to a fresh set of source addresses, so that sockets still in
# TIME_WAIT from an earlier run never collide with new ones.
SOURCE_SET=0
next_sources() {
    SOURCE_SET=$((SOURCE_SET + 1))
    local a=$((20 + SOURCE_SET % 220))
    printf '127.%d.0.1-127.%d.0.8' "$a" "$a"
}

# Loadgen arguments of a scenario (system-independent part).
scenario_args() {
    case $1 in
        fanout1k)
            echo "-n $(scaled 1000) --rate $FANOUT1K_RATE --search-from 50 --search-factor 1.3 --search-steps $(steps 24) --search-refine $REFINE"
            ;;
        fanout10k)
            echo "-n $(scaled 10000) --rate 5 --search-from 10 --search-factor 1.3 --search-steps $(steps 20) --search-refine $REFINE"
            ;;
        overload1k)
            echo "-n $(scaled 1000) --rate 200"
            ;;
        saturate1k)
            echo "-n $(scaled 1000) --rate $SATURATE_RATE"
            ;;
        idle)
            echo "-n $(scaled 19000) --idle $IDLE_HOLD"
            ;;
        channels10k)
            local n
            n=$(scaled 10000)
            echo "-n $n --channels $n --search-from 2000 --search-factor 1.15 --search-steps $(steps 24) --search-refine $REFINE --publish-concurrency $PUBLISH_CONCURRENCY"
            ;;
        *) die "unknown scenario $1" ;;
    esac
}

# variant_files SYSTEM: the site, main context and wsserver arguments of a variant system
# (crier-deployed-b: BENCH_SITE_B, BENCH_MAIN_B, BENCH_WSSERVER_ARGS_B), empty for the shipped
# ones; sets VARIANT_SITE, VARIANT_MAIN, VARIANT_WS_ARGS.
variant_files() {
    local suffix=${1##*-deployed} var
    VARIANT_SITE='' VARIANT_MAIN='' VARIANT_WS_ARGS=''
    [[ -n $suffix ]] || return 0
    suffix=${suffix#-}
    var=BENCH_SITE_${suffix^^}
    VARIANT_SITE=${!var:-}
    var=BENCH_MAIN_${suffix^^}
    VARIANT_MAIN=${!var:-}
    var=BENCH_WSSERVER_ARGS_${suffix^^}
    VARIANT_WS_ARGS=${!var:-}
    [[ -n $VARIANT_SITE$VARIANT_MAIN$VARIANT_WS_ARGS ]] ||
        die "$1 needs BENCH_SITE_${suffix^^}, BENCH_MAIN_${suffix^^} or BENCH_WSSERVER_ARGS_${suffix^^}"
    [[ -z $VARIANT_SITE || -f $VARIANT_SITE ]] || die "$VARIANT_SITE: no such file"
    [[ -z $VARIANT_MAIN || -f $VARIANT_MAIN ]] || die "$VARIANT_MAIN: no such file"
}

start_system() {
    case $1 in
        crier-deployed*)
            variant_files "$1"
            bench_deployed_start "$SCRATCH" "$BIN" "$VARIANT_SITE" "$VARIANT_MAIN" "$VARIANT_WS_ARGS"
            ;;
        writer) bench_writer_start "$SCRATCH" "$WRITER" ;;
        writer-deployed*)
            variant_files "$1"
            bench_writer_start "$SCRATCH" "$WRITER" deployed "$VARIANT_SITE" "$VARIANT_MAIN"
            ;;
        crier) bench_crier_start "$SCRATCH" "$BIN" ;;
        crier-history) bench_crier_start "$SCRATCH" "$BIN" "${BENCH_HISTORY:-bench}" ;;
        crier-cluster) bench_crier_start "$SCRATCH" "$BIN" "" "$CLUSTER_NODES" ;;
        nchan) bench_nchan_start "$SCRATCH" memory ;;
        nchan-redis) bench_nchan_start "$SCRATCH" redis ;;
    esac
}

stop_system() {
    case $1 in
        crier-deployed*) bench_deployed_stop ;;
        crier | crier-history | crier-cluster) bench_crier_stop ;;
        writer*) bench_writer_stop ;;
        nchan | nchan-redis) bench_nchan_stop ;;
    esac
    bench_redis_flush
    [[ $1 != crier-cluster ]] || bench_cluster_flush
}

# Redis connections held by wsserver (Crier) right now, in REDIS_CONNS: its sockets to
# 127.0.0.1:REDIS_PORT (every node's port on crier-cluster: REDIS_CONN_PORTS) that it opened itself. This runs while the system is measured, so it must
# cost next to nothing: `ss -p` would read every descriptor of every process (about 0.15 s of
# CPU per call with 10,000 clients, spent during Crier's measurements only).
# Instead one kernel-filtered query lists the sockets to Redis with their inodes, and an inode
# not seen before is attributed once, by looking for it among wsserver's descriptors
# (REDIS_INODE_OWNER caches the answer: 1 wsserver's, 0 another process's). A client socket
# wsserver accepted whose ephemeral source port happens to equal REDIS_PORT would match "dst"
# too (with 19,000 clients over 8 source addresses that happens), so sockets on wsserver's own
# listening ports are left out.
declare -A REDIS_INODE_OWNER=()
count_redis_conns() { # count_redis_conns PID: sets REDIS_CONNS
    local pid=$1 ino dst="" port
    REDIS_CONNS=0
    for port in ${REDIS_CONN_PORTS:-$REDIS_PORT}; do
        dst="${dst:+$dst or }dst 127.0.0.1:$port"
    done
    for ino in $(ss -Htne state established \
        "( ( $dst ) and not sport = :${WS_PORT:-0} and not sport = :${WS_ADMIN_PORT:-0} )" 2>/dev/null |
        grep -o 'ino:[0-9]*' | cut -d: -f2); do
        if [[ -z ${REDIS_INODE_OWNER[$ino]:-} ]]; then
            if [[ -n $(find "/proc/$pid/fd" -lname "socket:\[$ino\]" -print -quit 2>/dev/null) ]]; then
                REDIS_INODE_OWNER[$ino]=1
            else
                REDIS_INODE_OWNER[$ino]=0
            fi
        fi
        ((REDIS_CONNS += REDIS_INODE_OWNER[$ino])) || true
    done
}

RESULTS=$OUT/results.tsv
: >"$RESULTS"
# record scenario system run metric value
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

extract() { # extract JSON scenario system run: append the scenario's metrics to results.tsv
    local json=$1 scenario=$2 system=$3 run=$4
    local best='([.phases[] | select(.held)] | max_by(.rate_asked))'
    local fixed='([.phases[] | select(.kind == "fixed")] | first)'
    # Steal in the phases whose figures are reported: the fixed one, the best held one and the
    # ones not held (a disturbed step below the best held rate changes nothing).
    local steal="([.phases[] | select(.kind == \"fixed\" or (.held | not)) | .steal_cores // 0] + [$best.steal_cores // 0] | max)"
    local q
    case $scenario in
        fanout1k | fanout10k)
            q="{max_rate: (.max_lossless_rate // 0),
                p50_ms: $fixed.latency.p50_ms, p90_ms: $fixed.latency.p90_ms, p99_ms: $fixed.latency.p99_ms,
                p999_ms: $fixed.latency.p999_ms, max_ms: $fixed.latency.max_ms,
                cpu_us_per_delivery_fixed: $fixed.server_cpu_us_per_delivery,
                other_cores_fixed: $fixed.other_cores,
                cpu_us_per_delivery_at_max: ($best.server_cpu_us_per_delivery // null),
                deliveries_per_sec_at_max: ($best.deliveries_per_sec // 0),
                other_cores_max: ([.phases[].other_cores] | max),
                steal_cores_max: $steal,
                connect_failures: .connections.failed}"
            ;;
        overload1k | saturate1k)
            q="{deliveries_per_sec: $fixed.deliveries_per_sec, lost: $fixed.lost, loss_pct: $fixed.loss_pct,
                sockets_ended: $fixed.sockets_ended, publish_rate: $fixed.publish_rate,
                p99_ms: $fixed.latency.p99_ms, cpu_us_per_delivery: $fixed.server_cpu_us_per_delivery,
                other_cores: $fixed.other_cores, steal_cores_max: ($fixed.steal_cores // 0),
                connect_failures: .connections.failed}"
            ;;
        idle)
            q="{sockets: .idle.sockets, pss_bytes_per_socket: .idle.pss_bytes_per_socket,
                rss_bytes_per_socket: .idle.rss_bytes_per_socket,
                server_mib_after: (.idle.rss_after / 1048576), connect_failures: .connections.failed}"
            ;;
        channels10k)
            q="{max_rate: (.max_lossless_rate // 0),
                cpu_us_per_delivery_at_max: ($best.server_cpu_us_per_delivery // null),
                p99_ms_at_max: ($best.latency.p99_ms // null), other_cores_max: ([.phases[].other_cores] | max),
                steal_cores_max: $steal,
                connect_failures: .connections.failed}"
            ;;
    esac
    # Per process (nginx's workers under one label): CPU per delivery of the fixed phase.
    case $scenario in
        fanout1k | fanout10k | overload1k | saturate1k)
            q="$q + ($fixed as \$f | [\$f.server_cpu_us_by_label[]? | {key: (\"cpu_us_per_delivery_fixed_\" + .[0]),
                value: (if \$f.received > 0 then .[1] / \$f.received else null end)}] | from_entries)"
            ;;
    esac
    jq -r "$q | to_entries[] | select(.value != null) | \"\(.key)\t\(.value)\"" "$json" | while IFS=$'\t' read -r k v; do
        record "$scenario" "$system" "$run" "$k" "$v"
    done
}

# CPU time (µs) a process has used so far, from /proc/PID/stat (utime + stime); 0 when gone.
CLK_TCK=$(getconf CLK_TCK)
process_cpu_us() {
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1e6 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Busy CPU of the whole machine (µs) from /proc/stat: user nice system irq softirq, not steal
# (time the host withheld; loadgen reports it apart, as steal_cores).
machine_busy_us() { awk '/^cpu / { print ($2 + $3 + $4 + $7 + $8) * 10000; exit }' /proc/stat; }

# wait_quiet: wait (up to BENCH_QUIET_WAIT s) until the machine does less than 0.25 cores of
# other work; print the load seen last, in cores.
wait_quiet() {
    local deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-300})) a b load
    while :; do
        a=$(machine_busy_us)
        sleep 1
        b=$(machine_busy_us)
        load=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
        if awk -v l="$load" 'BEGIN { exit !(l < 0.25) }' || ((SECONDS > deadline)); then
            echo "$load"
            return 0
        fi
        log "machine busy ($load cores of other work); waiting before the next measurement"
        sleep 4
    done
}

# publish_cpu "REDIS PIDS": CPU time (µs) of webserver and the given Redis processes so far.
publish_cpu() {
    local total pid
    total=$(process_cpu_us "$WEB_PID")
    for pid in $1; do
        total=$((total + $(process_cpu_us "$pid")))
    done
    echo "$total"
}

measure() { # measure scenario system run
    local scenario=$1 system=$2 run=$3 base args rc=0 load
    base="$OUT/run$run/$scenario-$system"
    mkdir -p "$OUT/run$run"
    load=$(wait_quiet)
    record "$scenario" "$system" "$run" other_load_before "$load"
    start_system "$system" || die "$system did not start"
    # shellcheck disable=SC2046  # word splitting of the argument strings is intended
    args="$(scenario_args "$scenario") $(bench_loadgen_args "$(sed -E 's/-deployed-.*/-deployed/' <<<"$system")" "$scenario")"
    log "run $run/$RUNS $scenario on $system"
    # shellcheck disable=SC2086
    timeout --kill-after=10 900 "$BIN/loadgen" --label "$system" $args --duration "$DURATION" \
        --max-p99 "$MAX_P99" --connect-rate 5000 --source-addrs "$(next_sources)" \
        --json "$base.json" --svg "$base.svg" >"$base.txt" 2>"$base.log" &
    local lg=$! max_conns=0 tick=0 publish_cpu_before=0 redis_pids=$REDIS_PID
    REDIS_CONN_PORTS=$REDIS_PORT
    if [[ $system == crier-cluster ]]; then
        redis_pids="${CLUSTER_PIDS[*]}" REDIS_CONN_PORTS="${CLUSTER_PORTS[*]}"
    fi
    # webserver + Redis CPU over the whole run, per message published (the publish path).
    if [[ $system == crier* && $scenario != idle ]]; then
        publish_cpu_before=$(publish_cpu "$redis_pids")
    fi
    REDIS_INODE_OWNER=()
    while kill -0 "$lg" 2>/dev/null; do
        # Every 5 s: about 10 ms of CPU each time with 19,000 sockets open.
        if [[ $system == crier* ]] && ((tick++ % 5 == 1)); then
            count_redis_conns "$WS_PID"
            ((REDIS_CONNS > max_conns)) && max_conns=$REDIS_CONNS
        fi
        sleep 1
    done
    wait "$lg" || rc=$?
    [[ $system == crier* ]] && record "$scenario" "$system" "$run" redis_conns_per_wsserver "$max_conns"
    if [[ $system == crier* && $scenario != idle && -s $base.json ]]; then
        local publish_cpu published
        publish_cpu=$(($(publish_cpu "$redis_pids") - publish_cpu_before))
        published=$(jq '[.phases[].published] | add // 0' "$base.json")
        if ((published > 0)); then
            record "$scenario" "$system" "$run" web_redis_cpu_us_per_publish \
                "$(awk -v c="$publish_cpu" -v p="$published" 'BEGIN { printf "%.2f", c / p }')"
        fi
    fi
    if [[ $system == crier-cluster ]]; then
        local i=0 port calls
        for port in "${CLUSTER_PORTS[@]}"; do
            i=$((i + 1))
            calls=$(redis-cli -p "$port" INFO commandstats | sed -n 's/^cmdstat_spublish:calls=\([0-9]*\),.*/\1/p')
            record "$scenario" "$system" "$run" "spublish_shard$i" "${calls:-0}"
        done
    fi
    stop_system "$system"
    if [[ ! -s $base.json ]]; then
        log "loadgen failed (exit $rc) for $scenario on $system; see $base.log"
        tail -n 5 "$base.log" >&2 || true
        return 0
    fi
    ((rc == 0)) || log "loadgen exit $rc for $scenario on $system (see $base.txt)"
    extract "$base.json" "$scenario" "$system" "$run"
    sed -n '/^ ph /,$p' "$base.txt" | head -n 20 >&2 || true
}

bench_redis_start "$SCRATCH"
if [[ " $SYSTEMS " == *" crier-cluster "* ]]; then
    bench_cluster_start "$SCRATCH" || die "the Redis Cluster did not start"
fi
{
    printf 'command:'
    while IFS= read -r var; do printf ' %s=%q' "${var%%=*}" "${var#*=}"; done < <(env | grep '^BENCH_' | sort)
    printf ' scripts/bench.sh\n'
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*version: //'), nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), redis: $(redis-server --version | awk '{print $3}')"
    echo "crier: HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'); binaries in $BIN (wsserver file dated $(date -u -r "$BIN/wsserver" +%Y-%m-%dT%H:%M:%SZ))"
} | tee "$OUT/machine.txt" >&2
read -r -a system_list <<<"$SYSTEMS"
for ((run = 1; run <= RUNS; run++)); do
    for scenario in $SCENARIOS; do
        # Alternate which system goes first, so that neither always meets a warmer machine.
        order=("${system_list[@]}")
        if ((run % 2 == 0)); then
            mapfile -t order < <(printf '%s\n' "${system_list[@]}" | tac)
        fi
        for system in "${order[@]}"; do
            measure "$scenario" "$system" "$run"
        done
    done
done

# Medians over the runs, and the ratios of each Crier system to each Nchan system present.
awk -F'\t' -v systems="$SYSTEMS" '
    { key = $1 SUBSEP $4; vals[$1, $2, $4] = vals[$1, $2, $4] " " $5; if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
    function median(s,    a, k, i, j, t) {
        k = split(s, a, " ")
        if (k == 0) return ""
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    function fmt(v) { if (v == "") return "-"; if (v + 0 == int(v + 0) && v + 0 < 1e12) return sprintf("%d", v); return sprintf("%.3g", v) }
    END {
        ns = split(systems, sys, " ")
        nr = 0
        for (i = 1; i <= ns; i++) for (j = 1; j <= ns; j++)
            if (sys[i] ~ /^(crier|writer)/ && sys[j] ~ /^nchan/) { num[++nr] = sys[i]; den[nr] = sys[j] }
        printf "| scenario | metric |"
        for (i = 1; i <= ns; i++) printf " %s |", sys[i]
        for (r = 1; r <= nr; r++) printf " %s/%s |", num[r], den[r]
        printf "\n|---|---|"
        for (i = 1; i <= ns + nr; i++) printf "---|"
        printf "\n"
        for (o = 1; o <= n; o++) {
            split(order[o], km, SUBSEP)
            printf "| %s | %s |", km[1], km[2]
            delete m
            for (i = 1; i <= ns; i++) { m[sys[i]] = median(vals[km[1], sys[i], km[2]]); printf " %s |", fmt(m[sys[i]]) }
            for (r = 1; r <= nr; r++) {
                if (m[num[r]] != "" && m[den[r]] != "" && m[den[r]] + 0 != 0) printf " %.2f |", m[num[r]] / m[den[r]]
                else printf " - |"
            }
            printf "\n"
        }
    }' "$RESULTS" | tee "$OUT/table.md"
# A host that withheld CPU (steal) during a run makes that run's figures incomparable (0.05
# core: loadgen's STEAL_WARNING_CORES).
disturbed=$(awk -F'\t' '$4 == "steal_cores_max" && $5 + 0 > 0.05 { printf "%s %s run %s (%.2f cores); ", $1, $2, $3, $5 }' "$RESULTS")
if [[ -n $disturbed ]]; then
    log "WARNING: the host withheld CPU from this machine (steal) in phases that decide: ${disturbed%; }; re-run those when the host is quiet"
fi
log "results: $OUT (table.md, results.tsv, per-run JSON/text/SVG/logs)"
