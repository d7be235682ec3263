#!/usr/bin/env bash
# What probation costs (docs/benchmarks.md, "Probation"): kvd's throughput while a new
# version serves on probation (every write streamed back to the standby before its reply)
# against the same server in steady state, measured in the same run with the same client
# (redis-benchmark -c 50 -t set,get,incr, plain and -P 16), in interleaved rounds; the
# reverse stream's lag, sampled every 10 ms from `batonctl status`; and the memory of
# both processes during probation (PSS) against the one process's steady RSS.
#
# Usage: bench/probation_bench.sh [--rounds N] [--requests N] [--keys N]
# (needs a built tree: cmake --preset default && cmake --build build; and redis-tools)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 requests=300000 keys=200000
source bench/lib.sh
bench_counts probation_bench "rounds requests keys" "$@"
bench_needs probation_bench "redis-benchmark" "build/bin/kvd build/bin/batonctl"

run=$(mktemp -d /tmp/baton-probation-bench-XXXXXX)
first=""
cleanup() {
  [[ -f "$run/pid" ]] && kill "$(cat "$run/pid")" 2>/dev/null || true
  [[ -n $first ]] && kill "$first" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
ctl() { build/bin/batonctl --socket "$run/ctl" "$@"; }
events() { if [[ -f "$run/events" ]]; then wc -l <"$run/events"; else echo 0; fi; }
await_events() { for _ in $(seq 600); do (($(events) >= $1)) && return 0; sleep 0.05; done; return 1; }
kib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

cp build/bin/kvd "$run/kvd"
"$run/kvd" --port 0 --port-file "$run/port" --pidfile "$run/pid" --event-log "$run/events" \
  --control "$run/ctl" --probation-ms 3600000 >"$run/kvd.log" 2>&1 &
first=$!
for _ in $(seq 100); do [[ -s "$run/pid" && -s "$run/port" ]] && break; sleep 0.05; done
port=$(cat "$run/port")
awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) { k = "pre:" i; v = sprintf("%0100d", i);
  printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v } }' |
  redis-cli -p "$port" --pipe >/dev/null

# One redis-benchmark run; appends "round phase pipeline test rps" lines to results.
bench() {  # $1 phase, $2 pipeline
  local n=$requests
  (($2 > 1)) && n=$((requests * 8))
  redis-benchmark -p "$port" -c 50 -n "$n" -P "$2" -t set,get,incr --csv 2>/dev/null |
    tr -d '"' | awk -F, -v r="$r" -v ph="$1" -v p="$2" \
      '$1 ~ /^(SET|GET|INCR)$/ { print r, ph, p, $1, $2 }' >>"$run/results"
}

lag_max=0 lag_samples=()
echo "kvd on 127.0.0.1:$port, $keys keys; $rounds rounds of steady / probation, -P 1 and 16"
for ((r = 1; r <= rounds; r++)); do
  steady_rss=$(rss_kib "$(cat "$run/pid")")
  # Odd rounds measure steady state first, even rounds last: drift hits both alike.
  ((r % 2)) && for p in 1 16; do bench steady "$p"; done
  n=$(events)
  before=$(cat "$run/pid")
  cp build/bin/kvd "$run/kvd.new" && mv "$run/kvd.new" "$run/kvd"
  kill -USR2 "$before"
  await_events $((n + 1)) || { echo "upgrade did not commit"; exit 1; }
  for _ in $(seq 100); do [[ $(cat "$run/pid") != "$before" ]] && break; sleep 0.05; done
  now=$(cat "$run/pid")
  for p in 1 16; do bench probation "$p"; done
  probation_pss=$(($(pss_kib "$before") + $(pss_kib "$now")))
  # Lag, every 10 ms, under a separate write load: the sampler (a batonctl process each
  # time) would take CPU from the throughput runs above.
  (while :; do ctl status --json | sed -n 's/.*"reverse_lag_bytes":\([0-9]*\).*/\1/p'; sleep 0.01; done) \
    >"$run/lag.$r" 2>/dev/null &
  sampler=$!
  redis-benchmark -p "$port" -c 50 -n $((requests * 4)) -P 16 -t set,incr -q >/dev/null 2>&1
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  echo "round $r: steady RSS $(kib "$steady_rss") MiB; during probation PSS $(kib "$probation_pss") MiB" \
    "(incumbent + standby), ratio $(awk -v a="$probation_pss" -v b="$steady_rss" 'BEGIN { printf "%.2f", a / b }')"
  echo "$steady_rss $probation_pss" >>"$run/memory"
  ctl promote >/dev/null
  await_events $((n + 2)) || { echo "promote did not end probation"; exit 1; }
  for _ in $(seq 200); do
    [[ $(awk '{ print $3 }' "/proc/$before/stat" 2>/dev/null) =~ ^[RSD]$ ]] || break  # gone or a zombie
    sleep 0.05
  done
  ((r % 2)) || for p in 1 16; do bench steady "$p"; done
done

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
echo "| load | test | steady req/s (median) | probation req/s (median) | probation / steady, median of $rounds paired rounds (min-max) |"
echo "|---|---|---|---|---|"
for p in 1 16; do
  for t in SET GET INCR; do
    s=$(awk -v p="$p" -v t="$t" '$2 == "steady" && $3 == p && $4 == t { print $5 }' "$run/results" | median)
    q=$(awk -v p="$p" -v t="$t" '$2 == "probation" && $3 == p && $4 == t { print $5 }' "$run/results" | median)
    ratios=$(awk -v p="$p" -v t="$t" '$3 == p && $4 == t { v[$1 " " $2] = $5; r[$1] = 1 }
      END { for (k in r) if (v[k " steady"] > 0) print v[k " probation"] / v[k " steady"] }' "$run/results" | sort -n)
    printf '| -P %s | %s | %.0f | %.0f | %.3f (%.2f-%.2f) |\n' "$p" "$t" "$s" "$q" "$(median <<<"$ratios")" \
      "$(head -n 1 <<<"$ratios")" "$(tail -n 1 <<<"$ratios")"
  done
done
cat "$run"/lag.* | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) { print "reverse-stream lag: no samples"; exit }
  p99 = int(NR * 0.99); if (p99 < 1) p99 = 1
  printf "\nreverse-stream lag over %d samples (every 10 ms, redis-benchmark -P 16 set,incr): median %d bytes, p99 %d bytes, max %d bytes\n",
    NR, a[int((NR + 1) / 2)], a[p99], a[NR] }'
awk '{ s += $1; q += $2; n++ } END { printf "memory: steady RSS %.0f MiB, during probation PSS %.0f MiB (both processes): %.2fx\n",
  s / n / 1024, q / n / 1024, q / s }' "$run/memory"
