#!/usr/bin/env bash
# Builds and runs the whole test suite under the default preset, ASan+UBSan and TSan, then
# fuzzes each decoder briefly (the fuzz preset, docs/fuzzing.md).
# Usage: tools/test.sh [preset...]   (default: "default asan tsan fuzz")
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
baton_install_deps
presets=("$@")
((${#presets[@]})) || presets=(default asan tsan fuzz)
jobs=$(nproc)
for preset in "${presets[@]}"; do
  start=$(date +%s)
  echo "=== preset ${preset}: configure and build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs"
  echo "=== preset ${preset}: test"
  ctest --preset "$preset" -j"$jobs" --timeout 600
  echo "=== preset ${preset}: passed in $(($(date +%s) - start)) s"
done
leftover=$(ls /dev/shm | grep '^baton-' || true)
if [[ -n "$leftover" ]]; then
  echo "FAIL: /dev/shm holds leftovers: $leftover" >&2
  exit 1
fi
echo "all presets passed: ${presets[*]}"
