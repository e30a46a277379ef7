#!/usr/bin/env bash
# bench md5_hasher: bodies MD5'd by the store's hasher thread, block by
# block as they would arrive (bench/md5_hasher/md5_hasher_bench.c), against
# OpenSSL's MD5 of the same bytes on one thread, measured in the same run.
# STREAMS bodies of MIB MiB at once, and one body alone; each RUNS times,
# the medians reported (MB = 10^6 bytes of body per second of wall time).
# Usage: bench/md5_hasher/run.sh BUILD_DIR   (a release build; scripts/bench.sh)
set -euo pipefail
build=$(cd "$1" && pwd)
RUNS=${RUNS:-5}
STREAMS=${STREAMS:-16}
MIB=${MIB:-64}
KIND=${KIND:-best}
bench=$build/bench/md5_hasher/ferry_bench_md5_hasher
. "$(dirname "$0")/../../scripts/lib.sh"

field() { sed -E "s/.* $1=([0-9.]+).*/\1/"; }
many=() one=()
for r in $(seq "$RUNS"); do
  many+=("$("$bench" "$STREAMS" "$MIB" "$KIND")")
  one+=("$("$bench" 1 "$MIB" "$KIND")")
  echo "  run $r: ${many[-1]}" >&2
  echo "  run $r: ${one[-1]}" >&2
done
med() { # med ARRAY FIELD
  local -n runs=$1
  printf '%s\n' "${runs[@]}" | field "$2" | median
}
kind=$(printf '%s\n' "${many[0]}" | sed -E 's/.* kind=([a-z0-9]+).*/\1/')
echo "bench md5_hasher: kind=$kind streams=$STREAMS mib=$MIB" \
  "mb_s=$(med many hasher_mb_s) cpu_s=$(med many hasher_cpu_s)" \
  "lanes_per_pass=$(med many lanes_per_pass) openssl_mb_s=$(med many openssl_mb_s)" \
  "one_mb_s=$(med one hasher_mb_s) one_cpu_s=$(med one hasher_cpu_s)" \
  "one_openssl_mb_s=$(med one openssl_mb_s)"
