#!/usr/bin/env bash
# The client's lock-free call protocols under Miri: the unit tests of the call table (cells,
# ids, the waker hand-over between a caller and its completer), the waker slot and the
# sharded submission queue, run by Miri's interpreter, which reports any data race, use after
# free or double drop as undefined behaviour (a stress test on real threads only sees the
# races the machine happens to schedule). Miri needs the nightly toolchain's `miri` and
# `rust-src` components: installed through rustup if missing; if they cannot be had, the
# suite is skipped and says why (`miri: skipped: ...` in FASTRPC_SUMMARY).
#
#   ./scripts/test-miri.sh          (about 3 minutes, most of it the first build)
set -uo pipefail
cd "$(dirname "$0")/.."

skip() {
    echo "miri: skipped: $*"
    [ -n "${FASTRPC_SUMMARY:-}" ] && echo "miri: skipped: $*" >>"$FASTRPC_SUMMARY"
    exit 0
}

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "== installing the nightly toolchain's miri and rust-src (rustup)"
    rustup toolchain install nightly --profile minimal --component miri,rust-src >/dev/null 2>&1 ||
        rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1 ||
        skip "rustup could not install the nightly toolchain with miri and rust-src"
    cargo +nightly miri --version >/dev/null 2>&1 || skip "cargo +nightly miri does not run after installing it"
fi
cargo +nightly miri --version

# Miri's own target directory (target/miri); no isolation: the tests read the clock.
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-disable-isolation"
cargo +nightly miri setup >/dev/null 2>&1 || skip "cargo +nightly miri setup failed (no rust-src?)"
exec cargo +nightly miri test --lib -- client::atomic_waker client::table client::queue
