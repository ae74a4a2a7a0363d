#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client against wsserver in its echo test mode, and fail
# unless every case is OK, NON-STRICT or INFORMATIONAL (see autobahn/README.md).
#
# Usage: scripts/autobahn.sh [--install]
#
#   --install   only make sure wstest is installed (scripts/test.sh does this before the suite)
#
# Environment:
#   AUTOBAHN_CASES      comma-separated case patterns to run (default: *)
#   AUTOBAHN_EXCLUDE    comma-separated patterns to skip (default: 12.*,13.* — permessage-deflate,
#                       which wsserver never negotiates, so those cases are UNIMPLEMENTED)
#   AUTOBAHN_REPORTS    report directory (default: autobahn/reports; keep it out of git)
#   AUTOBAHN_PROFILE    release (default) or debug build of wsserver
#   CRIER_WSSERVER_BIN  use this wsserver binary instead of building one
#   AUTOBAHN_PYTHON2    the Python 2.7 interpreter to install wstest with
#   AUTOBAHN_VENV       where wstest is installed (default: target/autobahn-venv)
#
# Exit status: 0 all cases passed, 1 some case failed (listed), 2 usage/setup error,
# 3 wstest cannot be installed here (no Python 2.7, or its install from PyPI failed). The test
# suite fails on 3 unless CRIER_TEST_SKIP_AUTOBAHN=1 (tests/tests/conformance.rs).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=lib/free-port.sh
source "$ROOT/scripts/lib/free-port.sh"
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

INSTALL_ONLY=0
case ${1:-} in
    --install) INSTALL_ONLY=1 ;;
    '') ;;
    *) printf 'usage: scripts/autobahn.sh [--install]\n' >&2; exit 2 ;;
esac

CASES=${AUTOBAHN_CASES:-*}
EXCLUDE=${AUTOBAHN_EXCLUDE:-12.*,13.*}
REPORTS=${AUTOBAHN_REPORTS:-$ROOT/autobahn/reports}
PROFILE=${AUTOBAHN_PROFILE:-release}
VENV=${AUTOBAHN_VENV:-$ROOT/target/autobahn-venv}

log() { printf '[autobahn] %s\n' "$*" >&2; }

is_python27() {
    [[ -n $1 && -x $1 ]] && "$1" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null
}

find_python2() {
    local candidate
    if [[ -n ${AUTOBAHN_PYTHON2:-} ]]; then
        is_python27 "$AUTOBAHN_PYTHON2" || return 1
        printf '%s\n' "$AUTOBAHN_PYTHON2"
        return
    fi
    for candidate in "$(command -v python2.7 || true)" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 /usr/bin/python2.7 \
        /usr/local/bin/python2.7; do
        if is_python27 "$candidate"; then
            printf '%s\n' "$candidate"
            return
        fi
    done
    return 1
}

# Installs wstest into $VENV unless it is there already.
ensure_wstest() {
    if [[ -x $VENV/bin/wstest ]]; then
        return
    fi
    local py
    if ! py=$(find_python2); then
        log "Python 2.7 not found${AUTOBAHN_PYTHON2:+ at AUTOBAHN_PYTHON2=$AUTOBAHN_PYTHON2}; wstest needs it"
        log "(Debian does not package it: 'pyenv install 2.7.18', or set AUTOBAHN_PYTHON2)"
        exit 3
    fi
    log "installing wstest with $py into $VENV"
    rm -rf "$VENV" "$VENV.bootstrap"
    # Python 2.7 has no venv module; virtualenv 20.21 is the last that creates 2.7 envs.
    if ! "$py" -m pip install --quiet --disable-pip-version-check --target "$VENV.bootstrap" 'virtualenv<20.22' >&2 ||
        ! PYTHONPATH=$VENV.bootstrap "$py" -m virtualenv --quiet "$VENV" >&2 ||
        ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/autobahn/requirements.txt" >&2; then
        log "installing wstest failed (is PyPI reachable? pip's messages are above)"
        rm -rf "$VENV"
        exit 3
    fi
    rm -rf "$VENV.bootstrap"
}

# '1.*,2.*' → ["1.*", "2.*"]
json_list() {
    python3 -c 'import json, sys; print(json.dumps([c.strip() for c in sys.argv[1].split(",") if c.strip()]))' "$1"
}

# python3 runs the case-list conversion, the readiness probe and the report check.
ensure_packages python3 || { log "could not install python3"; exit 2; }
ensure_wstest
if [[ $INSTALL_ONLY -eq 1 ]]; then
    log "wstest is installed in $VENV"
    exit 0
fi

if [[ -n ${CRIER_WSSERVER_BIN:-} ]]; then
    WSSERVER=$CRIER_WSSERVER_BIN
else
    if [[ $PROFILE == release ]]; then
        cargo build --quiet --release --bin wsserver
    else
        cargo build --quiet --bin wsserver
    fi
    WSSERVER=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/wsserver
fi
[[ -x $WSSERVER ]] || { log "no wsserver binary at $WSSERVER"; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/crier-autobahn.XXXXXX")
WS_PID=
cleanup() {
    if [[ -n $WS_PID ]]; then
        kill -TERM "$WS_PID" 2>/dev/null || true
        wait "$WS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

read -r PORT ADMIN_PORT < <(free_ports 2)
# The echo facility needs no Redis; nothing listens on this socket, and wsserver keeps
# retrying in the background (readiness stays 503, liveness is what this waits for).
"$WSSERVER" \
    --listen "127.0.0.1:$PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --redis-url "unix://$WORK/no-redis.sock" \
    --echo-test-facility echo \
    --max-message-size 16777216 \
    --anonymous-flags '*' \
    --log-format text >"$WORK/wsserver.log" 2>&1 &
WS_PID=$!

for _ in $(seq 1 200); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$ADMIN_PORT/healthz" 2>/dev/null; then
        break
    fi
    kill -0 "$WS_PID" 2>/dev/null || { log "wsserver exited:"; cat "$WORK/wsserver.log" >&2; exit 2; }
    sleep 0.05
done

mkdir -p "$REPORTS"
sed -e "s|@OUTDIR@|$REPORTS|" -e "s|@PORT@|$PORT|" \
    -e "s|@CASES@|$(json_list "$CASES")|" -e "s|@EXCLUDE@|$(json_list "$EXCLUDE")|" \
    "$ROOT/autobahn/fuzzingclient.template.json" >"$WORK/fuzzingclient.json"
log "cases: $CASES; excluded: $EXCLUDE; wsserver: $WSSERVER on 127.0.0.1:$PORT"
(cd "$WORK" && "$VENV/bin/wstest" -m fuzzingclient -s "$WORK/fuzzingclient.json") >"$WORK/wstest.log" 2>&1 || {
    log "wstest failed:"
    tail -n 40 "$WORK/wstest.log" >&2
    exit 2
}
kill -0 "$WS_PID" 2>/dev/null || { log "wsserver died during the run:"; tail -n 40 "$WORK/wsserver.log" >&2; exit 1; }

python3 - "$REPORTS/index.json" <<'PY'
import json, sys

OK = {"OK", "NON-STRICT", "INFORMATIONAL"}
OK_CLOSE = {"OK", "INFORMATIONAL"}
with open(sys.argv[1]) as f:
    index = json.load(f)
failed, counts = [], {}
for agent, cases in index.items():
    for case, result in cases.items():
        behavior, close = result.get("behavior"), result.get("behaviorClose")
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior not in OK or close not in OK_CLOSE:
            failed.append((case, behavior, close, result.get("reportfile")))

key = lambda c: [int(p) for p in c[0].split(".")]
summary = ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
print(f"autobahn: {sum(counts.values())} cases: {summary}")
for case, behavior, close, report in sorted(failed, key=key):
    print(f"FAILED {case}: behavior {behavior}, close {close} ({report})")
print(f"{sum(counts.values()) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
PY
