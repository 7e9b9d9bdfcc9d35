#!/usr/bin/env bash
# The C demo: builds libfastrpc, builds the C and C++ examples (examples-c/) against it with
# warnings as errors, then runs them: a C echo server in the background, a blocking client,
# a callback client and a completion-queue client against it (calls/s), and the C++ RAII
# example with its own in-process server. Every step is bounded in time.
#   ./scripts/demo-c.sh        (needs cargo, a C11 compiler, a C++17 compiler, GNU make)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n### %s\n' "$*"; }

step "building libfastrpc (cargo build --release --lib)"
timeout 900 cargo build --release --lib
ls -l target/release/libfastrpc.so target/release/libfastrpc.a | awk '{ print "   " $NF ": " $5 " bytes" }'

step "building the examples (make -C examples-c: C11 and C++17, -Wall -Wextra -Werror -pedantic)"
timeout 300 make --no-print-directory -C examples-c all

step "running the examples (make -C examples-c demo)"
timeout 300 make --no-print-directory -C examples-c demo
