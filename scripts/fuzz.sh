#!/usr/bin/env bash
# Fuzz Crier's parsers with cargo-fuzz (libFuzzer + AddressSanitizer), each target for a
# bounded time.
#
# Usage: scripts/fuzz.sh [target...]     (default: every target in fuzz/fuzz_targets)
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_JOBS      parallel fuzzing processes per target (default 1)
#
# Targets: flags (protocol::Flags::from_query), facility (protocol::Facility::from_path),
# identity (protocol::Identity::from_json), publish_request (protocol::PublishRequest::from_json
# + into_publication), frame_reader (wsserver's FrameReader over in-memory bytes).
#
# Each run starts from the committed seeds in fuzz/seeds/<target> plus what earlier runs found
# (fuzz/corpus/<target>, not in git). A crash leaves its input in fuzz/artifacts/<target>/ and
# makes the script exit 1 after the other targets ran; turn each crash into a regression test in
# tests/tests/fuzz_regressions.rs.
#
# cargo-fuzz needs nightly-only rustc flags; on a stable toolchain RUSTC_BOOTSTRAP=1 lets them
# through. cargo-fuzz is installed with `cargo install cargo-fuzz --locked` when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-1}

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

log "building ${targets[*]}"
cargo fuzz build

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    if [[ -d seeds/$target ]]; then
        cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    log "$target: ${FUZZ_SECONDS}s"
    parallel=()
    if [[ $FUZZ_JOBS -gt 1 ]]; then
        parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    fi
    if cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" "${parallel[@]}" \
        -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"artifacts/$target/last-run.log" 2>&1; then
        stats=$(grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "artifacts/$target/last-run.log" | tr -s ' ' | tr '\n' ' ')
        log "$target: no crash (${stats:-see artifacts/$target/last-run.log}); corpus $(find "corpus/$target" -type f | wc -l) inputs"
    else
        log "$target: CRASH — see fuzz/artifacts/$target/ and last-run.log:"
        grep -E 'panicked|ERROR: |SUMMARY|Test unit written' "artifacts/$target/last-run.log" | head -n 10 >&2 || true
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    log "crashes in: ${failed[*]}"
    exit 1
fi
log "all targets ran ${FUZZ_SECONDS}s without a crash"
