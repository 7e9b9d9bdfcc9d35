#!/usr/bin/env bash
# The C test suite of the C ABI (tests-c/): builds libfastrpc (release), then builds and runs
# the C test programs in every variant:
#
#   c        C11, -Wall -Wextra -Werror -pedantic, linked with the shared library
#            (header_check, test_core, test_tls, test_balance, test_abi)
#   c++      the same sources compiled as C++17 (g++ -x c++): the header is C++-clean
#   static   test_core linked with libfastrpc.a and Rust's native libraries
#   asan     ASan + UBSan (-fsanitize=address,undefined), leaks detected, any report fails
#   valgrind memcheck, --leak-check=full, definite/indirect leaks and any error fail
#            (smaller iteration counts: FASTRPC_TEST_QUICK=1)
#
# TLS certificates are made for the run with openssl (self-signed) in a temporary directory.
# Tools that are missing (valgrind, g++, openssl, pkg-config, make, cc) are installed with
# apt-get. Each program prints `N passed, M failed`; the last line is the total over every
# run. Exits non-zero on any failed test, sanitizer or valgrind report, or build failure.
#
#   ./scripts/test-c.sh                 everything
#   TEST_C_VARIANTS="c asan" ./scripts/test-c.sh    only some variants
#   FASTRPC_ROOT=/other/checkout ./scripts/test-c.sh   test that checkout's library and header
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=$ROOT/tests-c
B=$T/build
VARIANTS=${TEST_C_VARIANTS:-c c++ static asan valgrind}
export FASTRPC_ROOT=${FASTRPC_ROOT:-$ROOT}
start=$(date +%s)

step() { printf '\n### %s\n' "$*"; }
has() { [[ " $VARIANTS " == *" $1 "* ]]; }

# ---- tools ---------------------------------------------------------------------------------
step "tools"
need=()
command -v cc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v openssl >/dev/null || need+=(openssl)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v objdump >/dev/null || need+=(binutils)
if has valgrind; then command -v valgrind >/dev/null || need+=(valgrind); fi
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" ||
        { echo "cannot install ${need[*]}" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "cargo is needed (the Rust toolchain)" >&2; exit 1; }
echo "cc: $(cc --version | head -1)"
echo "g++: $(g++ --version | head -1)"
has valgrind && echo "valgrind: $(valgrind --version)"

# ---- the library ---------------------------------------------------------------------------
step "building libfastrpc (cargo build --release --lib in $FASTRPC_ROOT)"
if ! (cd "$FASTRPC_ROOT" && timeout 900 cargo build --release --lib); then
    echo "cargo build failed"
    echo "total: 0 passed, 1 failed"
    exit 1
fi

# ---- certificates --------------------------------------------------------------------------
step "TLS certificates (openssl req -x509, self-signed, in a temporary directory)"
CERTS=$(mktemp -d "${TMPDIR:-/tmp}/fastrpc-ctest-certs.XXXXXX")
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/fastrpc-ctest-logs.XXXXXX")
trap 'rm -rf "$CERTS" "$LOGS"' EXIT
mkcert() { # name CN extra-args...
    local name=$1 cn=$2
    shift 2
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$cn" -keyout "$CERTS/$name.key" -out "$CERTS/$name.crt" \
        -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature" \
        "$@" 2>"$LOGS/openssl-$name.log"
}
if mkcert server localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "extendedKeyUsage=serverAuth" &&
    mkcert client fastrpc-test-client -addext "extendedKeyUsage=clientAuth"; then
    echo "made server.crt (CN=localhost, SAN localhost and 127.0.0.1) and client.crt"
else
    cat "$LOGS"/openssl-*.log
    echo "openssl failed"
fi
export FASTRPC_TEST_CERT_DIR=$CERTS

# ---- build ---------------------------------------------------------------------------------
step "building the tests (make -C tests-c)"
targets=()
has c && targets+=(c)
has c++ && targets+=(cxx)
has static && targets+=(static)
has asan && targets+=(asan)
has valgrind && ! has c && targets+=(c)
build_failed=0
if ! make --no-print-directory -k -j2 -C "$T" "${targets[@]}" >"$LOGS/build.log" 2>&1; then
    build_failed=1
    echo "BUILD FAILED (the variants that did not build count as failed):"
    grep -E "error|Error" "$LOGS/build.log" | grep -v -- "-Werror" | head -40
else
    echo "built: ${targets[*]}"
fi

# ---- run -----------------------------------------------------------------------------------
total_pass=0
total_fail=0
problems=()
declare -A shown

# run LABEL KIND BINARY [env assignments...]: runs one program, checks its summary line and,
# for asan/valgrind, the tool's verdict.
run() {
    local label=$1 kind=$2 bin=$3
    shift 3
    local out=$LOGS/${label//\//_}.out err=$LOGS/${label//\//_}.err
    if [ ! -x "$bin" ]; then
        printf '  %-26s NOT BUILT\n' "$label"
        total_fail=$((total_fail + 1))
        problems+=("$label: not built")
        return
    fi
    local cmd=("$bin")
    local limit=300
    if [ "$kind" = valgrind ]; then
        cmd=(valgrind --error-exitcode=1 --leak-check=full --child-silent-after-fork=yes
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
            --suppressions="$T/valgrind.supp" "$bin")
        limit=600
    fi
    local t0=$(date +%s)
    env "$@" timeout "$limit" "${cmd[@]}" >"$out" 2>"$err"
    local rc=$?
    local dt=$(($(date +%s) - t0))
    local sum p=0 f=0 note=""
    sum=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
    if [ -n "$sum" ]; then
        p=${sum%% passed*}
        f=${sum#*passed, }
        f=${f%% failed*}
    else
        f=1
        note="no summary line (crashed or hung, rc=$rc)"
    fi
    if [ "$kind" = asan ] &&
        grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|UndefinedBehaviorSanitizer' "$err"; then
        note="${note:+$note; }sanitizer report"
        f=$((f + 1))
    fi
    if [ "$kind" = valgrind ]; then
        if ! grep -q 'ERROR SUMMARY: 0 errors' "$err"; then
            note="${note:+$note; }valgrind errors: $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$err" | tail -1)"
            f=$((f + 1))
        fi
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        note="${note:+$note; }exit code $rc"
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    printf '  %-26s %4s passed, %3s failed  %4ss%s\n' "$label" "$p" "$f" "$dt" "${note:+  ($note)}"
    if [ "$f" -ne 0 ]; then
        problems+=("$label: $f failed${note:+ ($note)}")
        local prog=${bin##*/}
        # The details once per program; later variants show which tests failed.
        if [ -z "${shown[$prog]:-}" ]; then
            shown[$prog]=1
            grep -vE '^# ' "$out" | grep -vE '^[0-9]+ passed' | sed 's/^/      /'
        else
            grep -E '^(FAIL|WATCHDOG)' "$out" | sed 's/^/      /'
        fi
        if [ -n "$note" ]; then # the tool's or the crash's own words
            grep -vE '^\s+(at|[0-9]+:) |^stack backtrace|^note: |^thread .* panicked|^RefCell|^$' "$err" |
                grep -v '^==[0-9]*== *$' | tail -40 | sed 's/^/      | /'
        fi
    fi
}

step "running"
if has c; then
    run c/header_check c "$B/c/header_check"
    run c/test_core c "$B/c/test_core"
    run c/test_tls c "$B/c/test_tls"
    run c/test_balance c "$B/c/test_balance"
    run c/test_abi c "$B/c/test_abi"
fi
if has c++; then
    run c++/header_check c "$B/cxx/header_check"
    run c++/test_core c "$B/cxx/test_core"
    run c++/test_tls c "$B/cxx/test_tls"
    run c++/test_balance c "$B/cxx/test_balance"
    run c++/test_abi c "$B/cxx/test_abi"
fi
if has static; then
    run static/test_core c "$B/static/test_core"
fi
if has asan; then
    asan_env=(ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0
        LSAN_OPTIONS=suppressions=$T/lsan.supp:print_suppressions=0
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 FASTRPC_TEST_SLOW=2)
    run asan/test_core asan "$B/asan/test_core" "${asan_env[@]}"
    run asan/test_tls asan "$B/asan/test_tls" "${asan_env[@]}"
    run asan/test_balance asan "$B/asan/test_balance" "${asan_env[@]}"
    run asan/test_abi asan "$B/asan/test_abi" "${asan_env[@]}"
fi
if has valgrind; then
    vg_env=(FASTRPC_TEST_QUICK=1 FASTRPC_TEST_SLOW=10)
    run valgrind/test_core valgrind "$B/c/test_core" "${vg_env[@]}"
    run valgrind/test_tls valgrind "$B/c/test_tls" "${vg_env[@]}"
    run valgrind/test_balance valgrind "$B/c/test_balance" "${vg_env[@]}"
    run valgrind/test_abi valgrind "$B/c/test_abi" "${vg_env[@]}"
fi

step "summary"
if [ "$build_failed" -ne 0 ]; then
    problems+=("build failed (see above)")
    total_fail=$((total_fail + 1))
fi
for p in "${problems[@]}"; do echo "  $p"; done
echo "  time: $(($(date +%s) - start)) s"
echo "total: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
