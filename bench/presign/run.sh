#!/usr/bin/env bash
# bench/presign: pre-signed PUT URLs per second on one core, Ferry against
# boto3's generate_presigned_url, both measured now on this machine (pinned
# to the same core when taskset is available). Median of RUNS runs each.
# Usage: bench/presign/run.sh RELEASE_BUILD_DIR   (env RUNS, SECONDS_PER_RUN)
set -euo pipefail
build_dir=$1
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-5}
secs=${SECONDS_PER_RUN:-2}
bin="$build_dir/bench/presign/presign_bench"
if [ ! -x "$bin" ]; then
  echo "run.sh: $bin not built (cmake --build $build_dir --target presign_bench)" >&2
  exit 1
fi
pin=()
if command -v taskset > /dev/null; then
  pin=(taskset -c 0)
fi
ferry_out=$("${pin[@]}" "$bin" "$runs" "$secs")
echo "$ferry_out" | sed 's/^/ferry  /' >&2
boto_out=$("${pin[@]}" /usr/bin/python3 "$here/boto3_presign.py" "$runs" "$secs")
echo "$boto_out" | sed 's/^/boto3  /' >&2
ferry=$(echo "$ferry_out" | sed -n 's/^ferry_per_s=//p')
boto=$(echo "$boto_out" | sed -n 's/^boto3_per_s=//p')
ratio=$(awk -v f="$ferry" -v b="$boto" 'BEGIN { printf "%.1f", f / b }')
echo "bench presign: ferry_per_s=$ferry boto3_per_s=$boto ratio=$ratio"
