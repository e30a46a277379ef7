#!/usr/bin/env bash
# Regenerates the option reference in docs/operations.md from ferryd's own
# table (ferryd --print-config-reference). Usage: scripts/update-config-reference.sh BUILD_DIR
set -euo pipefail
ferryd="$1/cmd/ferryd/ferryd"
doc="$(dirname "$0")/../docs/operations.md"
begin='<!-- BEGIN CONFIG REFERENCE -->'
end='<!-- END CONFIG REFERENCE -->'
tmp=$(mktemp)
{
  sed "/^$begin\$/q" "$doc"
  "$ferryd" --print-config-reference
  sed -n "/^$end\$/,\$p" "$doc"
} >"$tmp"
mv "$tmp" "$doc"
