# scripts/lib.sh - shell helpers shared by the demo and the benchmarks.
# Source it; set FERRY_WHO to the name used in error messages.

# A free TCP port on 127.0.0.1 (the kernel's choice).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
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
