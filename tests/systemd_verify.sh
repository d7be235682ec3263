#!/usr/bin/env bash
# The shipped unit passes `systemd-analyze verify` without a word: it exits 0 even on an
# unknown key, so any output fails. The unit's /usr/local/bin paths are pointed at this
# build's binaries (verify checks that they exist).
# usage: systemd_verify.sh UNIT KVD BATONCTL
set -euo pipefail
unit=$1 kvd=$2 batonctl=$3
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing: run tools/deps.sh" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed -e "s|/usr/local/bin/kvd|$kvd|" -e "s|/usr/local/bin/batonctl|$batonctl|" "$unit" >"$dir/kvd.service"
out=$(cd "$dir" && systemd-analyze verify ./kvd.service 2>&1) || { echo "$out"; exit 1; }
if [[ -n $out ]]; then
  echo "systemd-analyze verify printed:"
  echo "$out"
  exit 1
fi
echo "kvd.service: systemd-analyze verify clean"
