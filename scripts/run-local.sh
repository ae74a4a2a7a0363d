#!/usr/bin/env bash
# Run the whole Crier stack locally: a private redis-server, webserver, wsserver and nginx in
# front, all in a temporary directory that is removed on exit.
#
# Usage: scripts/run-local.sh [--no-build]
#
#   --no-build   skip `cargo build` and use the binaries already in target/
#
# Environment:
#   CRIER_PORT             nginx front port (default 8080)
#   CRIER_RELEASE=1        build and run the release binaries instead of debug
#   CRIER_REDIS_URL        use this Redis instead of starting a private one
#   CRIER_PUBLISH_TOKEN    bearer token for POST /api/publish (generated and printed when unset)
#   CRIER_ALLOWED_ORIGINS  default http://127.0.0.1:$CRIER_PORT,http://localhost:$CRIER_PORT
#   CRIER_WEB_LISTEN, CRIER_WS_LISTEN
#                          default to unix sockets in the temporary directory (as deployed on
#                          one host); host:port listens on TCP instead
#   CRIER_WEB_ADMIN_LISTEN, CRIER_WS_ADMIN_LISTEN
#                          default to free ports on 127.0.0.1
#   Every other CRIER_* variable (and RUST_LOG) reaches the binaries unchanged.
#
# Ctrl-C stops everything. If any process dies on its own, the script says which and exits
# non-zero after stopping the others.
# shellcheck source-path=SCRIPTDIR
# Functions run from traps or passed to wait_until look unreachable to shellcheck:
# shellcheck disable=SC2317
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"
# shellcheck source=lib/free-port.sh
source "$ROOT/scripts/lib/free-port.sh"

log() { printf '[run-local] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() { sed -n '2,/^# shellcheck/{/^# shellcheck/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

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

# ---------------------------------------------------------------------------------------------
# System packages and tools.

packages=(nginx curl)
if [[ -z ${CRIER_REDIS_URL:-} ]]; then
    packages+=(redis-server)
fi
ensure_packages "${packages[@]}" || die "could not install: ${packages[*]}"
NGINX=$(find_tool nginx) || die "nginx is required"
command -v curl >/dev/null 2>&1 || die "curl is required"
if [[ -z ${CRIER_REDIS_URL:-} ]]; then
    REDIS_SERVER=$(find_tool redis-server) || die "redis-server is required"
    REDIS_CLI=$(find_tool redis-cli) || die "redis-cli is required (package redis-tools)"
fi

# Many sockets need many descriptors; take whatever the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# Build.

profile=debug
cargo_flags=()
if [[ ${CRIER_RELEASE:-0} == 1 ]]; then
    profile=release
    cargo_flags+=(--release)
fi
if [[ $BUILD -eq 1 ]]; then
    log "building ($profile)"
    (cd "$ROOT" && cargo build ${cargo_flags[@]+"${cargo_flags[@]}"} --bin webserver --bin wsserver)
fi
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/$profile
for bin in webserver wsserver; do
    [[ -x $BIN_DIR/$bin ]] || die "$BIN_DIR/$bin not found; run without --no-build"
done

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup.

DIR=$(mktemp -d "${TMPDIR:-/tmp}/crier.XXXXXX")
declare -A PIDS=()   # name -> pid of every background process started here
ORDER=()             # names in start order; stopped in reverse
LOGS=()              # name=logfile for processes whose output goes to a file

start_bg() { # start_bg name logfile|- cmd...: start cmd in the background, remember its pid
    local name=$1 logfile=$2
    shift 2
    if [[ $logfile == - ]]; then
        "$@" &
    else
        "$@" >"$logfile" 2>&1 &
        LOGS+=("$name=$logfile")
    fi
    PIDS[$name]=$!
    ORDER+=("$name")
}

show_log() { # show_log name: print the tail of a process's log file, if it has one
    local entry
    for entry in ${LOGS[@]+"${LOGS[@]}"}; do
        if [[ ${entry%%=*} == "$1" && -s ${entry#*=} ]]; then
            log "last lines of ${entry#*=}:"
            tail -n 30 "${entry#*=}" >&2
        fi
    done
}

stop_one() { # stop_one name: SIGTERM, wait up to 15 s, then SIGKILL; reap
    local name=$1 pid=${PIDS[$1]} i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) did not stop within 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # Stop in reverse start order: nginx first, Redis last.
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
        if [[ -n ${PIDS[${ORDER[i]}]:-} ]]; then
            stop_one "${ORDER[i]}"
        fi
    done
    rm -rf "$DIR"
    log "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted; stopping"; exit 130' INT
trap 'log "terminated; stopping"; exit 143' TERM

# wait_until name tries cmd...: run cmd every 0.1 s until it succeeds; fail when the process
# `name` dies meanwhile or after `tries` attempts.
wait_until() {
    local name=$1 tries=$2 i
    shift 2
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            show_log "$name"
            die "$name exited during startup"
        fi
        sleep 0.1
    done
    show_log "$name"
    die "$name did not become ready within $((tries / 10)) s"
}

http_ok() { # http_ok url [curl options]: true when url answers 200
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "${@:2}" "$1" 2>/dev/null) || return 1
    [[ $code == 200 ]]
}

listen_ok() { # listen_ok address path: true when path answers 200 at a --listen address (unix:/… or host:port)
    if [[ $1 == unix:* ]]; then
        http_ok "http://localhost$2" --unix-socket "${1#unix:}"
    else
        http_ok "http://$1$2"
    fi
}

redis_ping() { [[ $("$REDIS_CLI" -s "$DIR/redis.sock" ping 2>/dev/null) == PONG ]]; }

# ---------------------------------------------------------------------------------------------
# Redis.

if [[ -z ${CRIER_REDIS_URL:-} ]]; then
    log "starting a private redis-server on $DIR/redis.sock"
    start_bg redis-server "$DIR/redis.log" \
        "$REDIS_SERVER" --port 0 --unixsocket "$DIR/redis.sock" --unixsocketperm 700 \
        --save '' --appendonly no --daemonize no --dir "$DIR"
    wait_until redis-server 100 redis_ping
    export CRIER_REDIS_URL="unix://$DIR/redis.sock"
else
    log "using CRIER_REDIS_URL=$CRIER_REDIS_URL"
fi

# ---------------------------------------------------------------------------------------------
# Configuration for the binaries (all through CRIER_* environment variables).

export CRIER_PORT=${CRIER_PORT:-8080}
picked=$(free_ports 2) || die "could not find free ports"
read -r admin_port web_admin_port <<<"$picked"
# nginx reaches both servers over unix sockets, as the shipped site config does on one host.
export CRIER_WEB_LISTEN=${CRIER_WEB_LISTEN:-unix:$DIR/webserver.sock}
export CRIER_WS_LISTEN=${CRIER_WS_LISTEN:-unix:$DIR/wsserver.sock}
export CRIER_WS_ADMIN_LISTEN=${CRIER_WS_ADMIN_LISTEN:-127.0.0.1:$admin_port}
export CRIER_WEB_ADMIN_LISTEN=${CRIER_WEB_ADMIN_LISTEN:-127.0.0.1:$web_admin_port}
# The shipped demo: heartbeats as in ws4redis' examples, presence on the lobby.
export CRIER_HEARTBEAT=${CRIER_HEARTBEAT:---heartbeat--}
export CRIER_PRESENCE=${CRIER_PRESENCE:-lobby}
token_generated=0
if [[ -z ${CRIER_PUBLISH_TOKEN:-} ]]; then
    CRIER_PUBLISH_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    token_generated=1
fi
export CRIER_PUBLISH_TOKEN
export CRIER_ALLOWED_ORIGINS=${CRIER_ALLOWED_ORIGINS:-http://127.0.0.1:$CRIER_PORT,http://localhost:$CRIER_PORT}

# ---------------------------------------------------------------------------------------------
# webserver and wsserver (their logs go to this terminal).

log "starting webserver on $CRIER_WEB_LISTEN"
start_bg webserver - "$BIN_DIR/webserver"
log "starting wsserver on $CRIER_WS_LISTEN (admin $CRIER_WS_ADMIN_LISTEN)"
start_bg wsserver - "$BIN_DIR/wsserver"
wait_until webserver 300 listen_ok "$CRIER_WEB_LISTEN" /healthz
wait_until wsserver 300 http_ok "http://$CRIER_WS_ADMIN_LISTEN/readyz"

# ---------------------------------------------------------------------------------------------
# nginx in front.

# render_once in out from to [from to ...]: copy `in` to `out`, replacing each literal `from` (which
# must occur in `in` exactly once) by `to`.
render_once() {
    local in=$1 out=$2 text count
    shift 2
    text=$(<"$in")
    while [[ $# -ge 2 ]]; do
        count=$(grep -oF -- "$1" "$in" | wc -l)
        [[ $count -eq 1 ]] || die "$in: expected '$1' exactly once, found $count"
        text=${text//"$1"/"$2"}
        shift 2
    done
    printf '%s\n' "$text" >"$out"
}

# An upstream `server` line takes both forms: unix:/path and host:port.
render_once "$ROOT/nginx/crier.conf" "$DIR/crier.conf" \
    'unix:/run/crier/webserver.sock' "$CRIER_WEB_LISTEN" \
    'unix:/run/crier/wsserver.sock' "$CRIER_WS_LISTEN" \
    'listen 127.0.0.1:8080;' "listen 127.0.0.1:$CRIER_PORT;"
user_line=
if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
    user_line='user root;'
fi
main=$(<"$ROOT/nginx/nginx-main.conf.template")
main=${main//"@USER_LINE@"/"$user_line"}
main=${main//"@DIR@"/"$DIR"}
main=${main//"@SITE@"/"$DIR/crier.conf"}
printf '%s\n' "$main" >"$DIR/nginx.conf"

nginx_args=(-c "$DIR/nginx.conf" -p "$DIR")
# -e (nginx >= 1.19.5) keeps nginx from touching /var/log/nginx/error.log before it reads ours.
if "$NGINX" -h 2>&1 | grep -q -- '-e filename'; then
    nginx_args+=(-e "$DIR/error.log")
fi
if ! "$NGINX" -t -q "${nginx_args[@]}" 2>"$DIR/nginx-t.log"; then
    cat "$DIR/nginx-t.log" >&2
    die "nginx rejected $DIR/nginx.conf"
fi
log "starting nginx on 127.0.0.1:$CRIER_PORT"
start_bg nginx "$DIR/nginx.log" "$NGINX" "${nginx_args[@]}"
wait_until nginx 100 http_ok "http://127.0.0.1:$CRIER_PORT/healthz"

# ---------------------------------------------------------------------------------------------
# Demo accounts.

seed_accounts() {
    local bin=$BIN_DIR/webserver entry name group
    local -a args groups
    local -a accounts=("alice:red,common" "bob:blue,common" "admin:admins")
    if ! timeout 20 "$bin" users --help >/dev/null 2>&1; then
        log "notice: 'webserver users add' is not available yet; no demo accounts created"
        return 0
    fi
    for entry in "${accounts[@]}"; do
        name=${entry%%:*}
        args=(users add "$name")
        IFS=, read -r -a groups <<<"${entry#*:}"
        for group in "${groups[@]}"; do
            args+=(--group "$group")
        done
        if ! printf 'password\n' | timeout 20 "$bin" "${args[@]}" >>"$DIR/seed.log" 2>&1; then
            log "notice: could not create demo account $name:"
            tail -n 5 "$DIR/seed.log" >&2
            log "notice: skipping the remaining demo accounts"
            return 0
        fi
    done
    printf '\nDemo accounts (password: password):\n'
    for entry in "${accounts[@]}"; do
        printf '  %-6s groups: %s\n' "${entry%%:*}" "${entry#*:}"
    done
}
seed_accounts

# ---------------------------------------------------------------------------------------------
# Ready.

front=127.0.0.1:$CRIER_PORT
printf '\nCrier is running (state in %s, removed on exit).\n' "$DIR"
printf '  page:       http://%s/\n' "$front"
printf '  websocket:  ws://%s/ws/chat?subscribe-broadcast\n' "$front"
if [[ $token_generated -eq 1 ]]; then
    printf '  publish token (generated): %s\n' "$CRIER_PUBLISH_TOKEN"
else
    printf '  publish token: from CRIER_PUBLISH_TOKEN\n'
fi
printf '  publish:\n'
printf '    curl -sS -H "Authorization: Bearer %s" -H '\''Content-Type: application/json'\'' -d '\''{"facility":"chat","broadcast":true,"message":"hello"}'\'' http://%s/api/publish\n' \
    "$CRIER_PUBLISH_TOKEN" "$front"
printf '  webserver:  %s (admin http://%s)   wsserver: %s (admin http://%s)\n' \
    "$CRIER_WEB_LISTEN" "$CRIER_WEB_ADMIN_LISTEN" "$CRIER_WS_LISTEN" "$CRIER_WS_ADMIN_LISTEN"
printf '  redis:      %s\n' "$CRIER_REDIS_URL"
printf '  nginx logs: %s/access.log %s/error.log\n' "$DIR" "$DIR"
printf 'Press Ctrl-C to stop.\n\n'

# ---------------------------------------------------------------------------------------------
# Wait until a child dies (or a signal arrives; the traps then clean up).

set +e
wait -n
status=$?
set -e
dead=
for name in "${ORDER[@]}"; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
        dead+="${dead:+, }$name (pid ${PIDS[$name]})"
        ((status == 0)) || show_log "$name"
        wait "${PIDS[$name]}" 2>/dev/null || true
        unset "PIDS[$name]"
    fi
done
if ((status == 0)); then
    # The servers exit 0 only when told to stop: Ctrl-C reaches every process of the terminal's
    # process group at once, and a child may finish before this script's INT trap runs.
    log "${dead:-a child process} stopped; stopping the rest"
    exit 0
fi
log "error: ${dead:-a child process} exited unexpectedly (status $status); stopping the rest"
exit "$status"
