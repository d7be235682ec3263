#!/usr/bin/env bash
# Steady-state throughput of kvd against redis-server and against kvd-bare (the same
# server built without Baton), measured in the same run with the same client:
#   redis-benchmark -t set,get -c 50 (plain, and -P 16).
# Rounds interleave the servers (each started fresh) so that machine drift hits all of
# them alike; the report gives the median of each figure and the ratios
# kvd/redis-server and kvd/kvd-bare (the runtime's overhead is 1 - the latter).
#
# Usage: bench/kvd_throughput.sh [--rounds N] [--requests N]   (needs a built tree:
# cmake --preset default && cmake --build build; and redis-server, redis-tools)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 requests=200000
source bench/lib.sh
bench_counts kvd_throughput "rounds requests" "$@"
bench_needs kvd_throughput "redis-server redis-benchmark" "build/bin/kvd build/bin/kvd-bare" "apt-get install redis-server redis-tools"

run=$(mktemp -d /tmp/baton-kvd-throughput-XXXXXX)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT

free_port() {  # a loopback port nobody listens on now (kvd binds port 0; redis cannot)
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  return 1
}

start() {  # start <name>: leaves $port and $server_pid
  port=$(free_port)
  case "$1" in
    redis) redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no >"$run/server.log" 2>&1 & ;;
    kvd) build/bin/kvd --port "$port" >"$run/server.log" 2>&1 & ;;
    kvd-bare) build/bin/kvd-bare --port "$port" >"$run/server.log" 2>&1 & ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && return; sleep 0.05; done
  echo "kvd_throughput: $1 did not start:" >&2
  cat "$run/server.log" >&2
  exit 1
}

stop() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

echo "redis-benchmark -t set,get -c 50: -n $requests plain, -n $((requests * 10)) with -P 16;" \
  "$rounds rounds, servers interleaved"
servers=(redis kvd kvd-bare)
for ((r = 1; r <= rounds; r++)); do
  for ((i = 0; i < 3; i++)); do
    server=${servers[$(((r + i) % 3))]}  # each round starts with another server

    start $server
    for pipeline in 1 16; do
      n=$requests
      ((pipeline > 1)) && n=$((requests * 10))
      redis-benchmark -p "$port" -c 50 -n "$n" -P "$pipeline" -t set,get --csv 2>/dev/null |
        tr -d '"' | awk -F, -v s=$server -v p=$pipeline -v r=$r \
          '$1 == "SET" || $1 == "GET" { print s, p, $1, r, $2 }' >>"$run/results"
    done
    stop
  done
  echo "round $r of $rounds done"
done

# Median per (server, pipeline, test), then the ratios.
sort -k1,1 -k2,2n -k3,3 -k5,5n "$run/results" | awk '
  { key = $1 " " $2 " " $3; v[key, ++n[key]] = $5 }
  END {
    for (key in n) { c = n[key]; m[key] = (c % 2) ? v[key, (c + 1) / 2] : (v[key, c / 2] + v[key, c / 2 + 1]) / 2 }
    printf "\n%-6s %-4s %14s %14s %14s %12s %14s\n", "test", "-P", "redis-server", "kvd", "kvd-bare", "kvd/redis", "kvd/kvd-bare"
    split("1 16", ps, " "); split("SET GET", ts, " ")
    for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) {
      p = ps[i]; t = ts[j]
      rd = m["redis " p " " t]; kv = m["kvd " p " " t]; bare = m["kvd-bare " p " " t]
      printf "%-6s %-4s %14.0f %14.0f %14.0f %11.3fx %13.3fx\n", t, p, rd, kv, bare, kv / rd, kv / bare
    }
    print "(requests per second, median of the rounds; kvd/kvd-bare below 1 is the runtime'"'"'s overhead)"
  }'
