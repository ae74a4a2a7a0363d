# shellcheck shell=bash
# Start and stop the systems scripts/bench.sh compares, each fresh for every measurement, all on
# 127.0.0.1 in one scratch directory. Source it; it defines functions only. Needs free-port.sh.
#
#   bench_redis_start DIR            redis-server (no persistence) on a free port: REDIS_PORT, REDIS_PID
#   bench_redis_flush                FLUSHALL between measurements
#   bench_redis_stop
#   bench_cluster_start DIR          a Redis Cluster of three masters (no replicas, no
#                                    persistence) on free ports: CLUSTER_PORTS, CLUSTER_PIDS,
#                                    CLUSTER_NODES (host:port,…)
#   bench_cluster_flush              FLUSHALL and CONFIG RESETSTAT on every master
#   bench_cluster_stop
#   bench_crier_start DIR BIN_DIR [HISTORY [CLUSTER_NODES]]
#                                    wsserver + webserver on free ports (on the cluster when
#                                    CLUSTER_NODES is given), waits for /readyz:
#                                    WS_PORT, WS_ADMIN_PORT, WEB_PORT, WS_PID, WEB_PID, CRIER_TOKEN
#   bench_crier_stop
#   bench_deployed_start DIR BIN_DIR [SITE [MAIN [WSSERVER_ARGS]]]
#                                    Crier as deployed: wsserver and webserver on unix sockets,
#                                    nginx in front with the site SITE (default nginx/crier.conf)
#                                    rendered as run-local.sh does and MAIN (default
#                                    bench/crier-nginx.conf.template, Nchan's main context): FRONT_PORT, WS_PID, WEB_PID,
#                                    FRONT_MASTER_PID, FRONT_WORKER_PIDS, CRIER_TOKEN
#   bench_deployed_stop
#   bench_writer_start DIR WRITER [deployed [SITE [MAIN]]]
#                                    the minimal fan-out writer (bench/loopback-send ws-writer),
#                                    alone on TCP or behind nginx with the shipped site on a unix
#                                    socket: WRITER_PORT, WRITER_PID (+ FRONT_* when deployed)
#   bench_writer_stop
#   bench_nchan_start DIR memory|redis
#                                    nginx + Nchan (bench/nchan.conf.template): NCHAN_PORT,
#                                    NCHAN_MASTER_PID, NCHAN_WORKER_PIDS (space-separated)
#   bench_nchan_stop
#   bench_loadgen_args SYSTEM SCENARIO
#                                    loadgen's --ws-url/--publish*/--server-pid options for it
#
# Every server gets the same descriptor cap (BENCH_SERVER_NOFILE, default 20000) and the same
# number of worker threads/processes (BENCH_SERVER_WORKERS, default: number of cores): wsserver's
# tokio workers (its fan-out threads are one per core by default) and nginx's workers. webserver
# runs with its default of one thread (--threads 1), the cheapest per request.

_bench_log() { printf '[bench] %s\n' "$*" >&2; }

BENCH_SERVER_NOFILE=${BENCH_SERVER_NOFILE:-20000}
BENCH_SERVER_WORKERS=${BENCH_SERVER_WORKERS:-$(nproc)}

# _bench_wait_port PORT SECONDS: wait until something accepts on 127.0.0.1:PORT.
_bench_wait_port() {
    local port=$1 secs=$2 i
    for ((i = 0; i < secs * 20; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# _bench_kill PID SECONDS: SIGTERM, wait, then SIGKILL (only the given process).
_bench_kill() {
    local pid=$1 secs=${2:-10} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    _bench_log "pid $pid did not stop within ${secs}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

bench_redis_start() {
    local dir=$1
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 10000 --daemonize no --logfile "$dir/redis.log" &
    REDIS_PID=$!
    _bench_wait_port "$REDIS_PORT" 10 || { _bench_log "redis did not start"; return 1; }
}

bench_redis_flush() {
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
}

bench_redis_stop() {
    _bench_kill "${REDIS_PID:-}" 10
    REDIS_PID=''
}

bench_cluster_start() {
    local dir=$1/cluster port i
    mkdir -p "$dir"
    read -r -a CLUSTER_PORTS <<<"$(free_ports 3)"
    CLUSTER_PIDS=()
    for port in "${CLUSTER_PORTS[@]}"; do
        mkdir -p "$dir/$port"
        # The bus port defaults to port + 10000, beyond 65535 for a high free port.
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --maxclients 10000 \
            --cluster-enabled yes --cluster-port "$(free_port)" --cluster-config-file "$dir/$port/nodes.conf" --dir "$dir/$port" \
            --daemonize no --logfile "$dir/$port/redis.log" &
        CLUSTER_PIDS+=($!)
        _bench_wait_port "$port" 10 || { _bench_log "cluster node $port did not start"; return 1; }
    done
    CLUSTER_NODES=$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
    CLUSTER_NODES=${CLUSTER_NODES%,}
    # shellcheck disable=SC2046  # one argument per node
    redis-cli --cluster create $(tr ',' ' ' <<<"$CLUSTER_NODES") --cluster-replicas 0 --cluster-yes \
        >"$dir/create.log" 2>&1 || { _bench_log "redis-cli --cluster create failed; see $dir/create.log"; return 1; }
    for port in "${CLUSTER_PORTS[@]}"; do
        for ((i = 0; i < 200; i++)); do
            redis-cli -p "$port" CLUSTER INFO | grep -q '^cluster_state:ok' && break
            sleep 0.05
        done
    done
}

bench_cluster_flush() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
        redis-cli -p "$port" FLUSHALL >/dev/null
        redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    done
}

bench_cluster_stop() {
    local pid
    for pid in "${CLUSTER_PIDS[@]}"; do
        _bench_kill "$pid" 10
    done
    CLUSTER_PIDS=()
}

bench_crier_start() { # bench_crier_start DIR BIN [HISTORY [CLUSTER_NODES]]: HISTORY is CRIER_HISTORY (default none)
    local dir=$1 bin=$2 history=${3:-} cluster=${4:-} ports i
    ports=$(free_ports 3)
    read -r WS_PORT WS_ADMIN_PORT WEB_PORT <<<"$ports"
    CRIER_TOKEN=bench-token-0123456789abcdef
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec env TOKIO_WORKER_THREADS="$BENCH_SERVER_WORKERS" CRIER_HISTORY="$history" "$bin/wsserver" \
            --listen "127.0.0.1:$WS_PORT" --admin-listen "127.0.0.1:$WS_ADMIN_PORT" \
            --redis-url "redis://127.0.0.1:$REDIS_PORT" --max-connections 100000 \
            ${cluster:+--redis-cluster-nodes "$cluster"}
    ) >"$dir/wsserver.log" 2>&1 &
    WS_PID=$!
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec env CRIER_PUBLISH_TOKEN="$CRIER_TOKEN" CRIER_HISTORY="$history" "$bin/webserver" \
            --listen "127.0.0.1:$WEB_PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
            ${cluster:+--redis-cluster-nodes "$cluster"}
    ) >"$dir/webserver.log" 2>&1 &
    WEB_PID=$!
    for ((i = 0; i < 200; i++)); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WS_ADMIN_PORT/readyz" 2>/dev/null) == 200 ]] &&
            _bench_wait_port "$WEB_PORT" 1; then
            return 0
        fi
        sleep 0.05
    done
    _bench_log "crier did not become ready; see $dir/wsserver.log and $dir/webserver.log"
    return 1
}

bench_crier_stop() {
    _bench_kill "${WS_PID:-}" 20
    _bench_kill "${WEB_PID:-}" 10
    WS_PID=''
    WEB_PID=''
}

# _bench_nginx_workers MASTER_PID: the master's worker pids, once all BENCH_SERVER_WORKERS run.
_bench_nginx_workers() {
    local master=$1 pids i
    for ((i = 0; i < 100; i++)); do
        pids=$(pgrep -P "$master" | tr '\n' ' ')
        [[ $(wc -w <<<"$pids") -ge $BENCH_SERVER_WORKERS ]] && break
        sleep 0.05
    done
    printf '%s\n' "$pids"
}

# _bench_front_start DIR SITE WS_ADDR WEB_ADDR [MAIN]: nginx with the site SITE rendered as
# run-local.sh renders it (its wsserver and webserver upstreams replaced by WS_ADDR and WEB_ADDR,
# e.g. unix:DIR/ws.sock; the listen line on a free port with Nchan's backlog) inside the main
# context MAIN (default bench/crier-nginx.conf.template); waits until GET /healthz through it
# answers 200: FRONT_PORT, FRONT_MASTER_PID, FRONT_WORKER_PIDS.
_bench_front_start() {
    local dir=$1 site=$2 ws=$3 web=$4 main=${5:-} root user_line="" i
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    main=${main:-$root/bench/crier-nginx.conf.template}
    FRONT_PORT=$(free_port)
    sed -e "s|unix:/run/crier/webserver.sock|$web|" -e "s|unix:/run/crier/wsserver.sock|$ws|" \
        -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$FRONT_PORT backlog=4096;|" "$site" >"$dir/crier.conf"
    if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        user_line="user root;"
    fi
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@DIR@|$dir|g" -e "s|@WORKERS@|$BENCH_SERVER_WORKERS|" \
        -e "s|@SITE@|$dir/crier.conf|" "$main" >"$dir/nginx.conf"
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec "${NGINX:-nginx}" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
    ) >"$dir/nginx-stdout.log" 2>&1 &
    FRONT_MASTER_PID=$!
    FRONT_WORKER_PIDS=$(_bench_nginx_workers "$FRONT_MASTER_PID")
    for ((i = 0; i < 200; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FRONT_PORT/healthz" 2>/dev/null) == 200 ]] && return 0
        sleep 0.05
    done
    _bench_log "nginx in front did not answer; see $dir/*.log"
    return 1
}

bench_deployed_start() {
    local dir=$1/deployed bin=$2 root site main=${4:-} admin i extra=()
    # More wsserver arguments, split on blanks (a variant's BENCH_WSSERVER_ARGS_<X>).
    read -r -a extra <<<"${5:-}"
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    site=${3:-$root/nginx/crier.conf}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd) # nginx -p takes relative paths from the prefix
    rm -f "$dir/ws.sock" "$dir/web.sock"
    DEPLOYED_WEB_SOCK=$dir/web.sock
    admin=$(free_port)
    CRIER_TOKEN=bench-token-0123456789abcdef
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec env TOKIO_WORKER_THREADS="$BENCH_SERVER_WORKERS" "$bin/wsserver" \
            --listen "unix:$dir/ws.sock" --admin-listen "127.0.0.1:$admin" \
            --redis-url "redis://127.0.0.1:$REDIS_PORT" --max-connections 100000 \
            ${cluster:+--redis-cluster-nodes "$cluster"} "${extra[@]}"
    ) >"$dir/wsserver.log" 2>&1 &
    WS_PID=$!
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec env CRIER_PUBLISH_TOKEN="$CRIER_TOKEN" "$bin/webserver" \
            --listen "unix:$dir/web.sock" --admin-listen "" --redis-url "redis://127.0.0.1:$REDIS_PORT"
    ) >"$dir/webserver.log" 2>&1 &
    WEB_PID=$!
    for ((i = 0; i < 200; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz" 2>/dev/null) == 200 &&
            -S $dir/web.sock ]] && break
        sleep 0.05
    done
    _bench_front_start "$dir" "$site" "unix:$dir/ws.sock" "unix:$dir/web.sock" "$main" || {
        _bench_log "crier as deployed did not answer through nginx; see $dir/*.log"
        return 1
    }
}

bench_deployed_stop() {
    _bench_kill "${FRONT_MASTER_PID:-}" 20
    bench_crier_stop
    FRONT_MASTER_PID=''
    FRONT_WORKER_PIDS=''
}

# bench_writer_start DIR WRITER [deployed [SITE [MAIN]]]: the minimal fan-out writer
# (bench/loopback-send's ws-writer): alone on a TCP port (WRITER_PORT), or "deployed" on a unix
# socket behind nginx with SITE (default nginx/crier.conf; both upstreams are the writer) as
# bench_deployed_start runs it: WRITER_PID, and FRONT_* for deployed.
bench_writer_start() {
    local dir=$1/writer writer=$2 mode=${3:-} site=${4:-} main=${5:-} root i
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    site=${site:-$root/nginx/crier.conf}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd) # nginx -p takes relative paths from the prefix
    rm -f "$dir/writer.sock"
    WRITER_PORT=$(free_port)
    local listen=(--tcp "127.0.0.1:$WRITER_PORT")
    [[ $mode == deployed ]] && listen+=(--unix "$dir/writer.sock")
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec "$writer" "${listen[@]}"
    ) >"$dir/writer.log" 2>&1 &
    WRITER_PID=$!
    _bench_wait_port "$WRITER_PORT" 10 || { _bench_log "ws-writer did not start; see $dir/writer.log"; return 1; }
    if [[ $mode == deployed ]]; then
        for ((i = 0; i < 100; i++)); do
            [[ -S $dir/writer.sock ]] && break
            sleep 0.05
        done
        _bench_front_start "$dir" "$site" "unix:$dir/writer.sock" "unix:$dir/writer.sock" "$main"
    fi
}

bench_writer_stop() {
    _bench_kill "${FRONT_MASTER_PID:-}" 20
    _bench_kill "${WRITER_PID:-}" 10
    FRONT_MASTER_PID=''
    FRONT_WORKER_PIDS=''
    WRITER_PID=''
}

bench_nchan_start() {
    local dir=$1 variant=$2 root user_line="" upstream="" pass="" i
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    NCHAN_PORT=$(free_port)
    mkdir -p "$dir/nchan"
    dir=$(cd "$dir" && pwd) # nginx -p takes relative paths from the prefix
    if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        user_line="user root;"
    fi
    if [[ $variant == redis ]]; then
        upstream="upstream nchan_redis { nchan_redis_server redis://127.0.0.1:$REDIS_PORT; }"
        pass="nchan_redis_pass nchan_redis;"
    fi
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@DIR@|$dir/nchan|g" -e "s|@WORKERS@|$BENCH_SERVER_WORKERS|" \
        -e "s|@PORT@|$NCHAN_PORT|" -e "s|@REDIS_UPSTREAM@|$upstream|" -e "s|@REDIS_PASS@|$pass|" \
        "$root/bench/nchan.conf.template" >"$dir/nchan/nginx.conf"
    (
        ulimit -n "$BENCH_SERVER_NOFILE"
        exec "${NGINX:-nginx}" -c "$dir/nchan/nginx.conf" -p "$dir/nchan"
    ) >"$dir/nchan/stdout.log" 2>&1 &
    NCHAN_MASTER_PID=$!
    _bench_wait_port "$NCHAN_PORT" 10 || { _bench_log "nginx+nchan did not start; see $dir/nchan/error.log"; return 1; }
    NCHAN_WORKER_PIDS=
    for ((i = 0; i < 100; i++)); do
        NCHAN_WORKER_PIDS=$(pgrep -P "$NCHAN_MASTER_PID" | tr '\n' ' ')
        [[ $(wc -w <<<"$NCHAN_WORKER_PIDS") -ge $BENCH_SERVER_WORKERS ]] && break
        sleep 0.05
    done
    if [[ $variant == redis ]]; then
        # Nchan connects to Redis lazily; a first publish makes sure it is ready.
        for ((i = 0; i < 100; i++)); do
            [[ $(curl -s -o /dev/null -w '%{http_code}' -X POST -d warmup "http://127.0.0.1:$NCHAN_PORT/pub?id=warmup") == 20* ]] && return 0
            sleep 0.1
        done
        _bench_log "nchan could not publish through redis; see $dir/nchan/error.log"
        return 1
    fi
}

bench_nchan_stop() {
    _bench_kill "${NCHAN_MASTER_PID:-}" 20
    NCHAN_MASTER_PID=''
    NCHAN_WORKER_PIDS=''
}

# bench_loadgen_args SYSTEM SCENARIO: loadgen's arguments pointing at a started system
# (crier-deployed | crier | crier-history | crier-cluster | nchan | nchan-redis) for a bench.sh scenario (idle publishes nothing; channels10k
# subscribes Crier's clients by user).
bench_loadgen_args() {
    local system=$1 scenario=$2 pids publish
    case $system in
        crier-deployed)
            local flag=subscribe-broadcast audience=broadcast p
            if [[ $scenario == channels10k ]]; then
                flag=subscribe-user audience=user
            fi
            pids="wsserver=$WS_PID,nginx=$FRONT_MASTER_PID"
            for p in $FRONT_WORKER_PIDS; do
                pids="$pids,nginx-worker=$p"
            done
            if [[ $scenario == idle ]]; then
                publish="--publish none"
            else
                pids="$pids,webserver=$WEB_PID,redis=$REDIS_PID"
                publish="--publish api --publish-url http://127.0.0.1:$FRONT_PORT/api/publish --publish-token $CRIER_TOKEN"
                case ${BENCH_DEPLOYED_PUBLISH:-api} in
                    # Publishers that write to Redis themselves (ws4redis' Django side) skip nginx.
                    redis) publish="--publish redis" ;;
                    # A publisher on the host posting to webserver's own socket skips it too.
                    direct) publish="$publish --publish-unix-socket $DEPLOYED_WEB_SOCK" ;;
                esac
            fi
            echo "--ws-url ws://127.0.0.1:$FRONT_PORT/ws/bench?$flag --facility bench --audience $audience $publish" \
                "--redis-url redis://127.0.0.1:$REDIS_PORT --server-pid $pids"
            ;;
        crier-cluster)
            local flag=subscribe-broadcast audience=broadcast p
            [[ $scenario == channels10k ]] && flag=subscribe-user audience=user
            if [[ $scenario == idle ]]; then
                pids="wsserver=$WS_PID" publish="--publish none"
            else
                pids="wsserver=$WS_PID,webserver=$WEB_PID"
                for p in "${CLUSTER_PIDS[@]}"; do
                    pids="$pids,redis=$p"
                done
                publish="--publish api --publish-url http://127.0.0.1:$WEB_PORT/api/publish --publish-token $CRIER_TOKEN"
            fi
            echo "--ws-url ws://127.0.0.1:$WS_PORT/ws/bench?$flag --facility bench --audience $audience $publish" \
                "--redis-cluster-nodes $CLUSTER_NODES --server-pid $pids"
            ;;
        crier | crier-history)
            local flag=subscribe-broadcast audience=broadcast
            if [[ $scenario == channels10k ]]; then
                flag=subscribe-user audience=user
            fi
            if [[ $scenario == idle ]]; then
                pids="wsserver=$WS_PID" publish="--publish none"
            else
                pids="wsserver=$WS_PID,webserver=$WEB_PID,redis=$REDIS_PID"
                publish="--publish api --publish-url http://127.0.0.1:$WEB_PORT/api/publish --publish-token $CRIER_TOKEN"
            fi
            echo "--ws-url ws://127.0.0.1:$WS_PORT/ws/bench?$flag --facility bench --audience $audience $publish" \
                "--redis-url redis://127.0.0.1:$REDIS_PORT --server-pid $pids"
            ;;
        writer)
            pids="writer=$WRITER_PID"
            publish="--publish http --publish-url http://127.0.0.1:$WRITER_PORT/pub?id={channel}"
            [[ $scenario == idle ]] && publish="--publish none"
            echo "--audience channel --ws-url ws://127.0.0.1:$WRITER_PORT/sub?id={channel} $publish --server-pid $pids"
            ;;
        writer-deployed)
            local p
            pids="writer=$WRITER_PID,nginx=$FRONT_MASTER_PID"
            for p in $FRONT_WORKER_PIDS; do
                pids="$pids,nginx-worker=$p"
            done
            publish="--publish http --publish-url http://127.0.0.1:$FRONT_PORT/pub?id={channel}"
            [[ $scenario == idle ]] && publish="--publish none"
            echo "--audience channel --ws-url ws://127.0.0.1:$FRONT_PORT/ws/sub?id={channel} $publish --server-pid $pids"
            ;;
        nchan | nchan-redis)
            pids="nginx=$NCHAN_MASTER_PID"
            local p
            for p in $NCHAN_WORKER_PIDS; do
                pids="$pids,nginx-worker=$p"
            done
            publish="--publish http --publish-url http://127.0.0.1:$NCHAN_PORT/pub?id={channel}"
            [[ $system == nchan-redis && $scenario != idle ]] && pids="$pids,redis=$REDIS_PID"
            [[ $scenario == idle ]] && publish="--publish none"
            echo "--audience channel --ws-url ws://127.0.0.1:$NCHAN_PORT/sub?id={channel} $publish --server-pid $pids"
            ;;
    esac
}
