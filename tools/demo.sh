#!/usr/bin/env bash
# The main job: build kvd, then upgrade it live under redis-benchmark load, v1 -> v2 and
# back, with idle connections held open; prints each upgrade's timeline and the client-side
# error count, and exits non-zero on any client error or lost write (tools/kvd_demo.sh;
# arguments go there).
#   tools/demo.sh counter [args]     the counter sample under its own load generator
#                                    (build/bin/upgrade_under_load --help)
#   tools/demo.sh checkpoint [args]  the two-process checkpoint/restore demo
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
baton_install_deps
cmake --preset default >/dev/null
case "${1:-}" in
  checkpoint)
    shift
    cmake --build build -j"$(nproc)" --target checkpoint_demo
    exec build/bin/checkpoint_demo "$@"
    ;;
  counter)
    shift
    cmake --build build -j"$(nproc)" --target upgrade_under_load counter
    if (($# == 0)); then set -- --connections 50 --idle 1000 --upgrades 5 --fill-mib 64; fi
    exec build/bin/upgrade_under_load "$@"
    ;;
esac
cmake --build build -j"$(nproc)" --target kvd kvd-v1 kvd-crashy incr_load
exec tools/kvd_demo.sh "$@"
