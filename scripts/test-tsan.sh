#!/usr/bin/env bash
# The engine's concurrency-heavy integration tests under ThreadSanitizer (opt-in: not part of
# scripts/test.sh; about 15 minutes on 2 cores, most of it building the standard library and
# every dependency instrumented). Needs the nightly toolchain with rust-src (rustup installs
# it if missing). Any report fails the run; tests/tsan.supp holds the one suppression (a
# report inside tokio's I/O driver that a plain tokio program reproduces).
#
#   ./scripts/test-tsan.sh                       the default set below
#   ./scripts/test-tsan.sh --test options        other test binaries (cargo test arguments)
set -uo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1 || ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q rust-src; then
    echo "== installing the nightly toolchain with rust-src (rustup)"
    rustup toolchain install nightly --profile minimal --component rust-src >/dev/null 2>&1 ||
        rustup component add rust-src --toolchain nightly >/dev/null 2>&1 ||
        { echo "tsan: skipped: rustup could not install the nightly toolchain with rust-src"; exit 0; }
fi

target=$(rustc -vV | sed -n 's/^host: //p')
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    args=(--lib --test races --test cancel --test lone_write --test sink_panics
        --test graceful_stop --test early_flush --test options --test broken_peers --test balance
        --test read_now --test caller_reads)
fi
export RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/tsan}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo +nightly test -Zbuild-std --target "$target" "${args[@]}" -- --test-threads=1 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
reports=$(grep -c '^WARNING: ThreadSanitizer' "$log")
echo "tsan: $reports report(s); cargo test exit status $rc"
[ "$rc" = 0 ] && [ "$reports" = 0 ]
