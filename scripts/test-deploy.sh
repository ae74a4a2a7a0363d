#!/usr/bin/env bash
# Deployment checks: systemd units, nginx production site, install.sh, exit codes and the
# generated configuration reference. Run by tests/tests/deployment.rs, or directly:
#
#   scripts/test-deploy.sh
#
# Needs the debug binaries (target/debug/webserver and wsserver; built with
# `cargo build --bin webserver --bin wsserver` when missing). CRIER_BIN_DIR=DIR takes them from
# DIR instead. Installs the packages that provide systemd-analyze, nginx, openssl and python3
# with apt-get when they are missing (as root, or through sudo).
#
# Prints one line per check ("ok - …" or "FAIL - …" followed by the evidence) and a last line
# "N passed, M failed"; exits 1 when any check failed.
# shellcheck source-path=SCRIPTDIR disable=SC2317  # check functions are called through check()
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

log() { printf '[test-deploy] %s\n' "$*" >&2; }

# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- prerequisites -------------------------------------------------------------------------

need_tool() { # need_tool TOOL PACKAGE: print the tool's path, installing PACKAGE when missing
    local path
    if path=$(find_tool "$1" 2>/dev/null); then
        printf '%s\n' "$path"
        return 0
    fi
    ensure_packages "$2" >&2 || return 1
    find_tool "$1"
}

SYSTEMD_ANALYZE=$(need_tool systemd-analyze systemd) || fail "prerequisite: systemd-analyze (package systemd)"
NGINX=$(need_tool nginx nginx) || fail "prerequisite: nginx"
OPENSSL=$(need_tool openssl openssl) || fail "prerequisite: openssl"
PYTHON=$(need_tool python3 python3) || fail "prerequisite: python3"
[[ $FAILED -eq 0 ]] || finish

BIN_DIR=${CRIER_BIN_DIR:-$ROOT/target/debug}
if [[ -z ${CRIER_BIN_DIR:-} && ( ! -x $BIN_DIR/webserver || ! -x $BIN_DIR/wsserver ) ]]; then
    log "building the debug binaries: cargo build --bin webserver --bin wsserver"
    cargo build --bin webserver --bin wsserver >&2 || { fail "build the debug binaries"; finish; }
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)
for bin in webserver wsserver; do
    [[ -x $BIN_DIR/$bin ]] || { fail "binary $BIN_DIR/$bin exists"; finish; }
done
log "binaries: $BIN_DIR"

UNITS=(crier-webserver.service crier-wsserver.service crier-wsserver@.service)
SOCKETS=(crier-webserver.socket crier-wsserver.socket crier-wsserver@.socket)

# --- systemd units ---------------------------------------------------------------------------

# The units as shipped name /usr/bin/crier-NAME (the Debian package's paths); verify needs the
# ExecStart binaries to exist, so render them with the binaries under test, as install.sh does.
UNIT_DIR=$WORK/units
mkdir -p "$UNIT_DIR"
for unit in "${UNITS[@]}" "${SOCKETS[@]}"; do
    sed "s#/usr/bin/crier-#$BIN_DIR/#g" "systemd/$unit" >"$UNIT_DIR/$unit"
done
cp "$UNIT_DIR/crier-wsserver@.service" "$UNIT_DIR/crier-wsserver@8082.service"
cp "$UNIT_DIR/crier-wsserver@.socket" "$UNIT_DIR/crier-wsserver@8082.socket"

verify_unit() { # passes when systemd-analyze verify exits 0 and prints nothing (warnings included)
    local out rc
    out=$(cd "$UNIT_DIR" && "$SYSTEMD_ANALYZE" verify --man=no "./$1" 2>&1)
    rc=$?
    printf '%s' "$out"
    [[ $rc -eq 0 && -z $out ]]
}
security_unit() { # passes when the overall exposure is 2.0 or lower
    local out level
    out=$(cd "$UNIT_DIR" && "$SYSTEMD_ANALYZE" security --offline=true --no-pager --threshold=20 "./$1" 2>&1)
    local rc=$?
    level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [[ $rc -ne 0 || -z $level ]] || ! awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
        printf '%s\n' "$out" | grep -v '^✓'
        return 1
    fi
    printf '%s\n' "$level"
}
for unit in "${UNITS[@]}" crier-wsserver@8082.service; do
    check "systemd-analyze verify $unit" verify_unit "$unit"
    if out=$(security_unit "$unit"); then
        pass "systemd-analyze security $unit: exposure $out <= 2.0"
    else
        fail "systemd-analyze security $unit: exposure <= 2.0" "$out"
    fi
done

# Socket units run no process: verified, not rated (`security` rates the services they start).
for unit in "${SOCKETS[@]}" crier-wsserver@8082.socket; do
    check "systemd-analyze verify $unit" verify_unit "$unit"
done

unit_value() { # unit_value FILE KEY: the last value of KEY= in FILE
    sed -n "s/^$2=//p" "$1" | tail -n 1
}
seconds() { # seconds 30s|10s|2min: whole seconds, or nothing for other forms
    case $1 in
        *min) printf '%d\n' $(( ${1%min} * 60 )) ;;
        *ms) printf '0\n' ;;
        *s) printf '%d\n' "${1%s}" ;;
        *[0-9]) printf '%d\n' "$1" ;;
    esac
}
help_default() { # help_default BINARY FLAG: the [default: …] of --FLAG in BINARY --help
    env -i "$BIN_DIR/$1" --help | awk -v f="      --$2 " '
        index($0, f) == 1 { on = 1; next }
        on && /^      --/ { exit }
        on && /\[default: / { sub(/.*\[default: /, ""); sub(/\].*/, ""); print; exit }'
}
unit_limits() {
    local unit=$1 bin=$2 stop drain nofile
    stop=$(seconds "$(unit_value "systemd/$unit" TimeoutStopSec)")
    drain=$(seconds "$(help_default "$bin" drain-deadline)")
    if [[ -z $stop || -z $drain || $stop -le $drain ]]; then
        echo "TimeoutStopSec (${stop:-?}s) must be above $bin's default --drain-deadline (${drain:-?}s)"
        return 1
    fi
    unit_value "systemd/$unit" Type | grep -qx notify || { echo "Type=notify missing"; return 1; }
    unit_value "systemd/$unit" ExecStartPre | grep -q -- "--check" || { echo "ExecStartPre with --check missing"; return 1; }
    unit_value "systemd/$unit" Restart | grep -qx on-failure || { echo "Restart=on-failure missing"; return 1; }
    unit_value "systemd/$unit" DynamicUser | grep -qx yes || { echo "DynamicUser=yes missing"; return 1; }
    if [[ $bin == wsserver ]]; then
        nofile=$(unit_value "systemd/$unit" LimitNOFILE)
        if [[ -z $nofile || $nofile -lt 1048576 ]]; then
            echo "LimitNOFILE=${nofile:-unset}: must be at least 1048576"
            return 1
        fi
    fi
}
# socket_contract SOCKET SERVICE PATH: the socket unit listens on PATH under the name the
# binaries take (listen), for nginx's group, and its service requires it; nginx's shipped sites
# name PATH (instance %i: the template's form).
socket_contract() {
    local socket=$1 service=$2 path=$3 site
    [[ $(unit_value "systemd/$socket" ListenStream) == "$path" ]] || { echo "$socket: ListenStream is not $path"; return 1; }
    [[ $(unit_value "systemd/$socket" FileDescriptorName) == listen ]] || { echo "$socket: FileDescriptorName=listen missing"; return 1; }
    [[ $(unit_value "systemd/$socket" SocketMode) == 0660 ]] || { echo "$socket: SocketMode=0660 missing"; return 1; }
    [[ $(unit_value "systemd/$socket" SocketGroup) == www-data ]] || { echo "$socket: SocketGroup=www-data missing"; return 1; }
    local unit=${socket%.socket}
    [[ $(unit_value "systemd/$service" Requires) == "${unit/@/@%i}.socket" ]] || { echo "$service: Requires=$socket missing"; return 1; }
    unit_value "systemd/$service" After | grep -q "${unit/@/@%i}.socket" || { echo "$service: After=$socket missing"; return 1; }
    if [[ $path != *%i* ]]; then
        for site in nginx/crier.conf nginx/crier-production.conf; do
            grep -q "server unix:${path}[ ;]" "$site" || { echo "$site: no 'server unix:$path'"; return 1; }
        done
    fi
}
check "crier-webserver.socket: /run/crier/webserver.sock for nginx, required by its service" \
    socket_contract crier-webserver.socket crier-webserver.service /run/crier/webserver.sock
check "crier-wsserver.socket: /run/crier/wsserver.sock for nginx, required by its service" \
    socket_contract crier-wsserver.socket crier-wsserver.service /run/crier/wsserver.sock
check "crier-wsserver@.socket: /run/crier/wsserver-%i.sock for nginx, required by its service" \
    socket_contract crier-wsserver@.socket crier-wsserver@.service /run/crier/wsserver-%i.sock

check "crier-webserver.service: notify, --check, restart, TimeoutStopSec above drain" unit_limits crier-webserver.service webserver
check "crier-wsserver.service: notify, --check, restart, TimeoutStopSec above drain, LimitNOFILE" unit_limits crier-wsserver.service wsserver
check "crier-wsserver@.service: notify, --check, restart, TimeoutStopSec above drain, LimitNOFILE" unit_limits crier-wsserver@.service wsserver

# --- shipped env files -------------------------------------------------------------------------

env_args() { # the VARIABLE=value lines of systemd env files (comments and blanks dropped)
    grep -hv '^[[:space:]]*#' "$@" | grep -v '^[[:space:]]*$'
}
check_env() { # check_env BINARY ENVFILE... [-- ARGS]: BINARY --check passes with those files
    local bin=$1 files=() args=()
    shift
    while [[ $# -gt 0 && $1 != -- ]]; do files+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    args=("$@")
    local -a vars
    mapfile -t vars < <(env_args "${files[@]}")
    env -i "${vars[@]}" "$BIN_DIR/$bin" --check "${args[@]}"
}
check "systemd/env/webserver.env passes webserver --check" check_env webserver systemd/env/webserver.env
check "systemd/env/wsserver.env passes wsserver --check" check_env wsserver systemd/env/wsserver.env
# The template's instance 8082, with the addresses its ExecStart= derives from the name.
check "systemd/env/wsserver.env + wsserver-8082.env pass the template's --check" \
    check_env wsserver systemd/env/wsserver.env systemd/env/wsserver-8082.env -- \
    --listen unix:/run/crier/wsserver-8082.sock --admin-listen 127.0.0.1:18082

# --- exit codes ----------------------------------------------------------------------------------

expect_exit() { # expect_exit CODE CMD...
    local want=$1 rc
    shift
    "$@"
    rc=$?
    [[ $rc -eq $want ]] || { echo "exit status $rc, expected $want"; return 1; }
}
for bin in webserver wsserver; do
    check "$bin --version exits 0" expect_exit 0 env -i "$BIN_DIR/$bin" --version
    check "$bin --check exits 0 on the defaults" expect_exit 0 env -i "$BIN_DIR/$bin" --check
    check "$bin --check exits 2 on an invalid --redis-url" \
        expect_exit 2 env -i "$BIN_DIR/$bin" --check --redis-url http://not-redis
done
bind_conflict() { # the binary exits 1 when its listen address is taken
    "$PYTHON" - "$BIN_DIR/$1" "${@:2}" <<'EOF'
import socket, subprocess, sys
taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
port = taken.getsockname()[1]
args = [a.replace("PORT", str(port)) for a in sys.argv[2:]]
try:
    proc = subprocess.run([sys.argv[1], *args], env={}, capture_output=True, text=True, timeout=30)
except subprocess.TimeoutExpired:
    sys.exit("still running after 30s: it should have failed to bind")
print(proc.stderr.strip())
sys.exit(0 if proc.returncode == 1 else f"exit status {proc.returncode}, expected 1")
EOF
}
check "webserver exits 1 when it cannot bind" bind_conflict webserver --listen 127.0.0.1:PORT
check "wsserver exits 1 when it cannot bind" bind_conflict wsserver --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:0

# --- nginx production site -------------------------------------------------------------------

SITE=nginx/crier-production.conf
CERT_PATH=/etc/letsencrypt/live/crier.example.com/fullchain.pem
KEY_PATH=/etc/letsencrypt/live/crier.example.com/privkey.pem
nginx_t() {
    local dir=$WORK/nginx user_line=
    mkdir -p "$dir"
    "$OPENSSL" req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=crier.example.com \
        -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" 2>&1 || return 1
    for path in "$CERT_PATH" "$KEY_PATH"; do
        [[ $(grep -cF "$path" "$SITE") -eq 1 ]] || { echo "$SITE must name $path exactly once"; return 1; }
    done
    sed -e "s#$CERT_PATH#$dir/fullchain.pem#" -e "s#$KEY_PATH#$dir/privkey.pem#" "$SITE" >"$dir/site.conf"
    [[ $(id -u) -eq 0 ]] && user_line='user root;'
    sed -e "s#@USER_LINE@#$user_line#" -e "s#@DIR@#$dir#g" -e "s#@SITE@#$dir/site.conf#" \
        nginx/nginx-main.conf.template >"$dir/nginx.conf"
    "$NGINX" -t -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" 2>&1
}
check "nginx -t accepts $SITE (placeholder certificates)" nginx_t
# The example main context (nginx/nginx-production-main.conf) around the production site: its
# system paths pointed into the scratch directory, the site in place of sites-enabled.
MAIN=nginx/nginx-production-main.conf
nginx_main_t() {
    local dir=$WORK/nginx user_line='user www-data;' out conns nofile
    conns=$(awk '$1 == "worker_connections" { print $2 + 0 }' "$MAIN")
    nofile=$(awk '$1 == "worker_rlimit_nofile" { print $2 + 0 }' "$MAIN")
    # nginx itself only warns at run time when the descriptors cannot hold the connections.
    ((${nofile:-0} > ${conns:-0} && conns >= 1024)) ||
        { echo "$MAIN: worker_rlimit_nofile (${nofile:-none}) must exceed worker_connections (${conns:-none})"; return 1; }
    nginx_t >/dev/null || { echo "the production site does not pass nginx -t (see above)"; return 1; }
    [[ $(id -u) -eq 0 ]] || user_line=''
    sed -e "s#^user www-data;#$user_line#" -e "s#/run/nginx.pid#$dir/nginx.pid#" -e "s#/var/log/nginx/#$dir/#" \
        -e "s#include /etc/nginx/sites-enabled/\*;#include $dir/site.conf;#" -e "/include \/etc\/nginx\/conf.d/d" \
        -e "/include \/etc\/nginx\/modules-enabled/d" "$MAIN" >"$dir/main.conf"
    grep -q "include $dir/site.conf;" "$dir/main.conf" || { echo "$MAIN: no 'include /etc/nginx/sites-enabled/*;'"; return 1; }
    out=$("$NGINX" -t -c "$dir/main.conf" -p "$dir" -e "$dir/error.log" 2>&1) || { echo "$out"; return 1; }
    ! grep -q 'warn' <<<"$out" || { echo "$out"; return 1; }
}
check "nginx -t accepts $MAIN around $SITE without warnings; descriptors above connections" nginx_main_t
site_has() { # site_has DESCRIPTION REGEX...: every regex matches some line of the site
    shift
    local re
    for re in "$@"; do
        grep -Eq "$re" "$SITE" || { echo "no line matches: $re"; return 1; }
    done
}
check "$SITE: webserver upstream with keepalive" site_has _ '^\s*keepalive [0-9]+;'
check "$SITE: wsserver upstream lists the sockets of crier-wsserver and instance 8082" \
    site_has _ 'server unix:/run/crier/wsserver\.sock ' 'server unix:/run/crier/wsserver-8082\.sock '

# shellcheck disable=SC2016  # nginx variables, matched literally
check "$SITE: /ws/ upgrades, forwarded headers, unbuffered" site_has _ \
    'location /ws/' 'proxy_set_header Upgrade \$http_upgrade;' 'proxy_set_header X-Forwarded-Proto \$scheme;' \
    'proxy_set_header X-Forwarded-For' 'proxy_buffering off;'
check "$SITE: TLS server and http-to-https redirect" site_has _ 'listen 443 ssl' 'return 301 https://'

# --- install.sh ----------------------------------------------------------------------------------

DEST=$WORK/dest
INSTALL_LOG=$WORK/install.log
listing() { # every path below DEST with type, size, mtime, mode and content checksum
    (cd "$DEST" && find . -printf '%y %p %s %T@ %m\n' | sort)
    (cd "$DEST" && find . -type f -exec sha256sum {} + | sort -k2)
}
run_install() { DESTDIR=$DEST bash scripts/install.sh "$@" >"$INSTALL_LOG" 2>&1 || { cat "$INSTALL_LOG"; return 1; }; }

# Before the first install: an operator's own env file, and an unrelated unit.
mkdir -p "$DEST/etc/crier" "$DEST/etc/systemd/system"
printf 'CRIER_WEB_LISTEN=127.0.0.1:8100\n' >"$DEST/etc/crier/webserver.env"
printf '[Service]\nExecStart=/bin/true\n' >"$DEST/etc/systemd/system/other.service"

check "install.sh --no-build --bin-dir into DESTDIR" run_install --no-build --bin-dir "$BIN_DIR"
installed_tree() {
    local f
    for f in usr/local/bin/webserver usr/local/bin/wsserver; do
        cmp -s "$DEST/$f" "$BIN_DIR/$(basename "$f")" || { echo "$f differs from the source binary"; return 1; }
        [[ $(stat -c %a "$DEST/$f") == 755 ]] || { echo "$f: mode $(stat -c %a "$DEST/$f")"; return 1; }
    done
    for f in "${UNITS[@]}" "${SOCKETS[@]}"; do
        [[ -f $DEST/etc/systemd/system/$f ]] || { echo "missing unit $f"; return 1; }
        # ExecStart*= run Crier's binaries (ExecReload= runs kill).
        if grep -E '^ExecStart' "$DEST/etc/systemd/system/$f" | grep -Eqv '=-?/usr/local/bin/'; then
            echo "$f: an ExecStart line does not run /usr/local/bin/…"; return 1
        fi
    done
    for f in wsserver.env wsserver-8082.env; do
        cmp -s "$DEST/etc/crier/$f" "systemd/env/$f" || { echo "/etc/crier/$f not installed"; return 1; }
        [[ $(stat -c %a "$DEST/etc/crier/$f") == 600 ]] || { echo "/etc/crier/$f must be 0600"; return 1; }
    done
    [[ $(cat "$DEST/etc/crier/webserver.env") == CRIER_WEB_LISTEN=127.0.0.1:8100 ]] ||
        { echo "the operator's /etc/crier/webserver.env was overwritten"; return 1; }
    cmp -s "$DEST/etc/nginx/sites-available/crier.conf" nginx/crier-production.conf ||
        { echo "nginx site not installed"; return 1; }
    [[ -f $DEST/var/lib/crier/install-manifest ]] || { echo "no manifest"; return 1; }
    if grep -q 'webserver.env' "$DEST/var/lib/crier/install-manifest"; then
        echo "the manifest claims the operator's webserver.env"; return 1
    fi
}
check "install.sh: binaries, units (services and sockets) with the prefix, env files, nginx site, manifest" installed_tree

before=$(listing)
check "install.sh run twice" run_install --no-build --bin-dir "$BIN_DIR"
same_tree() { diff <(printf '%s\n' "$before") <(listing); }
check "install.sh run twice changes nothing (paths, sizes, mtimes, modes, checksums)" same_tree

prefix_render() {
    local dest=$WORK/dest-prefix
    DESTDIR=$dest bash scripts/install.sh --no-build --bin-dir "$BIN_DIR" --prefix /opt/crier >/dev/null 2>&1 || return 1
    [[ -x $dest/opt/crier/bin/wsserver ]] || { echo "no /opt/crier/bin/wsserver"; return 1; }
    grep -h '^ExecStart' "$dest"/etc/systemd/system/crier-*.service
    ! grep -h '^ExecStart' "$dest"/etc/systemd/system/crier-*.service | grep -Ev '=-?/opt/crier/bin/'
}
check "install.sh --prefix /opt/crier renders the units' Exec lines" prefix_render

# The operator edits one installed env file; uninstall must keep it and the files it never installed.
printf 'CRIER_PREFIX=site\n' >>"$DEST/etc/crier/wsserver.env"
check "install.sh --uninstall" run_install --uninstall
uninstalled_tree() {
    local left expected
    left=$(cd "$DEST" && find . -type f | sort)
    expected=$(printf '%s\n' ./etc/crier/webserver.env ./etc/crier/wsserver.env ./etc/systemd/system/other.service)
    if [[ $left != "$expected" ]]; then
        echo "files left:"; echo "$left"; echo "expected:"; echo "$expected"; return 1
    fi
    [[ $(cat "$DEST/etc/crier/webserver.env") == CRIER_WEB_LISTEN=127.0.0.1:8100 ]] || { echo "operator file changed"; return 1; }
    tail -n 1 "$DEST/etc/crier/wsserver.env" | grep -qx 'CRIER_PREFIX=site' || { echo "edited env file changed"; return 1; }
    [[ ! -e $DEST/usr && ! -e $DEST/var && ! -e $DEST/etc/nginx ]] || { echo "directories it created are left"; return 1; }
}
check "install.sh --uninstall removes only what it installed; edited and foreign files stay" uninstalled_tree
check "install.sh --uninstall without a manifest fails" expect_exit 1 run_install --uninstall

# --- configuration reference ---------------------------------------------------------------------

check "docs/configuration.md matches the binaries' --help (scripts/gen-config-doc.py --check)" \
    "$PYTHON" scripts/gen-config-doc.py --bin-dir "$BIN_DIR" --check

if command -v shellcheck >/dev/null 2>&1; then
    check "shellcheck scripts/install.sh scripts/test-deploy.sh" \
        shellcheck -x scripts/install.sh scripts/test-deploy.sh
fi

finish
