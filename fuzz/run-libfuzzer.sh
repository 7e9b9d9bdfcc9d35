#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with libFuzzer, on stable Rust: libfuzzer-sys builds
# libFuzzer from source (needs a C++ compiler) and rustc instruments the code with
# sanitizer-coverage through stable -C flags (no nightly, no cargo-fuzz). The new inputs it
# finds go to fuzz/work/<target>/ (the checked-in seeds in corpus/<target>/ are read, never
# written); crashes, hangs and allocation-bound violations go to fuzz/artifacts/<target>/.
#
#   fuzz/run-libfuzzer.sh TARGET [SECONDS] [more libFuzzer flags...]
#   fuzz/run-libfuzzer.sh all [SECONDS]          every target in turn, SECONDS each
#
# Replay a finding without instrumentation:
#   (cd fuzz && cargo run --release --bin replay -- --target TARGET artifacts/TARGET/crash-...)
set -euo pipefail
cd "$(dirname "$0")"
TARGETS=(server_none server_flate server_snappy stream_none stream_flate stream_snappy client handshake)
target=${1:?usage: run-libfuzzer.sh TARGET|all [SECONDS] [libFuzzer flags]}
secs=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros, and the instrumented build in
# its own directory (../target/<host>/: the fuzz crate is a member of the main workspace).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [ "$target" = all ]; then list=("${TARGETS[@]}"); else list=("$target"); fi
bins=()
for t in "${list[@]}"; do bins+=(--bin "$t"); done
cargo build --release --features libfuzzer --target "$host" "${bins[@]}"
status=0
for t in "${list[@]}"; do
    mkdir -p "work/$t" "artifacts/$t"
    echo "== libFuzzer $t for ${secs}s"
    # -timeout: the harness bounds each input at 10 s itself; this is the backstop.
    "../target/$host/release/$t" "work/$t" "corpus/$t" \
        -max_total_time="$secs" -timeout=30 -max_len=65536 -rss_limit_mb=4096 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$@" || status=1
done
exit $status
