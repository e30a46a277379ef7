#!/usr/bin/env bash
# bench upload: HTTPS PUT throughput of the embedded store (ferryd, fsync per
# object, ledger record per object) against nginx from Debian (its dav module
# writing PUT bodies to disk, no fsync) with the same certificate, same data
# directory file system, in the same run. Cases:
#   1g   one 1 GiB PUT                           (MB/s)
#   64k  64 KiB PUTs, 32 concurrent connections  (req/s)
#   1m   1 MiB PUTs, 32 concurrent connections   (req/s)
# and the store's peak RSS while 1,000 slow uploads are open at once.
# Usage: bench/upload/run.sh BUILD_DIR   (a release build; scripts/bench.sh)
# CASES="1g 64k 1m slow" (the default) picks the cases to run; each of the
# first three runs ROUNDS (3) times on each server, and its line gives the
# medians, with the CPU time each request cost each server (user + system of
# ferryd, or of nginx's processes; nginx's writeback, done later by kernel
# threads, is not in it).
# The 1g line also gives md5_one_stream_mb_s, OpenSSL's MD5 on one core now,
# and ratio_ceiling, that rate over nginx's: one body's MD5 (its ETag) is a
# serial chain, so no store that computes it can take one body faster.
# FERRY_LOG_LEVEL=info logs every stored object (ferryd.log, kept with
# FERRY_KEEP_TMP=1); the default, warn, keeps the log out of the figures.
# nginx is installed with apt-get if missing (it is a benchmark peer only).
set -euo pipefail
FERRY_WHO="bench upload"
. "$(dirname "$0")/../../scripts/lib.sh"
build=$(cd "$1" && pwd)
N64=${N64:-4000}
N1M=${N1M:-600}
SLOW=${SLOW:-1000}
THREADS=${THREADS:-32}
ROUNDS=${ROUNDS:-3}
CASES=" ${CASES:-1g 64k 1m slow} "
want() { [[ $CASES == *" $1 "* ]]; }
ferryctl=$build/cmd/ferryctl/ferryctl
ferryd=$build/cmd/ferryd/ferryd
bench=$build/bench/upload/ferry_bench_upload
ferry_workdir ferry-bench-upload

command -v nginx >/dev/null || ensure_package nginx-light
ulimit -n 16384 2>/dev/null || ulimit -n 4096

"$ferryctl" pki init "$tmp/pki" >/dev/null
pki=$tmp/pki

# --- nginx: dav PUT over HTTPS, same certificate ---------------------------
nport=$(free_port)
mkdir -p "$tmp/nginx-root/dav" "$tmp/nginx-body"
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$tmp/nginx.conf" <<CONF
$user_line
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx-body;
  client_max_body_size 0;
  client_body_buffer_size 128k;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $pki/store.pem;
    ssl_certificate_key $pki/store.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /dav/ {
      root $tmp/nginx-root;
      dav_methods PUT;
      create_full_put_path on;
    }
  }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp" >"$tmp/nginx.log" 2>&1 &
npid=$!
pids+=($npid)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$nport"

# --- ferryd with the embedded store ----------------------------------------
sport=$(free_port)
bport=$(free_port) # no broker listens there: the store does not need one
umask 077
echo "bench-grant-secret-0123456789" >"$tmp/grant-secret"
echo "bench-operator-secret-0123456789" >"$tmp/op-secret"
cat >"$tmp/ferryd.ini" <<CONF
[ferryd]
log_level = ${FERRY_LOG_LEVEL:-warn}
ledger = $tmp/ledger.db
[broker]
port = $bport
cafile = $pki/ca.pem
certfile = $pki/ferryd.pem
keyfile = $pki/ferryd.key
[store]
kind = embedded
endpoint = https://127.0.0.1:$sport
port = $sport
secret_key_file = $tmp/grant-secret
operator_secret_key_file = $tmp/op-secret
tls_cert = $pki/store.pem
tls_key = $pki/store.key
data_dir = $tmp/store
threads = $THREADS
max_connections = $((SLOW + 100))
CONF
"$ferryd" -c "$tmp/ferryd.ini" >"$tmp/ferryd.log" 2>&1 &
fpid=$!
pids+=($fpid)
wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$sport"

ferry_base=https://127.0.0.1:$sport/ingest
nginx_base=https://127.0.0.1:$nport/dav
auth=(--access-key ferry-operator --secret bench-operator-secret-0123456789)
# CPU time (user + system, clock ticks) of a server: ferryd, or nginx's
# master and workers. The machine is shared and throughput is noisy; the
# CPU each request cost the server is much less so.
server_ticks() {
  local p t=0
  for p in $( [ "$1" = ferry ] && echo "$fpid" || echo "$npid $(pgrep -P "$npid")"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
run() { # run ferry|nginx SIZE COUNT CONC -> "req_per_s mb_per_s tls cpu_us_per_req"
  local base args=() t0 out
  if [ "$1" = ferry ]; then base=$ferry_base; args=("${auth[@]}"); else base=$nginx_base; fi
  t0=$(server_ticks "$1")
  out=$("$bench" --base "$base" --ca "$pki/ca.pem" --size "$2" --count "$3" --concurrency "$4" \
    "${args[@]}" | sed -E 's/req_per_s=([0-9.]+) mb_per_s=([0-9.]+).* tls=([^ ]+).*/\1 \2 \3/')
  echo "$out $(( ($(server_ticks "$1") - t0) * 1000000 / hz / $3 ))"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
clear_data() { rm -rf "$tmp/nginx-root/dav/bench"; }

# compare CASE UNIT FIELD SIZE COUNT CONC [CEILING]: ROUNDS rounds of Ferry
# and nginx, alternating which goes first (ABBA), so that a change in the
# machine's load during the run (it is shared) weighs on both; prints the
# medians and their ratio, and every round's ratio; with CEILING (a rate in
# UNIT no store can pass), also that rate and its ratio to nginx's median.
compare() {
  local name=$1 unit=$2 field=$3 size=$4 count=$5 conc=$6 ceiling=${7:-} i f n ftls ntls
  local fs=() ns=() rs=() fc=() nc=() extra=""
  for ((i = 0; i < ROUNDS; i++)); do
    if ((i % 2 == 0)); then
      f=$(run ferry "$size" "$count" "$conc" | tee "$tmp/f.out" | cut -d' ' -f"$field")
      n=$(run nginx "$size" "$count" "$conc" | tee "$tmp/n.out" | cut -d' ' -f"$field")
    else
      n=$(run nginx "$size" "$count" "$conc" | tee "$tmp/n.out" | cut -d' ' -f"$field")
      f=$(run ferry "$size" "$count" "$conc" | tee "$tmp/f.out" | cut -d' ' -f"$field")
    fi
    # A 1 GiB file is removed after its round (disk space); the small files
    # stay until the end: on ext4 without a journal, thousands of inodes
    # freed in nginx's directory's block group would slow its next round's
    # creates (the allocator skips recently freed inodes one by one).
    if ((size >= 1 << 30)); then clear_data; fi
    fs+=("$f") ns+=("$n") rs+=("$(ratio "$f" "$n")")
    fc+=("$(cut -d' ' -f4 "$tmp/f.out")") nc+=("$(cut -d' ' -f4 "$tmp/n.out")")
  done
  ftls=$(cut -d' ' -f3 "$tmp/f.out") ntls=$(cut -d' ' -f3 "$tmp/n.out")
  f=$(printf '%s\n' "${fs[@]}" | median) n=$(printf '%s\n' "${ns[@]}" | median)
  [ -n "$ceiling" ] && extra="md5_one_stream_mb_s=$ceiling ratio_ceiling=$(ratio "$ceiling" "$n")"
  echo "bench upload: case=$name unit=$unit ferry=$f nginx=$n ratio=$(ratio "$f" "$n")" \
    "rounds=$ROUNDS round_ratios=$(IFS=,; echo "${rs[*]}")" \
    "round_ferry=$(IFS=,; echo "${fs[*]}") round_nginx=$(IFS=,; echo "${ns[*]}")" \
    "tls_ferry=$ftls tls_nginx=$ntls" \
    "cpu_us_per_req_ferry=$(printf '%s\n' "${fc[@]}" | median)" \
    "cpu_us_per_req_nginx=$(printf '%s\n' "${nc[@]}" | median)" \
    $extra
}

# The ceiling of one stream: a single PUT's MD5 (its ETag) is one serial
# chain, so no server can store one body faster than one core runs MD5.
# OpenSSL's MD5 of 1 MiB buffers on this machine, now, in MB/s.
md5_one_stream() {
  openssl speed -seconds 2 -bytes 1048576 md5 2>/dev/null |
    awk '$1 == "md5" { sub(/k$/, "", $2); printf "%.1f", $2 * 1000 / 1e6 }'
}

want 1g && compare 1g MB/s 2 $((1 << 30)) 1 1 "$(md5_one_stream)"
want 64k && compare 64k req/s 1 65536 "$N64" 32
want 1m && compare 1m req/s 1 $((1 << 20)) "$N1M" 32
want slow || exit 0

# --- 1,000 slow uploads at once: the store's peak RSS ---------------------
# slow_clients.py ramps the connections up in batches, then trickles 4 KiB/s
# into each; "up=N" says how many were open at once.
rss_before=$(awk '/VmRSS/ {print $2}' /proc/$fpid/status)
# Uploads in progress are the data files beyond those the earlier cases
# stored (a body is written straight into objects/xx/<id>; the slow uploads
# are larger than pack_max_object, so none goes to a pack).
files_before=$(find "$tmp/store/objects" -type f | wc -l)
: >"$tmp/slow.txt"
/usr/bin/python3 "$(dirname "$0")/slow_clients.py" "$sport" "$pki/ca.pem" "$SLOW" 5 \
  ferry-operator bench-operator-secret-0123456789 >"$tmp/slow.txt" 2>&1 &
slow_pid=$!
pids+=($slow_pid)
parts=0
until grep -q '^up=' "$tmp/slow.txt" || ! kill -0 "$slow_pid" 2>/dev/null; do sleep 0.5; done
sleep 2
parts=$(($(find "$tmp/store/objects" -type f | wc -l) - files_before))
wait "$slow_pid" || true
up=$(sed -n 's/^up=//p' "$tmp/slow.txt")
peak=$(awk '/VmHWM/ {print $2}' /proc/$fpid/status)
echo "bench upload: case=slow$SLOW peak_rss_mb=$((peak / 1024)) rss_before_mb=$((rss_before / 1024)) connections_up=${up:-0} uploads_in_progress=$parts threads=$THREADS"
