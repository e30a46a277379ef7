#!/usr/bin/env bash
# Runs the benchmarks: every bench/NAME/run.sh, or only the one named.
# Usage: scripts/bench.sh BUILD_DIR [NAME]
# Each run.sh gets the release build dir and prints, as its last line,
#   bench NAME: key=value ...
set -euo pipefail
build_dir=$(cd "$1" && pwd)
only=${2:-}
cd "$(dirname "$0")/.."
ran=0
for run in bench/*/run.sh; do
  [ -e "$run" ] || continue
  name=$(basename "$(dirname "$run")")
  if [ -n "$only" ] && [ "$name" != "$only" ]; then continue; fi
  echo "== bench $name" >&2
  bash "$run" "$build_dir"
  ran=$((ran + 1))
done
if [ "$ran" -eq 0 ]; then
  echo "bench.sh: no benchmark named '${only}'" >&2
  exit 1
fi
