# scripts/lib.sh - shell helpers shared by the demo and the benchmarks.
# Source it; set FERRY_WHO to the name used in error messages.

# A free TCP port on 127.0.0.1 (the kernel's choice).
# free_port: a loopback TCP port that was free a moment ago, below the
# kernel's ephemeral range, so that a server restarted on it (ferryd between
# bench rounds) cannot find it taken by some client connection's local end.
# (The same choice as free_port in tests/harness/ferry_harness.py.)
free_port() {
  /usr/bin/python3 - <<'PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
low = min(low, 65536)
for _ in range(200):
    port = random.randint(max(10000, low - 12000), low - 1)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
PY
}

# wait_for SECONDS COMMAND...: runs COMMAND until it succeeds; exits the
# script with a one-line reason if it has not within SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "${FERRY_WHO:-ferry}: timed out waiting for: $*" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# ensure_package PACKAGE...: installs the Debian packages that are missing
# (a benchmark's peer, say), running `apt-get update` only if needed.
ensure_package() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "${FERRY_WHO:-ferry}: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# median: the median of the numbers on standard input, one per line.
median() {
  sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# ferry_workdir NAME: makes a fresh directory /tmp/NAME-XXXXXX in $tmp and,
# on exit, stops every process whose PID the script added to the array
# `pids` (by PID, SIGTERM) and removes the directory (kept, and named on
# stderr, when FERRY_KEEP_TMP is set, as in the Python harness).
pids=()
ferry_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  if [ -n "${FERRY_KEEP_TMP:-}" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
ferry_workdir() {
  tmp=$(mktemp -d "/tmp/$1-XXXXXX")
  trap ferry_cleanup EXIT
}
