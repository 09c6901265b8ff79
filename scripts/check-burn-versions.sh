#!/usr/bin/env bash
# Fails unless every burn / burn-* package in Cargo.lock has the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=$(awk '/^name = "burn(-[a-z0-9-]+)?"$/ { getline; print $3 }' Cargo.lock | sort -u)
count=$(printf '%s\n' "$versions" | grep -c . || true)
if [ "$count" -ne 1 ]; then
  echo "burn crates at different versions in Cargo.lock: $(echo $versions)" >&2
  exit 1
fi
echo "burn crates all at $versions"
