#!/usr/bin/env bash
# The main job: build, then upgrade samples/counter live 5 times under load (50 busy and
# 1000 idle connections, 64 MiB of state) and print each upgrade's timeline and what the
# clients saw. Exits non-zero on any client-side error or a count that is not exact.
# Arguments go to build/bin/upgrade_under_load (see --help); `tools/demo.sh checkpoint`
# runs the two-process checkpoint/restore demo instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
baton_install_deps
cmake --preset default >/dev/null
if [[ "${1:-}" == "checkpoint" ]]; then
  shift
  cmake --build build -j"$(nproc)" --target checkpoint_demo
  exec build/bin/checkpoint_demo "$@"
fi
cmake --build build -j"$(nproc)" --target upgrade_under_load counter
if (($# == 0)); then set -- --connections 50 --idle 1000 --upgrades 5 --fill-mib 64; fi
exec build/bin/upgrade_under_load "$@"
