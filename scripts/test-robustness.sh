#!/usr/bin/env bash
# The robustness suite (docs/RELIABILITY.md):
#
#   1. fuzz replay: every fuzz target (fuzz/) replays its checked-in corpus, then
#      FUZZ_MUTATIONS (5000) deterministic mutations from seed FUZZ_SEED (1), each target
#      bounded to FUZZ_TARGET_SECONDS (20); checks: no crash, no hang (5 s per input), no
#      single allocation over the bound, exact answers for untampered streams, servers still
#      serving, no descriptor left open;
#   2. cargo test --release --test robustness_catalogue --test robustness_faults;
#   3. the C ABI soak under ASan + UBSan (tests-c/soak.c) for SOAK_SECONDS (20).
#
# Optional: FUZZ_LIBFUZZER_SECONDS=N also runs coverage-guided libFuzzer on every target for N
# seconds each (fuzz/run-libfuzzer.sh; the instrumented build takes a few minutes).
#
# Every step runs even if an earlier one failed; the last line is
# `robustness: N passed, M failed` (steps) and the exit status is 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_MUTATIONS=${FUZZ_MUTATIONS:-5000}
FUZZ_SEED=${FUZZ_SEED:-1}
FUZZ_TARGET_SECONDS=${FUZZ_TARGET_SECONDS:-20}
SOAK_SECONDS=${SOAK_SECONDS:-20}
FUZZ_LIBFUZZER_SECONDS=${FUZZ_LIBFUZZER_SECONDS:-0}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

passed=0
failed=0
failures=()
start=$(date +%s)

step() {
    local name=$1
    shift
    local t0
    t0=$(date +%s)
    printf '\n== %s\n' "$name"
    if "$@"; then
        passed=$((passed + 1))
        printf -- '-- %s: ok (%ss)\n' "$name" $(($(date +%s) - t0))
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf -- '-- %s: FAILED (%ss)\n' "$name" $(($(date +%s) - t0))
    fi
}

# The fuzz crate is a member of the workspace: its build reuses the release build of fastrpc.
fuzz_replay() {
    cargo build --release -p fastrpc-fuzz --bin replay || return 1
    "$ROOT/target/release/replay" --mutations "$FUZZ_MUTATIONS" --seed "$FUZZ_SEED" \
        --max-seconds "$FUZZ_TARGET_SECONDS"
}

rust_tests() {
    cargo test --release --no-fail-fast --test robustness_catalogue --test robustness_faults
}

soak() {
    local need=()
    command -v cc >/dev/null || need+=(gcc)
    command -v make >/dev/null || need+=(make)
    command -v objdump >/dev/null || need+=(binutils)
    if ((${#need[@]})); then
        local sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
                "${need[@]}" || return 1
    fi
    cargo build --release --lib || return 1
    make --no-print-directory -C tests-c soak SOAK_SECONDS="$SOAK_SECONDS"
}

libfuzzer() {
    ./fuzz/run-libfuzzer.sh all "$FUZZ_LIBFUZZER_SECONDS"
}

step "fuzz replay (corpus + $FUZZ_MUTATIONS mutations per target, seed $FUZZ_SEED)" fuzz_replay
if [ "$FUZZ_LIBFUZZER_SECONDS" -gt 0 ]; then
    step "libFuzzer, ${FUZZ_LIBFUZZER_SECONDS}s per target" libfuzzer
fi
step "cargo test --release robustness_catalogue robustness_faults" rust_tests
step "C ABI soak under ASan+UBSan, ${SOAK_SECONDS}s" soak

printf '\n== summary (%ss)\n' $(($(date +%s) - start))
for f in "${failures[@]}"; do echo "  failed: $f"; done
echo "robustness: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
