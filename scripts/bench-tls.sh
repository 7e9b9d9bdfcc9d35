#!/usr/bin/env bash
# TLS against plaintext, interleaved in the same run (the machine may be shared and noisy):
# `fastrpc bench --spawn-server child --compress none --concurrency 1024 --duration 5s`,
# without and with TLS, ROUNDS times (5 by default). Prints calls/s, the CPU time per call
# (user + sys of the client and server processes over the calls made) and the TLS/plaintext
# ratio of each round, then the median [min..max] over the rounds of the throughput ratio and
# of plaintext CPU per call / TLS CPU per call. Certificates (a CA and a server certificate
# for 127.0.0.1) are made with openssl in a temporary directory. Builds the CLI in release
# first.
#
#   ./scripts/bench-tls.sh            5 rounds (about 1 minute)
#   ROUNDS=9 ./scripts/bench-tls.sh
#   FASTRPC_BIN=/other/fastrpc ./scripts/bench-tls.sh   another build (e.g. an A/B variant)
#   FASTRPC_BIN_B=/other/fastrpc ./scripts/bench-tls.sh also that build's TLS in each round,
#                                     against the same plaintext run (before/after in one run)
#
# Run it under the shared benchmark lock on a shared machine: flock /work/bench.lock ...
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
if [[ -z "${FASTRPC_BIN:-}" ]]; then
    cargo build --release -q -p fastrpc-cli
    FASTRPC_BIN=target/release/fastrpc
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$dir/ext.cnf"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/server.pem" -days 2 -extfile "$dir/ext.cnf" 2>/dev/null
TLS=(--tls-ca "$dir/ca.pem" --server-tls-cert "$dir/server.pem" --server-tls-key "$dir/server.key")

# One run: prints "calls/s cpu_us_per_call".
one() {
    "${FASTRPC_BIN}" bench --spawn-server child --compress none --concurrency 1024 --duration 5s "$@" \
        2>/dev/null | awk '
        /^  calls\/s/ {cps = $2}
        /^  calls  / {n = $2}
        /^  CPU/ {gsub(/[;:+]/, " "); cpu = $5 + $7 + $10 + $12}
        END {printf "%d %.3f", cps, cpu * 1e6 / n}'
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
ratios=()
cpu_ratios=()
ratios_b=()
cpu_ratios_b=()
for r in $(seq 1 "$ROUNDS"); do
    read -r p pc <<<"$(one)"
    read -r t tc <<<"$(one "${TLS[@]}")"
    ratio=$(awk -v t="$t" -v p="$p" 'BEGIN {printf "%.3f", t / p}')
    cpu_ratio=$(awk -v t="$tc" -v p="$pc" 'BEGIN {printf "%.3f", p / t}')
    ratios+=("$ratio")
    cpu_ratios+=("$cpu_ratio")
    line="round $r: plaintext $p calls/s ($pc us CPU/call)  TLS $t calls/s ($tc us CPU/call)  TLS/plaintext $ratio"
    if [[ -n "${FASTRPC_BIN_B:-}" ]]; then
        read -r b bc <<<"$(FASTRPC_BIN=$FASTRPC_BIN_B one "${TLS[@]}")"
        ratio_b=$(awk -v t="$b" -v p="$p" 'BEGIN {printf "%.3f", t / p}')
        ratios_b+=("$ratio_b")
        cpu_ratios_b+=("$(awk -v t="$bc" -v p="$pc" 'BEGIN {printf "%.3f", p / t}')")
        line="$line  | B: TLS $b calls/s ($bc us CPU/call) $ratio_b"
    fi
    echo "$line  (load $(cut -d' ' -f1 /proc/loadavg))"
done

# median [min..max] of the arguments
summary() {
    printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1}
        END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
             printf "%.3f [%.3f..%.3f]", m, v[1], v[NR]}'
}
echo "TLS/plaintext calls/s over $ROUNDS rounds: median [min..max] $(summary "${ratios[@]}")"
echo "plaintext/TLS CPU per call over $ROUNDS rounds: $(summary "${cpu_ratios[@]}")"
if [[ -n "${FASTRPC_BIN_B:-}" ]]; then
    echo "B ($FASTRPC_BIN_B): TLS/plaintext calls/s $(summary "${ratios_b[@]}"); CPU $(summary "${cpu_ratios_b[@]}")"
fi
