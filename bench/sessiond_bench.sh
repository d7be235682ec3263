#!/usr/bin/env bash
# Worker threads, measured on samples/sessiond in one run (docs/benchmarks.md, "Worker
# threads"):
#  1. steady overhead: sessiond against sessiond-bare (the same server without Baton: no
#     runtime, no log attached to its sections), both with --workers 2, under
#     h2load --h1 -c 50 POSTing hits over 200 sessions; rounds interleave the two (each
#     started fresh), the report gives each median and the median of the per-round
#     ratios baton / bare (paired, so that drift between rounds cancels);
#  2. blackout: --workers 2 against one thread, each upgraded U times (v2 to v1 and back)
#     under light load (h2load --rps, 20 clients) with 200 idle connections; the medians of
#     the timeline's blackout_us and of each worker's worker_blackout_us, and the ratio.
#
# Usage: bench/sessiond_bench.sh [--rounds N] [--requests N] [--upgrades N]
# (needs a built tree: cmake --preset default && cmake --build build; and nghttp2-client)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 requests=1000000 upgrades=10
source bench/lib.sh
bench_counts sessiond_bench "rounds requests upgrades" "$@"
bench_needs sessiond_bench "h2load curl python3" \
  "build/bin/sessiond build/bin/sessiond-v1 build/bin/sessiond-bare" "apt-get install nghttp2-client curl"

run=$(mktemp -d /tmp/baton-sessiond-bench-XXXXXX)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT

start() {  # start <binary> <args...>: leaves $server_pid and $ports (from --port-file)
  local bin=$1
  shift
  cp "$bin" "$run/sessiond"
  rm -f "$run/port" "$run/pid" "$run/events"
  "$run/sessiond" --port-file "$run/port" --pidfile "$run/pid" --event-log "$run/events" "$@" \
    >"$run/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do [[ -s $run/port ]] && break; sleep 0.02; done
  read -ra ports <"$run/port"
  [[ ${#ports[@]} -gt 0 ]] || { echo "sessiond_bench: $bin did not start:" >&2; cat "$run/server.log" >&2; exit 1; }
}

stop() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

owner() {  # owner <id> <workers>: index into $ports (sessiond's FNV-1a shard function)
  python3 -c 'import sys
h = 2166136261
for c in sys.argv[1].encode(): h = ((h ^ c) * 16777619) % 2**32
w = int(sys.argv[2]); print(h % w if w else 0)' "$1" "$2"
}

# Sessions s0..s199, created on the port of their shard; uris.<p> lists each port's hits.
sessions=200
declare -A owner_of
for ((i = 0; i < sessions; i++)); do owner_of[s$i]=$(owner "s$i" 2); done
setup() {  # setup <workers>
  local w=$1 p
  for ((p = 0; p < ${#ports[@]}; p++)); do : >"$run/uris.$p"; done
  for ((i = 0; i < sessions; i++)); do
    p=0
    ((w > 0)) && p=${owner_of[s$i]}
    curl -s -o /dev/null -X PUT --data-binary "u$i" "http://127.0.0.1:${ports[p]}/sessions/s$i"
    echo "http://127.0.0.1:${ports[p]}/sessions/s$i/hit" >>"$run/uris.$p"
  done
  printf x >"$run/body"
}

rps() {  # rps <h2load output>: its requests per second
  sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$1"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

echo "1. steady throughput, --workers 2: h2load --h1 -c 50 -n $requests per port half;" \
  "$rounds rounds, sessiond and sessiond-bare interleaved"
for ((r = 1; r <= rounds; r++)); do
  for server in sessiond sessiond-bare; do
    start "build/bin/$server" --workers 2
    setup 2
    pids=()
    for p in 0 1; do
      h2load --h1 -c 25 -m 1 -n $((requests / 2)) -i "$run/uris.$p" -d "$run/body" \
        >"$run/h2load.$p" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}"
    for p in 0 1; do
      grep -q ' 0 failed, 0 errored' "$run/h2load.$p" || { echo "sessiond_bench: errors:" >&2; cat "$run/h2load.$p" >&2; exit 1; }
    done
    total=$(awk -v a="$(rps "$run/h2load.0")" -v b="$(rps "$run/h2load.1")" 'BEGIN {printf "%.0f", a + b}')
    echo "$total" >>"$run/rps.$server"
    printf '  round %d %-14s %8d req/s\n' "$r" "$server" "$total"
    stop
  done
  awk -v a="$(tail -1 "$run/rps.sessiond")" -v b="$(tail -1 "$run/rps.sessiond-bare")" \
    'BEGIN {print a / b}' >>"$run/ratio"
done
baton=$(median <"$run/rps.sessiond")
bare=$(median <"$run/rps.sessiond-bare")
ratio=$(median <"$run/ratio")
printf 'median: sessiond %d req/s, sessiond-bare %d req/s; paired ratio %.3f (overhead %.1f %%)\n' \
  "$baton" "$bare" "$ratio" "$(awk -v r="$ratio" 'BEGIN {print (1 - r) * 100}')"

echo
echo "2. blackout: $upgrades upgrades each, v2 to v1 and back, 20 clients at 100 req/s each," \
  "200 idle connections"
idle_pid=""
for workers in 0 2; do
  start build/bin/sessiond --workers "$workers"
  setup "$workers"
  python3 - "$run/idle.py.ready" "${ports[@]}" <<'EOF' &
import socket, sys, time, os
ports = [int(p) for p in sys.argv[2:]]
conns = [socket.create_connection(("127.0.0.1", ports[i % len(ports)])) for i in range(200)]
open(sys.argv[1], "w").close()
time.sleep(3600)
EOF
  idle_pid=$!
  for _ in $(seq 200); do [[ -e $run/idle.py.ready ]] && break; sleep 0.02; done
  loads=()
  for ((p = 0; p < ${#ports[@]}; p++)); do
    h2load --h1 -c $((20 / ${#ports[@]})) -m 1 --rps 100 -D 3600 -i "$run/uris.$p" -d "$run/body" \
      >"$run/light.$p" 2>&1 &
    loads+=($!)
  done
  sleep 0.5
  for ((u = 0; u < upgrades; u++)); do
    bin=build/bin/sessiond-v1
    ((u % 2)) && bin=build/bin/sessiond
    before=$(lines "$run/events")
    cp "$bin" "$run/sessiond.new" && mv "$run/sessiond.new" "$run/sessiond"
    kill -USR2 "$(cat "$run/pid")"
    for _ in $(seq 500); do (($(lines "$run/events") > before)) && break; sleep 0.01; done
    line=$(tail -1 "$run/events")
    [[ $line == *'"outcome":"committed"'* ]] || { echo "sessiond_bench: upgrade failed: $line" >&2; exit 1; }
    echo "$line" >>"$run/upgrades.$workers"
    sleep 0.3
  done
  kill "${loads[@]}" "$idle_pid" 2>/dev/null || true
  wait "${loads[@]}" "$idle_pid" 2>/dev/null || true
  rm -f "$run/idle.py.ready"
  server_pid=$(cat "$run/pid")  # the last generation
  stop
  b=$(sed 's/.*"blackout_us":\([0-9]*\).*/\1/' "$run/upgrades.$workers" | median)
  echo "$b" >"$run/blackout.$workers"
  if ((workers > 0)); then
    w1=$(sed 's/.*"worker_blackout_us":{"1":\([0-9]*\).*/\1/' "$run/upgrades.$workers" | median)
    w2=$(sed 's/.*"worker_blackout_us":{[^}]*"2":\([0-9]*\).*/\1/' "$run/upgrades.$workers" | median)
    printf '  --workers %d: blackout median %d us (worker 1 %d us, worker 2 %d us)\n' "$workers" "$b" "$w1" "$w2"
  else
    printf '  one thread:   blackout median %d us\n' "$b"
  fi
done
printf 'blackout ratio, 2 workers / one thread: %.2f\n' \
  "$(awk -v a="$(cat "$run/blackout.2")" -v b="$(cat "$run/blackout.0")" 'BEGIN {print a / b}')"
