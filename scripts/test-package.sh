#!/usr/bin/env bash
# The Debian package under a real systemd: builds crier_<version>_<arch>.deb from the debug
# binaries, runs lintian on it, then boots a systemd container on this machine's own root
# (systemd-nspawn), installs the package there with apt and checks the units at work. Run by
# tests/tests/package.rs, or directly (as root):
#
#   scripts/test-package.sh
#
# The container: `systemd-nspawn --volatile=yes -D / -b systemd.firstboot=off` as in
# packaging/README.md, with /usr, /etc and /var as overlays whose writes go to scratch space (so
# apt and dpkg work inside while the host stays untouched) and its own network namespace (so
# ports 80, 443, 6379, 8000, 8081… are the container's, whatever runs on the host). It is stopped,
# and its scratch space removed, whatever happens (trap on EXIT, INT and TERM).
#
# Needs root (systemd-nspawn), and installs with apt-get what is missing: systemd-container,
# lintian, nginx, redis-server, openssl, curl, python3, and cargo-deb (ensure_cargo_deb).
# Needs the debug binaries (target/debug/webserver and wsserver; built when missing);
# CRIER_BIN_DIR=DIR takes them from DIR instead.
#
# Prints one line per check ("ok - …" or "FAIL - …" followed by the evidence) and a last line
# "N passed, M failed"; exits 1 when any check failed. Where this machine cannot boot a container
# (not root, no systemd-nspawn available) it prints "SKIP: <reason>" and exits 77.
# shellcheck source-path=SCRIPTDIR disable=SC2317  # check functions are called through check()
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

log() { printf '[test-package] %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }

# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"
# poll SECONDS CMD...: run CMD every 0.2 s until it succeeds; fails (with CMD's last output)
# when SECONDS pass first. For conditions that follow an asynchronous event (a restart, a frame).
poll() {
    local limit=$1 deadline=$((SECONDS + $1)) out
    shift
    while true; do
        if out=$("$@" 2>&1); then
            return 0
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            printf 'still failing after %ss: %s\n' "$limit" "$out"
            return 1
        fi
        sleep 0.2
    done
}

# --- prerequisites -------------------------------------------------------------------------

[[ ${EUID:-$(id -u)} -eq 0 ]] || skip "booting a container with systemd-nspawn needs root"
if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    skip "not a Debian-like system (no dpkg/apt-get): no package to test"
fi
ensure_packages systemd-container >&2 || skip "systemd-nspawn (package systemd-container) cannot be installed"
ensure_packages lintian nginx redis-server openssl curl python3 >&2 ||
    { fail "prerequisite: apt-get install lintian nginx redis-server openssl curl python3"; finish; }
ensure_cargo_deb || { fail "prerequisite: cargo install cargo-deb"; finish; }
NSPAWN=$(find_tool systemd-nspawn) || skip "systemd-nspawn not found"
[[ -d /sys/fs/cgroup ]] || skip "no /sys/fs/cgroup: systemd cannot run in a container here"

BIN_DIR=${CRIER_BIN_DIR:-$ROOT/target/debug}
if [[ -z ${CRIER_BIN_DIR:-} && ( ! -x $BIN_DIR/webserver || ! -x $BIN_DIR/wsserver ) ]]; then
    log "building the debug binaries: cargo build --bin webserver --bin wsserver"
    cargo build --bin webserver --bin wsserver >&2 || { fail "build the debug binaries"; finish; }
fi

WORK=$(mktemp -d /tmp/crier-package.XXXXXX)
MACHINE=crier-test-$$
NSPAWN_PID=
CT_PID=
cleanup() {
    if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # SIGTERM: nspawn asks the container's systemd to shut down, then exits.
        kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 1 150); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            log "the container did not stop within 30 s: killing it"
            kill -KILL "$NSPAWN_PID" 2>/dev/null
            [[ -z $CT_PID ]] || kill -KILL "$CT_PID" 2>/dev/null
        fi
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    rm -rf "/run/systemd/nspawn/propagate/$MACHINE" "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build ---------------------------------------------------------------------------------

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ARCH=$(dpkg --print-architecture)
DEB=$WORK/share/crier_${VERSION}-1_${ARCH}.deb
DEB2=$WORK/share/crier_${VERSION}-2_${ARCH}.deb
mkdir -p "$WORK/share"
cp scripts/lib/ws-probe.py "$WORK/share/"

# The debug binaries (stripped by cargo-deb, which warns that the dev profile is unusual), without
# the dbgsym package and with fast compression; and the same package as revision 2 for the
# upgrade check.
build_debs() {
    local dir
    dir=$(mktemp -d "$WORK/target.XXXXXX")
    mkdir -p "$dir/debug"
    ln -s "$BIN_DIR/webserver" "$BIN_DIR/wsserver" "$dir/debug/"
    CARGO_TARGET_DIR=$dir cargo deb -p crier-wsserver --profile dev --no-build --no-dbgsym --fast \
        --quiet --output "$DEB" &&
        CARGO_TARGET_DIR=$dir cargo deb -p crier-wsserver --profile dev --no-build --no-dbgsym \
            --fast --quiet --deb-revision 2 --output "$DEB2"
}
check "cargo deb builds crier_${VERSION}-1_${ARCH}.deb (and revision 2)" build_debs
[[ -f $DEB && -f $DEB2 ]] || finish

package_contents() {
    local list
    list=$(dpkg-deb -c "$DEB" | awk '{print $1, $6}')
    local want
    for want in '-rwxr-xr-x ./usr/bin/crier-webserver' '-rwxr-xr-x ./usr/bin/crier-wsserver' \
        '-rw-r--r-- ./usr/lib/systemd/system/crier-webserver.service' \
        '-rw-r--r-- ./usr/lib/systemd/system/crier-wsserver.service' \
        '-rw-r--r-- ./usr/lib/systemd/system/crier-wsserver@.service' \
        '-rw-r--r-- ./usr/lib/systemd/system/crier-webserver.socket' \
        '-rw-r--r-- ./usr/lib/systemd/system/crier-wsserver.socket' \
        '-rw-r--r-- ./usr/lib/systemd/system/crier-wsserver@.socket' \
        '-rw------- ./etc/crier/webserver.env' '-rw------- ./etc/crier/wsserver.env' \
        '-rw------- ./etc/crier/wsserver-8082.env' \
        '-rw-r--r-- ./etc/nginx/sites-available/crier.conf' \
        '-rw-r--r-- ./usr/share/doc/crier/copyright' \
        '-rw-r--r-- ./usr/share/doc/crier/changelog.Debian.gz'; do
        grep -qxF -- "$want" <<<"$list" || { echo "missing: $want"; echo "$list"; return 1; }
    done
    [[ $(dpkg-deb -f "$DEB" Package Version Architecture | tr '\n' ' ') == "Package: crier Version: ${VERSION}-1 Architecture: $ARCH " ]] ||
        { dpkg-deb -f "$DEB"; return 1; }
    dpkg-deb -f "$DEB" Depends | grep -q 'libc6' || { echo "Depends names no libc6"; return 1; }
    [[ $(dpkg-deb -f "$DEB" Recommends) == nginx && $(dpkg-deb -f "$DEB" Suggests) == redis-server ]] ||
        { dpkg-deb -f "$DEB" Recommends Suggests; return 1; }
    local conffiles
    conffiles=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | sort)
    [[ $conffiles == "$(printf '%s\n' /etc/crier/webserver.env /etc/crier/wsserver-8082.env \
        /etc/crier/wsserver.env /etc/nginx/sites-available/crier.conf)" ]] ||
        { echo "conffiles:"; echo "$conffiles"; return 1; }
}
check "the package holds both binaries, the units, the env files (0600), the site; conffiles; Depends" \
    package_contents

# --- lintian -------------------------------------------------------------------------------

LINTIAN_OUT=$WORK/lintian.txt
lintian_clean() {
    lintian --display-level '>=warning' "$DEB" >"$LINTIAN_OUT" 2>&1
    cat "$LINTIAN_OUT"
    if grep -q '^E: ' "$LINTIAN_OUT"; then
        echo "lintian reports errors"
        return 1
    fi
    local tag unlisted=0
    while read -r tag; do
        [[ -n $tag ]] || continue
        grep -qF "\`$tag\`" packaging/README.md || { echo "warning not listed in packaging/README.md: $tag"; unlisted=1; }
    done < <(sed -n 's/^W: crier: \([a-z0-9.+-]*\).*/\1/p' "$LINTIAN_OUT" | sort -u)
    [[ $unlisted -eq 0 ]]
}
check "lintian: no errors, every warning listed (with its reason) in packaging/README.md" lintian_clean

# --- the offline security figures ------------------------------------------------------------

# systemd-analyze security --offline on the unit files as packaged: the figure the running units
# must match.
mkdir -p "$WORK/unpacked"
dpkg-deb -x "$DEB" "$WORK/unpacked"
UNITS_DIR=$WORK/unpacked/usr/lib/systemd/system
cp "$UNITS_DIR/crier-wsserver@.service" "$UNITS_DIR/crier-wsserver@8082.service"
cp "$UNITS_DIR/crier-wsserver@.socket" "$UNITS_DIR/crier-wsserver@8082.socket"
exposure() { sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -n 1; }
declare -A OFFLINE=()
for unit in crier-webserver.service crier-wsserver.service crier-wsserver@8082.service; do
    OFFLINE[$unit]=$(cd "$UNITS_DIR" && systemd-analyze security --offline=true --no-pager "./$unit" 2>&1 | exposure)
done

# --- boot ----------------------------------------------------------------------------------

# The container's /etc is the host's with writes going to $WORK/etc. Services enabled on the host
# that the test does not need are masked there before the boot (they would slow it down or fail);
# nginx and redis-server run with their Debian units.
mkdir -p "$WORK/etc/systemd/system"
for link in /etc/systemd/system/multi-user.target.wants/*.service; do
    [[ -e $link ]] || continue
    unit=$(basename "$link")
    case $unit in
        nginx.service | redis-server.service) ;;
        *) ln -sf /dev/null "$WORK/etc/systemd/system/$unit" ;;
    esac
done

BOOT_LOG=$WORK/boot.log
log "booting the container $MACHINE"
"$NSPAWN" --quiet --volatile=yes -D / --overlay=/usr::/usr --overlay="/etc:$WORK/etc:/etc" \
    --overlay=/var::/var --private-network --register=no --keep-unit --machine="$MACHINE" \
    --bind-ro="$WORK/share:/mnt/crier" --console=passive -b systemd.firstboot=off \
    </dev/null >"$BOOT_LOG" 2>&1 &
NSPAWN_PID=$!

# The container's PID 1 is the nspawn process's child named systemd (nspawn's short-lived
# intermediate child, which sets up the mounts first, is not).
for _ in $(seq 1 300); do
    CT_PID=$(pgrep -x -P "$NSPAWN_PID" systemd | head -n 1)
    if [[ -n $CT_PID ]] || ! kill -0 "$NSPAWN_PID" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
# in_ct CMD...: run CMD inside the container (all its namespaces), with its PATH.
in_ct() {
    nsenter -t "$CT_PID" -m -u -i -n -p -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        SYSTEMD_PAGER= LANG=C.UTF-8 "$@"
}
booted() {
    local state
    state=$(in_ct timeout 5 systemctl is-system-running --wait 2>&1)
    echo "$state"
    [[ $state == running || $state == degraded ]]
}
boot() {
    [[ -n $CT_PID ]] || { echo "no container process"; cat "$BOOT_LOG"; return 1; }
    poll 120 booted || { cat "$BOOT_LOG"; in_ct systemctl --failed --no-pager; return 1; }
}
check "systemd boots in the container (systemd-nspawn -b)" boot
if [[ -z $CT_PID ]] || ! booted >/dev/null 2>&1; then
    finish
fi
in_ct systemctl --failed --no-legend --plain >&2

# --- install ---------------------------------------------------------------------------------

apt_in_ct() {
    in_ct env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
prepare() {
    # Anything of an earlier install on the host must not leak in (writes go to the overlay).
    in_ct sh -c 'rm -rf /etc/crier /etc/systemd/system/crier-* /etc/systemd/system/*.wants/crier-* \
        /etc/nginx/sites-enabled/crier.conf /var/lib/crier' || return 1
    # This machine's image may carry a policy-rc.d that forbids starting services (as container
    # images do); a real host has none, and deb-systemd-invoke would skip every start and stop.
    in_ct rm -f /usr/sbin/policy-rc.d || return 1
    in_ct systemctl daemon-reload || return 1
    poll 30 in_ct systemctl is-active redis-server nginx || {
        in_ct systemctl status --no-pager redis-server nginx
        return 1
    }
}
check "redis-server and nginx run in the container (their Debian units)" prepare

install_deb() { apt_in_ct install "/mnt/crier/$(basename "$DEB")"; }
check "apt-get install ./crier_${VERSION}-1_${ARCH}.deb" install_deb

installed_state() {
    local out
    out=$(in_ct systemctl is-enabled crier-webserver crier-wsserver | tr '\n' ' ')
    [[ $out == "enabled enabled " ]] || { echo "is-enabled: $out"; return 1; }
    out=$(in_ct systemctl is-active crier-webserver crier-wsserver | tr '\n' ' ')
    [[ $out == "inactive inactive " ]] || { echo "is-active (must not start before configured): $out"; return 1; }
    out=$(in_ct stat -c '%a %U %n' /etc/crier/webserver.env /etc/crier/wsserver.env \
        /etc/crier/wsserver-8082.env /etc/crier/publish-token.env)
    echo "$out"
    [[ $(grep -c '^600 root ' <<<"$out") -eq 4 ]] || { echo "every env file must be 0600 root"; return 1; }
    local token
    token=$(in_ct sed -n 's/^CRIER_PUBLISH_TOKEN=//p' /etc/crier/publish-token.env)
    [[ $token =~ ^[0-9a-f]{64}$ ]] || { echo "no generated token in /etc/crier/publish-token.env"; return 1; }
    out=$(in_ct getent passwd crier crier-webserver crier-wsserver) && { echo "a user exists: $out"; return 1; }
    return 0
}
check "installed: units enabled, not started; env files 0600; a 64-hex publish token; no user" installed_state
TOKEN=$(in_ct sed -n 's/^CRIER_PUBLISH_TOKEN=//p' /etc/crier/publish-token.env)

# Configure as an operator would: TLS certificate at the site's paths, site enabled, an edit to
# wsserver.env (kept across the upgrade below).
configure() {
    local live=/etc/letsencrypt/live/crier.example.com
    in_ct mkdir -p "$live" || return 1
    in_ct openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=crier.example.com \
        -keyout "$live/privkey.pem" -out "$live/fullchain.pem" 2>&1 || return 1
    in_ct ln -s ../sites-available/crier.conf /etc/nginx/sites-enabled/crier.conf || return 1
    in_ct nginx -t 2>&1 || return 1
    in_ct systemctl reload nginx || return 1
    in_ct sh -c 'printf "\n# operator edit\nCRIER_DRAIN_DEADLINE=5s\n" >>/etc/crier/wsserver.env'
}
check "configure: certificate, nginx site enabled (nginx -t), an edit to wsserver.env" configure

# --- start: Type=notify --------------------------------------------------------------------------

# dpkg_field FIELD: the installed crier package's FIELD, as dpkg-query shows it
dpkg_field() { in_ct dpkg-query -W -f="\${$1}" crier; }
prop() { in_ct systemctl show -P "$2" "$1"; } # prop UNIT PROPERTY: one property's value
main_pid() { prop "$1" MainPID; }
start_ready() {
    in_ct systemctl start crier-webserver crier-wsserver crier-wsserver@8082 || {
        in_ct journalctl --no-pager -n 50 -u 'crier-*'
        return 1
    }
    # One attempt each, no retry: the start returned, so every listener must be up.
    in_ct curl -fsS -o /dev/null --unix-socket /run/crier/webserver.sock http://localhost/ ||
        { echo "webserver on /run/crier/webserver.sock not answering"; return 1; }
    in_ct curl -fsS http://127.0.0.1:9191/healthz || { echo "wsserver admin :9191 not answering"; return 1; }
    in_ct curl -fsS http://127.0.0.1:18082/healthz || { echo "wsserver@8082 admin :18082 not answering"; return 1; }
    local unit out
    for unit in crier-webserver crier-wsserver crier-wsserver@8082; do
        out="$(prop "$unit" Type) $(prop "$unit" ActiveState) $(prop "$unit" SubState)"
        [[ $out == "notify active running" ]] || { echo "$unit: $out"; return 1; }
    done
}
check "systemctl start crier-webserver crier-wsserver crier-wsserver@8082 returns once each listens (Type=notify)" \
    start_ready

# --- a message through nginx ---------------------------------------------------------------------

PROBE_DIR=$WORK/share
# probe NAME URL ARGS...: start ws-probe.py inside the container; its lines go to $PROBE_DIR/NAME.
probe() {
    local name=$1
    shift
    in_ct python3 /mnt/crier/ws-probe.py "$@" --origin https://crier.example.com \
        >"$PROBE_DIR/$name" 2>&1 &
}
probe_says() { grep -qx -- "$2" "$PROBE_DIR/$1" || { cat "$PROBE_DIR/$1"; return 1; }; }

publish() { # publish MESSAGE: through nginx (TLS), with the generated token; prints the reply
    in_ct curl -fsS -k --resolve crier.example.com:443:127.0.0.1 https://crier.example.com/api/publish \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"facility\": \"boot\", \"broadcast\": true, \"message\": \"$1\"}"
}
# The socket's subscription reaches Redis shortly after the upgrade: publish until Redis reports
# a receiver, then the frame must arrive.
publish_received() { publish "$1" | grep -Eq '"receivers": *[1-9]'; }
through_nginx() {
    probe nginx wss://127.0.0.1/ws/boot?subscribe-broadcast --host crier.example.com
    poll 20 probe_says nginx open || return 1
    poll 20 publish_received hello-through-nginx || return 1
    poll 20 probe_says nginx 'message hello-through-nginx'
}
check "a websocket through nginx (wss) receives a message published with POST /api/publish" through_nginx

# --- restart drains --------------------------------------------------------------------------------

restart_drains() {
    local before after
    before=$(main_pid crier-wsserver)
    # Straight to crier-wsserver's socket: through nginx the upstream could be the @8082 instance.
    probe drain ws://localhost/ws/boot?subscribe-broadcast --unix /run/crier/wsserver.sock
    poll 20 probe_says drain open || return 1
    in_ct systemctl restart crier-wsserver || return 1
    poll 20 probe_says drain 'close 1001' || return 1
    [[ $(in_ct systemctl is-active crier-wsserver) == active ]] || { echo "not active after restart"; return 1; }
    after=$(main_pid crier-wsserver)
    [[ $after != "$before" && $after != 0 ]] || { echo "MainPID $before -> $after"; return 1; }
    in_ct curl -fsS http://127.0.0.1:9191/healthz
}
check "systemctl restart crier-wsserver: its sockets get close 1001, the unit is active again" restart_drains

# --- reload hands every socket to a new process ---------------------------------------------------

main_pid_moved() { local now; now=$(main_pid crier-wsserver); [[ $now != "$1" && $now != 0 ]]; }
reload_hands_off() {
    local before
    before=$(main_pid crier-wsserver)
    probe handoff ws://localhost/ws/boot?subscribe-broadcast --unix /run/crier/wsserver.sock
    poll 20 probe_says handoff open || return 1
    in_ct systemctl reload crier-wsserver || return 1
    # The old process names the new one MainPID once every socket is handed, then exits.
    poll 30 main_pid_moved "$before" || { echo "MainPID stayed $before"; return 1; }
    [[ $(in_ct systemctl is-active crier-wsserver) == active ]] || {
        echo "not active after reload"
        in_ct journalctl --no-pager -n 40 -u crier-wsserver
        return 1
    }
    poll 20 publish_received after-reload || return 1
    poll 20 probe_says handoff 'message after-reload' || return 1
    if grep -Eq '^(close|error)' "$PROBE_DIR/handoff"; then cat "$PROBE_DIR/handoff"; return 1; fi
    in_ct journalctl --no-pager -u crier-wsserver | grep -F 'live hand-off done'
}
check "systemctl reload crier-wsserver: a new process takes the open websocket (no close), MainPID moves" \
    reload_hands_off

# --- a bad value fails the start, without a restart loop -------------------------------------------

# start_fails PORT VALUE MESSAGE: with VALUE in /etc/crier/wsserver-PORT.env, starting the
# instance fails, the journal has MESSAGE, and the unit is "failed" with no restart scheduled (not
# "activating (auto-restart)").
start_fails() {
    local unit=crier-wsserver@$1 out
    in_ct sh -c "umask 077; printf '%s\\n' '$2' >/etc/crier/wsserver-$1.env" || return 1
    if in_ct systemctl start "$unit" 2>&1; then
        echo "the start succeeded"; return 1
    fi
    out="$(prop "$unit" ActiveState) $(prop "$unit" Result) $(prop "$unit" NRestarts)"
    [[ $out == "failed exit-code 0" ]] || { echo "state: $out"; return 1; }
    out=$(in_ct journalctl --no-pager -u "$unit")
    grep -qF -- "$3" <<<"$out" || { echo "$out"; return 1; }
    grep -F -- "$3" <<<"$out"
}
check "a bad env value (CRIER_MAX_CONNECTIONS=0): start fails, 'invalid configuration: …' in the journal, no restart" \
    start_fails 8083 CRIER_MAX_CONNECTIONS=0 'invalid configuration: --max-connections'
check "an unparsable env value (CRIER_PING_INTERVAL=soon): start fails, the error in the journal, no restart" \
    start_fails 8084 CRIER_PING_INTERVAL=soon "invalid value 'soon' for '--ping-interval"

# --- kill -9 is followed by a restart --------------------------------------------------------------

restarted_after_kill() {
    local old
    old=$(main_pid crier-wsserver@8082)
    [[ $old != 0 ]] || { echo "no MainPID"; return 1; }
    in_ct kill -9 "$old" || return 1
    active_again() {
        local state pid
        state="$(prop crier-wsserver@8082 ActiveState) $(prop crier-wsserver@8082 NRestarts)"
        pid=$(main_pid crier-wsserver@8082)
        echo "$state, MainPID $pid"
        [[ $state == "active 1" && $pid != 0 && $pid != "$old" ]]
    }
    poll 30 active_again || return 1
    in_ct curl -fsS http://127.0.0.1:18082/healthz
}
check "kill -9 of crier-wsserver@8082: systemd restarts it (NRestarts=1, active)" restarted_after_kill

# --- security figures --------------------------------------------------------------------------

security_matches() {
    local unit live
    for unit in crier-webserver.service crier-wsserver.service crier-wsserver@8082.service; do
        live=$(in_ct systemd-analyze security --no-pager "$unit" 2>&1 | exposure)
        echo "$unit: running $live, offline ${OFFLINE[$unit]}"
        [[ -n $live && $live == "${OFFLINE[$unit]}" ]] || return 1
    done
}
check "systemd-analyze security of the running units equals the offline figure" security_matches

# --- upgrade ---------------------------------------------------------------------------------------

upgrade() {
    local token_before ws_before inst_before
    token_before=$(in_ct cat /etc/crier/publish-token.env)
    ws_before=$(main_pid crier-wsserver)
    inst_before=$(main_pid crier-wsserver@8082)
    apt_in_ct install "/mnt/crier/$(basename "$DEB2")" || return 1
    [[ $(dpkg_field Version) == "${VERSION}-2" ]] || { echo "not upgraded"; return 1; }
    in_ct grep -qx 'CRIER_DRAIN_DEADLINE=5s' /etc/crier/wsserver.env || { echo "the operator's edit is lost"; return 1; }
    [[ $(in_ct cat /etc/crier/publish-token.env) == "$token_before" ]] || { echo "the token changed"; return 1; }
    local stray
    stray=$(in_ct find /etc/crier /etc/nginx -name '*.dpkg-*')
    [[ -z $stray ]] || { echo "left by dpkg: $stray"; return 1; }
    [[ $(main_pid crier-wsserver) != "$ws_before" ]] || { echo "crier-wsserver was not restarted"; return 1; }
    [[ $(main_pid crier-wsserver@8082) != "$inst_before" ]] || { echo "crier-wsserver@8082 was not restarted"; return 1; }
    local out
    out=$(in_ct systemctl is-active crier-webserver crier-wsserver crier-wsserver@8082 | tr '\n' ' ')
    [[ $out == "active active active " ]] || { echo "after the upgrade: $out"; return 1; }
}
check "upgrade to -2: conffile edits and the token kept, running units (and instances) restarted" upgrade

# --- remove, then purge -----------------------------------------------------------------------

FILES=$(in_ct dpkg-query -L crier | grep -v -e '^/\.$' -e '^/usr$' -e '^/usr/bin$' -e '^/usr/lib$' \
    -e '^/usr/lib/systemd$' -e '^/usr/lib/systemd/system$' -e '^/usr/share$' -e '^/usr/share/doc$' \
    -e '^/etc$' -e '^/etc/nginx$' -e '^/etc/nginx/sites-available$')
remove() {
    # An instance enabled by the operator: its link must go with the purge.
    in_ct systemctl enable crier-wsserver@8082 2>&1 || return 1
    apt_in_ct remove crier || return 1
    local left
    left=$(in_ct pgrep -a -f '/usr/bin/crier-')
    [[ -z $left ]] || { echo "processes:"; echo "$left"; return 1; }
    # Listed still, as "masked" (deb-systemd-helper, until the purge) or "not-found" (the enabled
    # instance), but none active, starting or failed.
    left=$(in_ct systemctl list-units --all --plain --no-legend 'crier*' | grep -v ' inactive dead ')
    [[ -z $left ]] || { echo "units not stopped:"; echo "$left"; return 1; }
    [[ $(dpkg_field db:Status-Abbrev) == "rc " ]] || { echo "not in state rc"; return 1; }
    in_ct grep -qx 'CRIER_DRAIN_DEADLINE=5s' /etc/crier/wsserver.env || { echo "conffile gone on remove"; return 1; }
    in_ct test -f /etc/crier/publish-token.env || { echo "token gone on remove"; return 1; }
    in_ct test ! -e /usr/bin/crier-wsserver || { echo "binary left"; return 1; }
}
check "apt-get remove crier: every unit stopped (instances too), none failed; configuration kept" remove

purge() {
    local left
    apt_in_ct purge crier || return 1
    # The test's own certificate is not the package's.
    in_ct rm -rf /etc/letsencrypt/live/crier.example.com
    left=$(for f in $FILES; do in_ct test -e "$f" -o -L "$f" && echo "$f"; done)
    [[ -z $left ]] || { echo "package files left:"; echo "$left"; return 1; }
    left=$(in_ct find /etc /usr /var /srv /opt /run -not -path '/var/log/*' \
        \( -name 'crier*' -o -name '*[-_.@]crier*' \) 2>/dev/null)
    [[ -z $left ]] || { echo "left behind:"; echo "$left"; return 1; }
    left=$(in_ct systemctl list-units --all --plain --no-legend 'crier*')
    [[ -z $left ]] || { echo "units still loaded:"; echo "$left"; return 1; }
    left=$(in_ct systemctl list-unit-files --plain --no-legend 'crier*')
    [[ -z $left ]] || { echo "unit files:"; echo "$left"; return 1; }
    left=$(in_ct sh -c 'getent passwd | grep -i crier; getent group | grep -i crier')
    [[ -z $left ]] || { echo "users or groups:"; echo "$left"; return 1; }
    [[ -z $(dpkg_field db:Status-Abbrev 2>/dev/null) ]] || { echo "still known to dpkg"; return 1; }
    in_ct nginx -t 2>&1
}
check "apt-get purge crier: no unit, user, file, enablement or nginx link left; nginx -t still passes" purge

finish
