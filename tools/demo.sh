#!/usr/bin/env bash
# The main job: build, then run the live checkpoint/restore demo (two processes) and
# print its timeline. Extra arguments go to checkpoint_demo (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
baton_install_deps
cmake --preset default >/dev/null
cmake --build build -j"$(nproc)" --target checkpoint_demo
exec build/bin/checkpoint_demo "$@"
