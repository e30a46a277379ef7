#!/usr/bin/env bash
# bench events: how fast ferryd's outbox drains a backlog of events, to an
# MQTT target (a real Mosquitto, loopback mutual TLS, QoS 1) and to an HTTPS
# webhook target (nginx from Debian answering 204, so the receiver is not
# what is measured).
#
# Per measurement: a fresh ledger; ferryd started once so that its targets
# become the ledger's active set, then stopped; N events (stored objects
# under grants) written through the ledger API by ferry_bench_events_fill;
# ferryd started again and timed from its start until the last event reached
# the receiver, as the receiver saw it (mosquitto_sub's message timestamps;
# nginx's access log $msec). Only one target per run (plus ferryd's own
# "@device" worker, which publishes each object's receipt to its device
# topic on the same broker at the same time, as it always does).
# Each measurement runs RUNS times; the medians are reported.
#
# Usage: bench/events/run.sh BUILD_DIR   (a release build; scripts/bench.sh)
# nginx is installed with apt-get if missing (it is a benchmark peer only).
set -euo pipefail
FERRY_WHO="bench events"
. "$(dirname "$0")/../../scripts/lib.sh"
build=$(cd "$1" && pwd)
N=${N:-20000}
RUNS=${RUNS:-3}
ferryctl=$build/cmd/ferryctl/ferryctl
ferryd=$build/cmd/ferryd/ferryd
fill=$build/bench/events/ferry_bench_events_fill
ferry_workdir ferry-bench-events
fail() { echo "bench events: $*" >&2; exit 1; }

command -v nginx >/dev/null || ensure_package nginx-light
now_s() { date +%s.%N; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
stop_pid() { # stop_pid PID: SIGTERM, wait for it
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# --- PKI, broker -----------------------------------------------------------
pki=$tmp/pki
"$ferryctl" pki init "$pki" --name 127.0.0.1 >/dev/null
"$ferryctl" pki ferryd "$pki" ferryd-sub >/dev/null # the event subscriber
port=$(free_port)
user_args=()
[ "$(id -u)" -eq 0 ] && user_args=(--user root)
"$ferryctl" broker-config "$tmp/broker" --pki "$pki" --bind 127.0.0.1 --port "$port" \
  "${user_args[@]}" >/dev/null
mosquitto -c "$tmp/broker/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
mosq_pid=$!
pids+=($mosq_pid)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"

# --- nginx: the webhook receiver -------------------------------------------
nport=$(free_port)
mkdir -p "$tmp/nginx-body"
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$tmp/nginx.conf" <<CONF
$user_line
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
daemon off;
events { worker_connections 1024; }
http {
  log_format hook '\$msec \$status \$request_length';
  client_body_temp_path $tmp/nginx-body;
  client_body_buffer_size 64k;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $pki/store.pem;
    ssl_certificate_key $pki/store.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /hook {
      access_log $tmp/hook.log hook;
      # nginx reads (and discards) the body before it answers.
      if (\$request_method != POST) { return 405; }
      return 204;
    }
  }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp" >"$tmp/nginx.log" 2>&1 &
pids+=($!)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$nport"

# --- ferryd ------------------------------------------------------------------
umask 077
echo "bench-grant-secret-0123456789" >"$tmp/grant-secret"
echo "bench-webhook-secret-0123456789" >"$tmp/hook-secret"
write_config() { # write_config FILE LEDGER mqtt|webhook
  cat >"$1" <<INI
[ferryd]
log_level = info
ledger = $2
[broker]
host = 127.0.0.1
port = $port
cafile = $pki/ca.pem
certfile = $pki/ferryd.pem
keyfile = $pki/ferryd.key
client_id = ferryd
[store]
# Only the outbox is measured: an external store nobody uploads to, so
# ferryd does not start its embedded one.
kind = external
endpoint = https://127.0.0.1:9443
secret_key_file = $tmp/grant-secret
INI
  if [ "$3" = mqtt ]; then
    printf '[target.bus]\ntype = mqtt\n' >>"$1"
  else
    printf '[target.hook]\ntype = webhook\nurl = https://127.0.0.1:%s/hook\nca_file = %s\nsecret_file = %s\n' \
      "$nport" "$pki/ca.pem" "$tmp/hook-secret" >>"$1"
  fi
}

# measure mqtt|webhook RUN -> writes "per_s steady_per_s received
# first_after_s ferryd_cpu_us_per_event broker_cpu_us_per_event" to
# $tmp/result. Not run in a $( ) subshell: the PIDs it starts must reach
# the cleanup trap, and a failure must stop the whole script.
measure() {
  local kind=$1 dir=$tmp/$1-$2 fpid spid t0 last first got
  mkdir -p "$dir"
  write_config "$dir/ferryd.ini" "$dir/ledger.db" "$kind"
  # 1. ferryd once: its targets become the ledger's active set.
  "$ferryd" -c "$dir/ferryd.ini" >"$dir/ferryd-0.log" 2>&1 &
  fpid=$!
  pids+=($fpid)
  wait_for 20 grep -q event=ferryd.started "$dir/ferryd-0.log"
  stop_pid "$fpid"
  grep -q "target=$([ "$kind" = mqtt ] && echo bus || echo hook) kind" "$dir/ferryd-0.log" ||
    fail "ferryd did not start its $kind target (see $dir/ferryd-0.log)"
  # 2. the backlog.
  "$fill" "$dir/ledger.db" "$N" >"$dir/fill.txt"
  # 3. the receiver, then ferryd again, timed until the receiver has all N.
  if [ "$kind" = mqtt ]; then
    local subs
    subs=$(grep -c 'as ferryd-sub' "$tmp/mosquitto.log" || true)
    mosquitto_sub -h 127.0.0.1 -p "$port" --cafile "$pki/ca.pem" --cert "$pki/ferryd-sub.pem" \
      --key "$pki/ferryd-sub.key" -i "ferryd-sub" -q 1 -t ferry/events/object-created \
      -C "$N" -F '%U' >"$dir/sub.txt" 2>"$dir/sub.err" &
    spid=$!
    pids+=($spid)
    # Subscribed once the broker has seen this connection (and a moment
    # for the SUBSCRIBE behind it).
    wait_for 10 bash -c "[ \$(grep -c 'as ferryd-sub' '$tmp/mosquitto.log') -gt $subs ]"
    sleep 0.3
  else
    : >"$tmp/hook.log"
    kill -USR1 "$(cat "$tmp/nginx.pid")" # reopen the (truncated) access log
    sleep 0.3
  fi
  local mq0
  mq0=$(cpu_ticks "$mosq_pid")
  t0=$(now_s)
  "$ferryd" -c "$dir/ferryd.ini" >"$dir/ferryd-1.log" 2>&1 &
  fpid=$!
  pids+=($fpid)
  local deadline=$((SECONDS + 300))
  if [ "$kind" = mqtt ]; then
    while kill -0 "$spid" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || fail "mqtt: only $(wc -l <"$dir/sub.txt") of $N events arrived"
      sleep 0.05
    done
    wait "$spid" || fail "mosquitto_sub failed: $(cat "$dir/sub.err")"
    got=$(wc -l <"$dir/sub.txt")
    first=$(head -n 1 "$dir/sub.txt")
    last=$(tail -n 1 "$dir/sub.txt")
  else
    until [ "$(grep -c ' 204 ' "$tmp/hook.log")" -ge "$N" ]; do
      [ $SECONDS -lt $deadline ] || fail "webhook: only $(grep -c ' 204 ' "$tmp/hook.log") of $N events arrived"
      sleep 0.05
    done
    sleep 0.2 # a late duplicate would show in the count
    got=$(grep -c ' 204 ' "$tmp/hook.log")
    first=$(head -n 1 "$tmp/hook.log" | cut -d' ' -f1)
    last=$(tail -n 1 "$tmp/hook.log" | cut -d' ' -f1)
  fi
  # CPU time (user + system) per event: ferryd's whole run, the broker's
  # share of the same window.
  local fcpu mcpu
  fcpu=$(cpu_ticks "$fpid")
  mcpu=$(( $(cpu_ticks "$mosq_pid") - mq0 ))
  stop_pid "$fpid"
  awk -v n="$N" -v t0="$t0" -v f="$first" -v l="$last" -v got="$got" -v fc="$fcpu" \
    -v mc="$mcpu" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f %.0f %d %.2f %.0f %.0f\n", n / (l - t0), (n - 1) / (l - f), got,
             f - t0, fc / hz * 1e6 / n, mc / hz * 1e6 / n }' >"$tmp/result"
}

mqtt=() webhook=()
hdr="per_s steady_per_s received first_after_s ferryd_cpu_us/ev broker_cpu_us/ev"
for r in $(seq "$RUNS"); do
  measure mqtt "$r"
  mqtt+=("$(cat "$tmp/result")")
  echo "  run $r mqtt:    $hdr = ${mqtt[-1]}" >&2
  measure webhook "$r"
  webhook+=("$(cat "$tmp/result")")
  echo "  run $r webhook: $hdr = ${webhook[-1]}" >&2
done
col() { printf '%s\n' "${@:2}" | cut -d' ' -f"$1" | median; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench events: mqtt_per_s=$(col 1 "${mqtt[@]}") webhook_per_s=$(col 1 "${webhook[@]}")" \
  "mqtt_steady_per_s=$(col 2 "${mqtt[@]}") webhook_steady_per_s=$(col 2 "${webhook[@]}")" \
  "events=$N mqtt_received=$(col 3 "${mqtt[@]}") webhook_received=$(col 3 "${webhook[@]}")" \
  "mqtt_ferryd_cpu_us=$(col 5 "${mqtt[@]}") mqtt_broker_cpu_us=$(col 6 "${mqtt[@]}")" \
  "webhook_ferryd_cpu_us=$(col 5 "${webhook[@]}")" \
  "runs=$RUNS load=\"$load\""
