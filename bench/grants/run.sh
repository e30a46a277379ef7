#!/usr/bin/env bash
# bench grants: request -> grant round trip over a real Mosquitto with mutual
# TLS on loopback, ferryd against a bare echo responder on the same broker.
# Usage: bench/grants/run.sh BUILD_DIR   (scripts/bench.sh passes the release build)
# Each measurement runs RUNS times; the medians are reported. Besides the
# closing line, it prints who spends the CPU per round trip with DEVICES
# devices (the load generator, the broker, the echo or ferryd), measured by
# the client over its measured span.
set -euo pipefail
FERRY_WHO="bench grants"
. "$(dirname "$0")/../../scripts/lib.sh"
build=$(cd "$1" && pwd)
RUNS=${RUNS:-3}
SECONDS_1=${SECONDS_1:-4}
SECONDS_100=${SECONDS_100:-6}
DEVICES=${DEVICES:-100}
CLIENT_THREADS=${CLIENT_THREADS:-1} # threads driving the devices (bench/grants/grants_bench.c)
# EXTRA_DEVICES=16: also a run with that many devices per round (issue 4
# quotes 16 requesters against one echo), reported on its own line.
EXTRA_DEVICES=${EXTRA_DEVICES:-}
ferryctl=$build/cmd/ferryctl/ferryctl
ferryd=$build/cmd/ferryd/ferryd
bench=$build/bench/grants/ferry_bench_grants
ferry_workdir ferry-bench-grants

"$ferryctl" pki init "$tmp/pki" >/dev/null
for i in $(seq 0 $((DEVICES - 1))); do "$ferryctl" pki issue "$tmp/pki" "bench-$i" >/dev/null; done
port=$(free_port)
user_args=()
[ "$(id -u)" -eq 0 ] && user_args=(--user root)
"$ferryctl" broker-config "$tmp/broker" --pki "$tmp/pki" --bind 127.0.0.1 --port "$port" \
  "${user_args[@]}" >/dev/null
mosquitto -c "$tmp/broker/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
broker_pid=$!
pids+=($broker_pid)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"

# client DEVICES SECONDS RESPONDER_PID
#   -> "p50 p99 per_s client_cpu_us broker_cpu_us responder_cpu_us"
# (the CPU figures: per round trip, user + system, over the measured span)
client() {
  "$bench" client --port "$port" --ca "$tmp/pki/ca.pem" --pki "$tmp/pki" --devices "$1" \
    --seconds "$2" --threads "$CLIENT_THREADS" --broker-pid "$broker_pid" \
    --responder-pid "$3" |
    sed -E 's/.*p50_us=([0-9]+) p99_us=([0-9]+) per_s=([0-9]+) cpu_us=([0-9.]+) broker_cpu_us=([0-9.]+) responder_cpu_us=([0-9.]+).*/\1 \2 \3 \4 \5 \6/'
}
summarise() { # summarise LABEL RUNS1_ARRAY RUNSN_ARRAY -> sets LABEL_{p50,p99,per_s}_{1,N}
  local label=$1
  local -n r1=$2 rN=$3
  local name=(x p50 p99 per_s)
  for i in 1 2 3; do
    eval "${label}_${name[$i]}_1=$(printf '%s\n' "${r1[@]}" | cut -d' ' -f$i | median)"
    eval "${label}_${name[$i]}_N=$(printf '%s\n' "${rN[@]}" | cut -d' ' -f$i | median)"
  done
  for r in "${r1[@]}"; do echo "  $label 1 device:   p50_us p99_us per_s = ${r% * * *}" >&2; done
  for r in "${rN[@]}"; do echo "  $label $DEVICES devices: p50_us p99_us per_s = ${r% * * *}" >&2; done
  # Who spends the CPU, per round trip with $DEVICES devices (medians).
  local cpu=() f
  for f in 4 5 6; do cpu+=("$(printf '%s\n' "${rN[@]}" | cut -d' ' -f$f | median)"); done
  echo "  $label $DEVICES devices: CPU us per round trip: client ${cpu[0]} broker ${cpu[1]}" \
    "responder ${cpu[2]}" >&2
}

# 1. The floor: a bare echo responder with ferryd's identity and subscription.
start_echo() {
  : >"$tmp/echo.log"
  "$bench" echo --port "$port" --ca "$tmp/pki/ca.pem" --cert "$tmp/pki/ferryd.pem" \
    --key "$tmp/pki/ferryd.key" 2>"$tmp/echo.log" &
  echo_pid=$!
  pids+=($echo_pid)
  wait_for 10 grep -q running "$tmp/echo.log"
  sleep 0.5
}
stop_echo() { kill "$echo_pid"; wait "$echo_pid" 2>/dev/null || true; }

# 2. ferryd: parse, policy, sign, ledger insert (SQLite), answer. No limits
# that would refuse the load (rates and open grants unlimited).
# FERRY_BENCH_STORE=external measures the commit-first path (an external
# store: the answer waits for the ledger commit).
umask 077
echo "bench-secret-key" >"$tmp/secret"
echo "bench-operator-key" >"$tmp/operator-secret"
store_port=$(free_port)
cat >"$tmp/ferryd.ini" <<INI
[ferryd]
log_level = info
ledger = $tmp/ledger.db
[broker]
port = $port
cafile = $tmp/pki/ca.pem
certfile = $tmp/pki/ferryd.pem
keyfile = $tmp/pki/ferryd.key
client_id = ferryd
[store]
# The default deployment: the embedded store, which enforces every grant
# (so ferryd publishes each batch's answers before the batch's ledger commit,
# src/daemon/grant_service.h). Nobody uploads here; only grants are measured.
kind = ${FERRY_BENCH_STORE:-embedded}
endpoint = https://127.0.0.1:$store_port
secret_key_file = $tmp/secret
$(if [ "${FERRY_BENCH_STORE:-embedded}" = embedded ]; then
  printf 'port = %s\noperator_secret_key_file = %s\ntls_cert = %s\ntls_key = %s\ndata_dir = %s\n' \
    "$store_port" "$tmp/operator-secret" "$tmp/pki/store.pem" "$tmp/pki/store.key" "$tmp/store"
fi)
[policy]
content_types = */*
max_open_grants = 0
rate_per_minute = 0
daily_quota = 0
INI
# FERRYD_WRAP="perf record -e cpu-clock -g -o /tmp/ferryd.perf" profiles ferryd.
cpu_ticks=0
start_ferryd() {
  ${FERRYD_WRAP:-} "$ferryd" -c "$tmp/ferryd.ini" 2>>"$tmp/ferryd.log" &
  ferryd_pid=$!
  pids+=($ferryd_pid)
  wait_for 10 bash -c "[ \$(grep -c event=broker.connected '$tmp/ferryd.log') -ge $1 ]"
  sleep 0.5
}
stop_ferryd() {
  # ferryd's own CPU time (user + system, clock ticks), summed over the runs.
  cpu_ticks=$((cpu_ticks + $(awk '{print $14 + $15}' "/proc/$ferryd_pid/stat")))
  kill -INT "$ferryd_pid"; wait "$ferryd_pid" 2>/dev/null || true
}

# The echo and ferryd take turns, round after round, so that both see the
# same share of whatever else this machine is doing.
echo1=() echoN=() ferry1=() ferryN=() echoX=() ferryX=()
for r in $(seq "$RUNS"); do
  start_echo
  echo1+=("$(client 1 "$SECONDS_1" "$echo_pid")")
  echoN+=("$(client "$DEVICES" "$SECONDS_100" "$echo_pid")")
  [ -n "$EXTRA_DEVICES" ] && echoX+=("$(client "$EXTRA_DEVICES" "$SECONDS_100" "$echo_pid")")
  stop_echo
  start_ferryd "$r"
  ferry1+=("$(client 1 "$SECONDS_1" "$ferryd_pid")")
  ferryN+=("$(client "$DEVICES" "$SECONDS_100" "$ferryd_pid")")
  [ -n "$EXTRA_DEVICES" ] && ferryX+=("$(client "$EXTRA_DEVICES" "$SECONDS_100" "$ferryd_pid")")
  stop_ferryd
done
summarise echo echo1 echoN
summarise ferry ferry1 ferryN
if [ -n "$EXTRA_DEVICES" ]; then
  for label in echo ferry; do
    declare -n runs=${label}X
    for r in "${runs[@]}"; do
      echo "  $label $EXTRA_DEVICES devices: p50_us p99_us per_s = ${r% * * *}" >&2
    done
    echo "  $label $EXTRA_DEVICES devices: median per_s $(printf '%s\n' "${runs[@]}" | cut -d' ' -f3 |
      median)" >&2
    unset -n runs
  done
fi
grants=$(/usr/bin/python3 -c 'import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM grants").fetchone()[0])' \
  "$tmp/ledger.db")
cpu_us_per_grant=$(awk -v t="$cpu_ticks" -v hz="$(getconf CLK_TCK)" -v n="$grants" \
  'BEGIN {printf "%.0f", n ? t / hz * 1e6 / n : 0}')
echo "  ferryd CPU per grant: ${cpu_us_per_grant} us" >&2
echo "  ferryd issued $grants grants; ledger $(du -h "$tmp/ledger.db" | cut -f1); $(grep -o "handled=[0-9]* batches=[0-9]*" "$tmp/ferryd.log" | tr '=' ' ' |
  awk '{h += $2; b += $4} END {printf "handled=%d batches=%d", h, b}')" >&2

ratio=$(awk -v a="$ferry_p50_1" -v b="$echo_p50_1" 'BEGIN {printf "%.2f", a / b}')
ratio_N=$(awk -v a="$ferry_p50_N" -v b="$echo_p50_N" 'BEGIN {printf "%.2f", a / b}')
echo "bench grants: p50_us=$ferry_p50_1 p99_us=$ferry_p99_1 echo_p50_us=$echo_p50_1" \
  "echo_p99_us=$echo_p99_1 ratio=$ratio grants_per_s=$ferry_per_s_N" \
  "p50_${DEVICES}dev_us=$ferry_p50_N p99_${DEVICES}dev_us=$ferry_p99_N" \
  "echo_p50_${DEVICES}dev_us=$echo_p50_N echo_p99_${DEVICES}dev_us=$echo_p99_N" \
  "ratio_${DEVICES}dev=$ratio_N echo_per_s=$echo_per_s_N store=${FERRY_BENCH_STORE:-embedded}"
