#!/usr/bin/env bash
# bench multipart: what a multipart upload costs the embedded store. An
# `aws s3 cp` of a 64 MiB and a 1 GiB file up and down (the CLI's 8 MiB
# parts), and CompleteMultipartUpload alone after boto3 uploaded the same
# files in 8 MiB parts (since migration 10 a completion reads the parts for
# the object's SHA-256 and writes nothing). Wall times in seconds, medians of
# ROUNDS (3) runs; with BASE=<another release build> (e.g. of the commit
# before) the two builds alternate, round by round, and both are printed.
# Usage: bench/multipart/run.sh BUILD_DIR   (a release build; scripts/bench.sh)
set -euo pipefail
FERRY_WHO="bench multipart"
. "$(dirname "$0")/../../scripts/lib.sh"
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
ferry_workdir ferry-bench-multipart
head -c $((64 << 20)) /dev/urandom >"$tmp/64m"
head -c $((1 << 30)) /dev/urandom >"$tmp/1g"
builds=("$build")
[ -n "${BASE:-}" ] && builds=("$(cd "$BASE" && pwd)" "$build")
for round in $(seq "$ROUNDS"); do
  for b in "${builds[@]}"; do
    TMPDIR=$tmp FERRY_BUILD_DIR=$b FERRY_SOURCE_DIR=$src /usr/bin/python3 -W ignore \
      "$src/bench/multipart/completion_bench.py" 64m="$tmp/64m" 1g="$tmp/1g" | tail -1 \
      >>"$tmp/rounds"
  done
done
/usr/bin/python3 - "$tmp/rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for build in dict.fromkeys(r["build"] for r in rows):
    rs = [r for r in rows if r["build"] == build]
    keys = [k for k in rs[0] if k != "build"]
    print("bench multipart: build=%s rounds=%d %s" % (build, len(rs), " ".join(
        "%s_s=%.3f" % (k, statistics.median(r[k] for r in rs)) for k in keys)))
PY
