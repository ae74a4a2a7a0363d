# shellcheck shell=bash
# A small TAP-like check runner for the scripts that verify deployments (test-deploy.sh,
# test-package.sh): `check NAME CMD...` runs one check, `finish` prints the tally and exits 1 if
# any failed. Source it; it keeps its counts in PASSED and FAILED.

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok - %s\n' "$1"; }
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL - %s\n' "$1"
    if [[ -n ${2:-} ]]; then
        printf '%s\n' "$2" | sed 's/^/    /'
    fi
}
# check NAME CMD...: one check that passes when CMD exits 0; its output is shown on failure.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name" "$out"
    fi
}
finish() {
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    [[ $FAILED -eq 0 ]]
    exit $?
}
