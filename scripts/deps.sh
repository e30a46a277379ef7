#!/usr/bin/env bash
# Installs the Debian 12 packages Ferry needs to build, test and run, and
# nothing else. Idempotent: a package already installed is left alone, and
# `apt-get update` runs only when something is actually missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  # libraries (the table in docs/architecture.md)
  libssl-dev libmosquitto-dev libmicrohttpd-dev libcurl4-openssl-dev
  libsqlite3-dev libjansson-dev libexpat1-dev libinih-dev
  # tests
  libcmocka-dev mosquitto mosquitto-clients python3-boto3 python3-paho-mqtt
  awscli curl ca-certificates
)
# The s3rver interop test needs Node.js and npm. A machine that already has
# them (Debian's or another build of nodejs that bundles npm) keeps its own.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
