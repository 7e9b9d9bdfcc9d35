#!/usr/bin/env bash
# Runs every test of the project, building what it needs. Used by CI (.ci/run) and README.
#
# Every suite runs even when an earlier one failed; each one's output is shown as it comes and
# read again at the end for its counts (cargo's `test result:` lines, the C programs' and the
# robustness steps' `N passed, M failed`, `go test -v`'s `--- PASS/FAIL/SKIP` lines). The end
# is one summary: a line per suite, what was skipped and why, what failed, and as the last line
# `N passed, M failed` (`, K skipped` appended when any were). Exit status 1 if anything failed.
#
# Temporary files: every suite runs with TMPDIR set to a fresh directory; anything left in it
# at the end counts as a failure (`temp files`). New fastrpc* entries in /tmp itself are listed
# as a warning (other processes on the machine may make those).
#
# Sub-scripts can add to the summary: FASTRPC_SUMMARY names a file where a line
# `SUITE: skipped: REASON` marks a suite as skipped with its reason (scripts/test-go.sh:
# `go-interop: skipped: ...`); any other line is shown under "notes".
#
#   ./scripts/test.sh
#   SOAK_SECONDS=20 ./scripts/test.sh          shorter C ABI soak (default 60 s)
#   TEST_SUITES="cli install" ./scripts/test.sh   only these of: rust miri cli alloc install c go gomodule robustness
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$(date +%s)

# Debian packages the suites need: OpenSSL (tests/tls_interop.rs runs `openssl s_server` /
# `s_client`) and pkg-config (the install and Go module suites find the installed library
# through it). The Go toolchain is needed anyway, for the Go binding.
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v pkg-config >/dev/null || need+=(pkg-config)
if ((${#need[@]})); then
    echo "== installing ${need[*]} (Debian packages)"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastrpc-test-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/tmp"
export FASTRPC_SUMMARY=$WORK/summary
: >"$FASTRPC_SUMMARY"
tmp_before=$(ls -A /tmp 2>/dev/null | grep '^fastrpc' | sort)
export TMPDIR=$WORK/tmp

# ---- running ---------------------------------------------------------------------------------
ALL="rust miri cli alloc install c go gomodule robustness"
names=()
declare -A P F S SECS RC NOTE
skips=() # "suite: what: why"
fails=() # "suite: what"

# suite NAME TITLE COMMAND...: runs a shell command, output to the terminal and to the log.
suite() {
    local name=$1 title=$2
    shift 2
    [[ " ${TEST_SUITES:-$ALL} " == *" $name "* ]] || return 0
    printf '\n== %s\n' "$title"
    local t0
    t0=$(date +%s)
    bash -c "$*" 2>&1 | tee "$LOGS/$name.log"
    RC[$name]=${PIPESTATUS[0]}
    SECS[$name]=$(($(date +%s) - t0))
}

suite rust "cargo test (unit, integration, doc tests; examples are built)" \
    'cargo test --all-targets --no-fail-fast; a=$?; cargo test --doc; b=$?; [ $a = 0 ] && [ $b = 0 ]'
suite miri "the client's lock-free call protocols under Miri (data races, use after free)" \
    './scripts/test-miri.sh'
suite cli "the fastrpc command-line tool" 'cargo test -p fastrpc-cli'
suite alloc "allocation test in release mode (zero allocations per call)" \
    'cargo test --release --test alloc'
suite install "scripts/install.sh into a temporary prefix, a C program built with pkg-config" \
    './scripts/test-install.sh'
suite c "C ABI: C11, C++17, static and shared linking, ASan+UBSan, valgrind" './scripts/test-c.sh'
suite go "Go binding (go vet, go test -race); interop with the reference where it can be had" \
    "GO_TEST_FLAGS='-v ${GO_TEST_FLAGS:-}' ./scripts/test-go.sh"
suite gomodule "Go binding from another module: install.sh, a replace, -tags fastrpc_pkgconfig, a vendored copy" \
    './scripts/test-go-module.sh'
suite robustness "robustness: fuzz replay, bad-input catalogue and faults (release), C ABI soak under ASan" \
    "SOAK_SECONDS=${SOAK_SECONDS:-60} ./scripts/test-robustness.sh"

# ---- counting ----------------------------------------------------------------------------------
# add NAME PASSED FAILED SKIPPED: adds to a summary row (created on first use).
add() {
    if [ -z "${P[$1]+x}" ]; then
        names+=("$1")
        P[$1]=0 F[$1]=0 S[$1]=0
    fi
    local p=${P[$1]} f=${F[$1]} s=${S[$1]}
    P[$1]=$((p + $2))
    F[$1]=$((f + $3))
    S[$1]=$((s + $4))
}

# cargo_counts FILTER < log: "passed failed ignored" over the `test result:` lines of the test
# binaries whose `Running`/`Doc-tests` line matches the regex FILTER; then the ignored and the
# failed tests' names, one `ignored NAME` / `failed NAME` a line.
cargo_counts() {
    awk -v filter="$1" '
        BEGIN { on = (filter == ".") }
        /^ *Running / || /^ *Doc-tests / { cur = $0; on = (cur ~ filter) }
        on && /^test .* \.\.\. ignored/ { sub(/^test /, ""); sub(/ \.\.\. ignored.*/, ""); ig[n_ig++] = $0 }
        on && /^test .* \.\.\. FAILED/ { sub(/^test /, ""); sub(/ \.\.\. FAILED.*/, ""); fl[n_fl++] = $0 }
        on && /^test result: / {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed/) p += $(i - 1)
                if ($(i) ~ /^failed/) f += $(i - 1)
                if ($(i) ~ /^ignored/) s += $(i - 1)
            }
        }
        END {
            print p + 0, f + 0, s + 0
            for (i = 0; i < n_ig; i++) print "ignored " ig[i]
            for (i = 0; i < n_fl; i++) print "failed " fl[i]
        }'
}

# from_cargo ROW LOG FILTER
from_cargo() {
    local out first
    out=$(cargo_counts "$3" <"$2")
    first=$(head -1 <<<"$out")
    # shellcheck disable=SC2086
    add "$1" $first
    while read -r kind t; do
        case $kind in
        ignored) skips+=("$1: $t: #[ignore] (run with -- --ignored)") ;;
        failed) fails+=("$1: $t") ;;
        esac
    done < <(tail -n +2 <<<"$out")
}

# from_line ROW LOG REGEX: the last `N passed, M failed` line matching REGEX.
from_line() {
    local l
    l=$(grep -E "$3" "$2" | tail -1)
    if [ -z "$l" ]; then
        add "$1" 0 0 0
        return
    fi
    add "$1" "$(grep -oE '[0-9]+ passed' <<<"$l" | cut -d' ' -f1)" \
        "$(grep -oE '[0-9]+ failed' <<<"$l" | cut -d' ' -f1)" 0
}

# lines_to_fails PREFIX < lines
lines_to_fails() {
    local l
    while IFS= read -r l; do fails+=("$1$l"); done
}

# fallback SCRIPT ROW: a script that failed without a failed test to show for it (a build
# error, a crash, a timeout) counts as one failure of ROW.
fallback() {
    fails+=("$2: $1 exited with status ${RC[$1]} and no failed test to show for it (build error, crash or timeout: see its output above)")
    add "$2" 0 1 0
}
# check_rc SCRIPT ROW...: the fallback, when none of the ROWs has a failure.
check_rc() {
    local script=$1 r n=0
    shift
    [ "${RC[$script]}" = 0 ] && return
    for r in "$@"; do [ "${F[$r]:-0}" = 0 ] || n=1; done
    [ "$n" = 0 ] && fallback "$script" "$1"
}
ran() { [ -n "${RC[$1]+x}" ]; }

if ran rust; then
    from_cargo "rust (debug)" "$LOGS/rust.log" '.'
    check_rc rust "rust (debug)"
fi
if ran miri; then
    from_cargo "miri" "$LOGS/miri.log" '.'
    check_rc miri miri
fi
if ran cli; then
    from_cargo "cli" "$LOGS/cli.log" '.'
    check_rc cli cli
fi
if ran alloc; then
    from_cargo "alloc (release)" "$LOGS/alloc.log" '.'
    check_rc alloc "alloc (release)"
fi
if ran install; then
    from_line "install" "$LOGS/install.log" '^[0-9]+ passed, [0-9]+ failed$'
    lines_to_fails "install: " < <(grep -E '^FAIL ' "$LOGS/install.log" | sed 's/^FAIL *//')
    check_rc install install
fi
if ran c; then
    from_line "c" "$LOGS/c.log" '^total: [0-9]+ passed, [0-9]+ failed$'
    # test-c.sh's run lines (`  asan/test_core   44 passed,   1 failed ...`) are followed by
    # the failed tests (`      FAIL name`); its summary lists the problems of each run.
    lines_to_fails "c: " < <(sed -n '/^### running/,/^### summary/p' "$LOGS/c.log" | awk '
        /^  [a-z+]+\/[a-z_]+ / { run = $1 }
        /^ +FAIL / { print run ": " $2 }')
    lines_to_fails "c: " < <(sed -n '/^### summary/,$p' "$LOGS/c.log" | grep -E '^  [a-z+]+/.*(\(|not built)|^  build failed' | sed 's/^  //')
    check_rc c c
fi

# Go: top-level tests of `go test -v`, before and after the interop step's header.
go_counts() { # ROW PART
    local out kind t
    out=$(awk -v part="$2" '
        /^### bindings\/go\/interop/ { interop = 1 }
        (part == "interop") != (interop == 1) { next }
        /^--- PASS: / { p++ }
        /^--- FAIL: / { f++; print "failed " $3 }
        # go test -v prints a skip reason (t.Skip) just before the SKIP line, older Go after it.
        /^--- SKIP: / {
            s++; name = $3; why = prev
            if (why !~ /^ +[^ ]+\.go:[0-9]+: /) { getline; why = $0 }
            sub(/^ +[^ ]+\.go:[0-9]+: /, "", why); sub(/^ +/, "", why)
            print "skipped " name ": " why
        }
        { prev = $0 }
        END { print "counts", p + 0, f + 0, s + 0 }' "$LOGS/go.log")
    # shellcheck disable=SC2046
    add "$1" $(grep '^counts ' <<<"$out" | cut -d' ' -f2-)
    while read -r kind t; do
        case $kind in
        failed) fails+=("$1: $t") ;;
        skipped) skips+=("$1: $t") ;;
        esac
    done < <(grep -v '^counts ' <<<"$out")
}
if ran go; then
    go_counts "go" main
    go_counts "go interop" interop
    # The interop suite skipped as a whole, in test-go.sh's own words (unless it said so in
    # FASTRPC_SUMMARY, read below).
    if ! grep -qE '^go[- ]interop: skipped' "$FASTRPC_SUMMARY" && grep -q '^SKIPPED: ' "$LOGS/go.log"; then
        add "go interop" 0 0 1
        why=$(grep -m1 -A1 '^SKIPPED: ' "$LOGS/go.log" | tail -1 | sed 's/^ *//')
        skips+=("go interop: the whole suite: $(grep -m1 '^SKIPPED: ' "$LOGS/go.log" | sed 's/^SKIPPED: //') ($why); set FASTRPC_REFERENCE_DIR (bindings/go/INTEROP.md)")
    fi
    check_rc go go "go interop"
fi

if ran gomodule; then
    from_line "go module" "$LOGS/gomodule.log" '^[0-9]+ passed, [0-9]+ failed$'
    lines_to_fails "go module: " < <(grep -E '^FAIL ' "$LOGS/gomodule.log" | sed 's/^FAIL *//')
    check_rc gomodule "go module"
fi

# Robustness: each step of test-robustness.sh is its own row.
section() { # LOG START-REGEX: the lines of one `== step` section
    awk -v start="$2" '/^== / { on = ($0 ~ start) } on' "$1"
}
if ran robustness; then
    section "$LOGS/robustness.log" '^== fuzz replay' >"$WORK/fuzz"
    from_line "fuzz replay" "$WORK/fuzz" '^fuzz: [0-9]+ passed, [0-9]+ failed$'
    lines_to_fails "fuzz replay: " < <(grep -E '^[a-z_]+ .* FINDINGS$' "$WORK/fuzz" | awk '{ print $1 ": " $(NF - 1) " findings" }')
    section "$LOGS/robustness.log" '^== cargo test --release robustness' >"$WORK/rob"
    from_cargo "catalogue (release)" "$WORK/rob" 'robustness_catalogue'
    from_cargo "faults (release)" "$WORK/rob" 'robustness_faults'
    section "$LOGS/robustness.log" '^== C ABI soak' >"$WORK/soak"
    from_line "soak (ASan)" "$WORK/soak" '^[0-9]+ passed, [0-9]+ failed$'
    # A step the script reports as FAILED with no failed test in its row(s).
    while IFS= read -r step; do
        case $step in
        "fuzz replay"*) check_rc robustness "fuzz replay" ;;
        "cargo test"*) check_rc robustness "catalogue (release)" "faults (release)" ;;
        "C ABI soak"*) check_rc robustness "soak (ASan)" ;;
        *) check_rc robustness "libfuzzer" ;;
        esac
    done < <(sed -n 's/^-- \(.*\): FAILED.*/\1/p' "$LOGS/robustness.log")
    check_rc robustness "fuzz replay" "catalogue (release)" "faults (release)" "soak (ASan)" libfuzzer
fi

# Suites skipped as a whole, said in FASTRPC_SUMMARY (`go-interop: skipped: why` is the row
# "go interop").
while IFS= read -r l; do
    row=$(sed -E 's/: skipped.*//; s/-/ /g' <<<"$l")
    add "$row" 0 0 1
    skips+=("$row: the whole suite: ${l#*: skipped: }")
done < <(grep -E '^[A-Za-z0-9 _-]+: skipped' "$FASTRPC_SUMMARY")

# Temporary files left behind.
left=$(cd "$TMPDIR" && ls -A)
if [ -n "$left" ]; then
    add "temp files" 0 1 0
    fails+=("temp files: left in TMPDIR by the tests: $(echo "$left" | tr '\n' ' ')")
fi
tmp_after=$(ls -A /tmp 2>/dev/null | grep '^fastrpc' | sort)
new_in_tmp=$(comm -13 <(echo "$tmp_before") <(echo "$tmp_after") | grep -v "^${WORK##*/}$" | tr '\n' ' ')

# ---- the summary -----------------------------------------------------------------------------
total_p=0 total_f=0 total_s=0
printf '\n== summary (%s s)\n' $(($(date +%s) - start))
printf '  %-22s %7s %7s %8s\n' suite passed failed skipped
for n in "${names[@]}"; do
    printf '  %-22s %7s %7s %8s%s\n' "$n" "${P[$n]}" "${F[$n]}" "${S[$n]}" "${NOTE[$n]:+  (${NOTE[$n]})}"
    p=${P[$n]} f=${F[$n]} s=${S[$n]}
    total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
done
printf '  time per script:'
for s in $ALL; do [ -n "${SECS[$s]+x}" ] && printf ' %s %ss' "$s" "${SECS[$s]}"; done
echo
if [ ${#skips[@]} -gt 0 ]; then
    echo "skipped:"
    for l in "${skips[@]}"; do echo "  $l"; done
fi
notes=$(grep -vE '^[A-Za-z0-9 _-]+: skipped' "$FASTRPC_SUMMARY")
if [ -n "$notes" ]; then
    echo "notes:"
    sed 's/^/  /' <<<"$notes"
fi
if [ -n "$new_in_tmp" ]; then
    echo "warning: new fastrpc* entries in /tmp during the run (not counted; another process may have made them): $new_in_tmp"
fi
if [ ${#fails[@]} -gt 0 ]; then
    echo "failed:"
    for l in "${fails[@]}"; do echo "  $l"; done
fi
line="$total_p passed, $total_f failed"
[ "$total_s" -gt 0 ] && line="$line, $total_s skipped"
echo "$line"
[ "$total_f" -eq 0 ]
