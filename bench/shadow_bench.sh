#!/usr/bin/env bash
# What shadow verification costs (docs/benchmarks.md, "Shadow verification"), as ratios
# measured in the same run:
#  1. throughput while a new kvd serves on probation mirroring 1 %, 10 % and 100 % of its
#     reads to the standby, against the same with none mirrored (--shadow-rate 0): four
#     kvd pairs on probation side by side, the same redis-benchmark against each in turn,
#     the order rotated every round, the ratio taken per round against rate 0;
#  2. blackout with the state digest at the cut on against off: two kvds with the same
#     keys under the same light load, upgraded in turn, each upgrade's blackout_us from
#     the timeline, and the digest's own time from the promoted record.
# Digest time per GiB is a microbenchmark: build/bin/baton_bench --benchmark_filter=Digest.
#
# Usage: bench/shadow_bench.sh [--rounds N] [--requests N] [--keys N] [--upgrades N]
# (needs a built tree: cmake --preset default && cmake --build build; and redis-tools)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 requests=200000 keys=100000 upgrades=10
source bench/lib.sh
bench_counts shadow_bench "rounds requests keys upgrades" "$@"
bench_needs shadow_bench "redis-benchmark" "build/bin/kvd build/bin/batonctl"

run=$(mktemp -d /tmp/baton-shadow-bench-XXXXXX)
started=()
cleanup() {
  for d in "$run"/*/; do [[ -f "$d/pid" ]] && kill "$(cat "$d/pid")" 2>/dev/null; done
  for p in "${started[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
events() { if [[ -f "$1/events" ]]; then wc -l <"$1/events"; else echo 0; fi; }
await_events() { for _ in $(seq 600); do (($(events "$1") >= $2)) && return 0; sleep 0.05; done; return 1; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# start NAME FLAGS...: a kvd in $run/NAME with its own copy of the binary; preloads keys.
start() {
  local d="$run/$1"
  shift
  mkdir -p "$d"
  cp build/bin/kvd "$d/kvd"
  "$d/kvd" --port 0 --port-file "$d/port" --pidfile "$d/pid" --event-log "$d/events" \
    --control "$d/ctl" "$@" >"$d/kvd.log" 2>&1 &
  started+=($!)
  for _ in $(seq 100); do [[ -s "$d/pid" && -s "$d/port" ]] && break; sleep 0.05; done
  [[ -s "$d/port" ]] || { echo "shadow_bench: kvd $1 did not start:"; cat "$d/kvd.log"; exit 1; }
  redis-benchmark -p "$(cat "$d/port")" -c 20 -P 16 -n "$keys" -r "$keys" -d 100 -t set -q >/dev/null
}
# upgrade NAME: SIGUSR2 to a fresh copy of the binary; waits for the committed record.
upgrade() {
  local d="$run/$1" n
  n=$(events "$d")
  cp build/bin/kvd "$d/kvd.new" && mv "$d/kvd.new" "$d/kvd"
  kill -USR2 "$(cat "$d/pid")"
  await_events "$d" $((n + 1)) || { echo "shadow_bench: upgrade of $1 did not commit"; cat "$d/kvd.log"; exit 1; }
}

# ---------------------------------------------------------------- 1. probes
rates=(0 0.01 0.1 1)
echo "1. throughput on probation, reads mirrored at ${rates[*]}; $keys keys, $rounds rounds"
for r in "${rates[@]}"; do
  start "rate$r" --probation-ms 3600000 --shadow-rate "$r"
  upgrade "rate$r"
done
sleep 1  # every pair settled on probation before the first run
for ((round = 1; round <= rounds; round++)); do
  for ((i = 0; i < ${#rates[@]}; i++)); do
    r=${rates[$(((i + round) % ${#rates[@]}))]}
    port=$(cat "$run/rate$r/port")
    for p in 1 16; do
      n=$requests
      ((p > 1)) && n=$((requests * 8))
      redis-benchmark -p "$port" -c 50 -n "$n" -P "$p" -r "$keys" -t get,set --csv 2>/dev/null |
        tr -d '"' | awk -F, -v round="$round" -v r="$r" -v p="$p" \
          '$1 ~ /^(GET|SET)$/ { print round, r, p, $1, $2 }' >>"$run/results"
    done
  done
done
echo
echo "| load | test | rate | req/s (median) | probes sent | / rate 0, median of $rounds paired rounds (min-max) |"
echo "|---|---|---|---|---|---|"
for p in 1 16; do
  for t in GET SET; do
    for r in "${rates[@]}"; do
      q=$(awk -v p="$p" -v t="$t" -v r="$r" '$2 == r && $3 == p && $4 == t { print $5 }' "$run/results" | median)
      ratios=$(awk -v p="$p" -v t="$t" -v r="$r" '$3 == p && $4 == t { v[$1 " " $2] = $5; k[$1] = 1 }
        END { for (x in k) if (v[x " 0"] > 0) print v[x " " r] / v[x " 0"] }' "$run/results" | sort -g)
      sent=$(build/bin/batonctl --socket "$run/rate$r/ctl" status --json |
        sed -n 's/.*"probes_sent":\([0-9]*\).*/\1/p')
      printf '| -P %s | %s | %s | %.0f | %s | %.3f (%.2f-%.2f) |\n' "$p" "$t" "$r" "$q" "${sent:-?}" \
        "$(median <<<"$ratios")" "$(head -n 1 <<<"$ratios")" "$(tail -n 1 <<<"$ratios")"
    done
  done
done
for r in "${rates[@]}"; do
  mm=$(build/bin/batonctl --socket "$run/rate$r/ctl" status --json | sed -n 's/.*"probe_mismatches":\([0-9]*\).*/\1/p')
  [[ ${mm:-0} == 0 ]] || { echo "shadow_bench: rate $r raised $mm mismatches"; exit 1; }
  build/bin/batonctl --socket "$run/rate$r/ctl" promote >/dev/null
done

# ---------------------------------------------------------------- 2. blackout
echo
echo "2. blackout, digest on against off: $upgrades upgrades each, in turn, $keys keys, light load"
for dg in 0 1; do
  start "digest$dg" --probation-ms 300 --digest "$dg"
  redis-benchmark -p "$(cat "$run/digest$dg/port")" -c 4 -n 100000000 -r "$keys" -t get,set -l -q \
    >/dev/null 2>&1 &
  started+=($!)
done
for ((u = 0; u < upgrades; u++)); do
  for dg in 0 1; do
    d="$run/digest$dg"
    n=$(events "$d")
    upgrade "digest$dg"
    await_events "$d" $((n + 2)) || { echo "shadow_bench: probation of digest$dg did not end"; exit 1; }
  done
done
blackouts() { grep '"outcome":"committed"' "$run/digest$1/events" | sed -n 's/.*"blackout_us":\([0-9]*\).*/\1/p'; }
off=$(blackouts 0 | median) on=$(blackouts 1 | median)
agreed=$(grep -c '"outcome":"promoted".*"digest":"agreed' "$run/digest1/events" || true)
digest_ms=$(grep '"outcome":"promoted"' "$run/digest1/events" |
  sed -n 's/.*computed in \([0-9.]*\) ms.*/\1/p' | median)
echo "| digest | blackout_us median (min-max) over $upgrades upgrades | digests agreed | digest time at the cut (median) |"
echo "|---|---|---|---|"
printf '| off | %s (%s-%s) | - | - |\n' "$off" "$(blackouts 0 | sort -n | head -n 1)" "$(blackouts 0 | sort -n | tail -n 1)"
printf '| on | %s (%s-%s) | %s of %s | %s ms |\n' "$on" "$(blackouts 1 | sort -n | head -n 1)" \
  "$(blackouts 1 | sort -n | tail -n 1)" "$agreed" "$upgrades" "${digest_ms:-?}"
awk -v a="$on" -v b="$off" 'BEGIN { printf "blackout, digest on / off (medians): %.2f\n", a / b }'
