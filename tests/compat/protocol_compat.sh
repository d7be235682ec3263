#!/usr/bin/env bash
# Protocol compatibility with a build of an older main (docs/protocol.md, "Versions"):
# builds kvd from commit OLD (git archive of this checkout's history), then upgrades a
# live kvd from the old build to this one and back, under a redis-benchmark load, and
# checks that both handoffs commit, no client sees an error and every INCR counts once.
#
# Usage: protocol_compat.sh OLD_COMMIT SOURCE_DIR WORK_DIR NEW_KVD
# Exit 0: passed; 1: failed; 77: skipped (no git history to build the old main from).
set -euo pipefail
old=$1 src=$2 work=$3 new_kvd=$4

if ! git -C "$src" cat-file -e "$old^{commit}" 2>/dev/null; then
  echo "SKIP: commit $old is not in $src's history (a shallow clone or no git)"
  exit 77
fi
old_src="$work/src-$old" old_build="$work/build-$old"
if [[ ! -x "$old_build/bin/kvd" ]]; then
  echo "building kvd at $old (once; kept in $old_build)"
  rm -rf "$old_src" && mkdir -p "$old_src"
  git -C "$src" archive "$old" | tar -x -C "$old_src"
  t0=$(date +%s)
  cmake -S "$old_src" -B "$old_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBATON_BUILD_TESTS=OFF \
    -DBATON_BUILD_BENCH=OFF >"$work/old-configure.log" 2>&1 ||
    { cat "$work/old-configure.log"; exit 1; }
  cmake --build "$old_build" --target kvd -j"$(nproc)" >"$work/old-build.log" 2>&1 ||
    { tail -30 "$work/old-build.log"; exit 1; }
  echo "built in $(($(date +%s) - t0)) s"
fi

run=$(mktemp -d /tmp/baton-compat-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f "$run/pid" ]] && kill "$(cat "$run/pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
install_binary() { cp "$1" "$run/kvd.new" && mv "$run/kvd.new" "$run/kvd"; }
events() { if [[ -f "$run/events" ]]; then wc -l <"$run/events"; else echo 0; fi; }

install_binary "$old_build/bin/kvd"
"$run/kvd" --port 0 --port-file "$run/port" --pidfile "$run/pid" --event-log "$run/events" \
  >"$run/kvd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s "$run/pid" && -s "$run/port" ]] && break; sleep 0.05; done
port=$(cat "$run/port")
redis-benchmark -p "$port" -q -c 10 -n 200000 -t incr >"$run/bench.out" 2>&1 &
bench=$!
pids+=("$bench")
sleep 0.3

fail=0
upgrade() {  # $1 binary, $2 label
  local before n line
  before=$(cat "$run/pid")
  n=$(events)
  install_binary "$1"
  kill -USR2 "$before"
  for _ in $(seq 600); do (($(events) > n)) && break; sleep 0.05; done
  line=$(sed -n "$((n + 1))p" "$run/events")
  echo "$2: $line"
  if [[ $line != *'"outcome":"committed"'* ]]; then echo "FAIL: $2 did not commit"; fail=1; return; fi
  for _ in $(seq 100); do [[ $(cat "$run/pid") != "$before" ]] && break; sleep 0.05; done
  [[ $(cat "$run/pid") != "$before" ]] || { echo "FAIL: $2: the pid did not change"; fail=1; }
}
upgrade "$new_kvd" "old main (protocol 4) -> this build"
sleep 0.3
upgrade "$old_build/bin/kvd" "this build -> old main (protocol 4)"
status=0
wait "$bench" || status=$?
errors=$(tr '\r' '\n' <"$run/bench.out" | grep -ciE "error|reset|refused" || true)
count=$(redis-cli -p "$port" GET counter:__rand_int__)
echo "redis-benchmark exit $status, error lines $errors, INCR counter $count of 200000"
grep -q "upgrade request refused\|aborted" "$run/kvd.log" && { echo "FAIL: log:"; cat "$run/kvd.log"; fail=1; }
((status == 0 && errors == 0 && fail == 0)) && [[ $count == 200000 ]] || { cat "$run/kvd.log"; exit 1; }
echo "protocol compatibility with $old: passed"
