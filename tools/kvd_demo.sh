#!/usr/bin/env bash
# kvd live upgrades under redis-benchmark load: the README's main job (tools/demo.sh).
#
# Starts kvd-v1, loads it, holds idle connections open, then runs redis-benchmark
# (plain, then pipelined -P 16) while it upgrades the server with SIGUSR2: first v1 -> v2,
# then v2 -> v2, with a rollback v2 -> v1 and back during the pipelined run. Prints each timeline
# and the client-side error count; exits non-zero on any client error, a lost or doubled
# INCR, a damaged key, a dropped idle connection or an upgrade that did not commit.
#
# Usage: tools/kvd_demo.sh [--keys N] [--requests N] [--requests-pipelined N] [--upgrades N]
#                          [--idle N] [--clients N]
# --requests is redis-benchmark's -n for the plain run (default 300000), --requests-pipelined
# for the -P 16 run (default 6x --requests); --upgrades is per run. --bin-dir DIR takes kvd
# and kvd-v1 from DIR (default build/bin; the tests pass their preset's).
# Expects build/bin/kvd and build/bin/kvd-v1 (tools/demo.sh builds them).
set -euo pipefail
cd "$(dirname "$0")/.."

keys=200000 requests=300000 requests_pipelined="" upgrades=5 idle=1000 clients=50
bin_dir=build/bin
while (($#)); do
  case "$1" in
    --bin-dir)
      [[ $# -ge 2 && -d "$2" ]] || { echo "kvd_demo: --bin-dir needs an existing directory" >&2; exit 2; }
      bin_dir=$(cd "$2" && pwd)
      shift 2
      ;;
    --keys | --requests | --requests-pipelined | --upgrades | --idle | --clients)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "kvd_demo: $1 takes a whole number" >&2; exit 2; }
      name=${1#--}
      declare "${name//-/_}=$2"
      shift 2
      ;;
    *)
      echo "kvd_demo: unknown option '$1'; options: --keys --requests --requests-pipelined" \
        "--upgrades --idle --clients --bin-dir" >&2
      exit 2
      ;;
  esac
done
requests_pipelined=${requests_pipelined:-$((requests * 6))}
((upgrades >= 1 && clients >= 1 && requests >= 1)) || { echo "kvd_demo: counts must be >= 1" >&2; exit 2; }

V1="$bin_dir/kvd-v1" V2="$bin_dir/kvd"

for b in "$V1" "$V2"; do [[ -x "$b" ]] || { echo "kvd_demo: $b missing; run tools/demo.sh" >&2; exit 2; }; done
command -v redis-benchmark >/dev/null || { echo "kvd_demo: needs redis-tools (tools/deps.sh)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

run=$(mktemp -d /tmp/baton-kvd-demo-XXXXXX)
pids=()  # everything this script started, killed by pid on the way out
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f "$run/pid" ]] && kill "$(cat "$run/pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

install_binary() {  # atomically, as an operator would: the running binary is never written
  cp "$1" "$run/bin/kvd.new" && mv "$run/bin/kvd.new" "$run/bin/kvd"
}
cli() { redis-cli -p "$port" "$@"; }
now_ms() { date +%s%3N; }
div() { awk -v a="${1:-0}" -v b="$2" 'BEGIN { print a / b }'; }
info_field() { cli INFO "$1" | tr -d '\r' | sed -n "s/^$2://p"; }

mkdir -p "$run/bin"
install_binary "$V1"
"$run/bin/kvd" --port 0 --port-file "$run/port" --pidfile "$run/pid" --event-log "$run/events" \
  >"$run/kvd.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do [[ -s "$run/pid" && -s "$run/port" ]] && break; sleep 0.05; done
port=$(cat "$run/port")
echo "kvd-v1 (schema v1) pid $(cat "$run/pid") on 127.0.0.1:$port; run directory $run"

# Load: --keys keys with 100-byte values, through redis-cli --pipe (raw RESP).
t0=$(now_ms)
awk -v n="$keys" 'BEGIN {
  for (i = 0; i < n; i++) {
    k = "pre:" i; v = sprintf("value-%d-", i); while (length(v) < 100) v = v "x";
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
  } }' | cli --pipe >"$run/load.out" 2>&1
grep -q "errors: 0, replies: $keys" "$run/load.out" || { cat "$run/load.out"; exit 1; }
echo "loaded $keys keys ($(($(info_field memory used_memory_dataset) >> 20)) MiB) in $(($(now_ms) - t0)) ms"

redis-benchmark -p "$port" -I -c "$idle" >"$run/idle.out" 2>&1 &
pids+=($!)
idle_pid=$!
for _ in $(seq 200); do (($(info_field clients connected_clients) >= idle)) && break; sleep 0.05; done
baseline_clients=$(info_field clients connected_clients)
echo "holding $idle idle connections open (redis-benchmark -I)"

# The upgrade plan: v1 -> v2 first, a rollback v2 -> v1 and back in the middle of the
# pipelined run, v2 -> v2 otherwise.
plan=()
for ((i = 0; i < 2 * upgrades; i++)); do
  if ((i == upgrades + upgrades / 2)); then plan+=("$V1"); else plan+=("$V2"); fi
done

step=0 committed=0 failed=0
served_by=()  # every incumbent: their checkpoint segments are named baton-<pid>-*
events() { if [[ -f "$run/events" ]]; then wc -l <"$run/events"; else echo 0; fi; }
upgrade() {
  local bin=$1 before events_before line from to
  before=$(cat "$run/pid")
  served_by+=("$before")
  events_before=$(events)
  from=$(info_field server kvd_schema_version)
  install_binary "$bin"
  kill -USR2 "$before"
  for _ in $(seq 1200); do
    (($(events) > events_before)) && break
    sleep 0.05
  done
  if (($(events) <= events_before)); then
    echo "upgrade did not finish within 60 s"; failed=$((failed + 1)); return
  fi
  line=$(tail -n 1 "$run/events")
  to=$(info_field server kvd_schema_version)
  num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$line"; }
  str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$line"; }
  printf '%-4s %-8s %-10s %8.3fms %8.1fms %8.1fms %8.1fMiB %7s %6s %s\n' "$(num generation)" \
    "v$from->v$to" "$(str outcome)" "$(div "$(num blackout_us)" 1000)" \
    "$(div "$(num total_us)" 1000)" "$(div "$(num catchup_us)" 1000)" \
    "$(div "$(num checkpoint_bytes)" 1048576)" "$(num deltas)" "$(num fds)" "$(str reason)"
  if [[ $(str outcome) == committed && $(cat "$run/pid") != "$before" ]]; then
    committed=$((committed + 1))
  else
    failed=$((failed + 1))
  fi
}

bench_errors=0 bench_failed=0
for pipeline in 1 16; do
  n=$requests
  ((pipeline > 1)) && n=$requests_pipelined
  redis-benchmark -p "$port" -c "$clients" -n "$n" -P "$pipeline" -q \
    -t set,get,incr,lpush,rpush,lpop >"$run/bench-$pipeline.out" 2>&1 &
  bench=$!
  pids+=("$bench")
  echo
  echo "--- redis-benchmark -c $clients -n $n -P $pipeline -t set,get,incr,lpush,rpush,lpop" \
    "while upgrading $upgrades times"
  printf '%-4s %-8s %-10s %10s %10s %10s %11s %7s %6s\n' gen schema outcome blackout total \
    catch-up checkpoint deltas fds

  # Spread the upgrades over the run (6 tests; about 85k requests/s plain, 1.2M/s with -P 16
  # on the 2-core reference machine) so that each kind of write races some of them.
  rate=$((pipeline > 1 ? 1200000 : 85000))
  # An upgrade itself takes 0.1-0.5 s here: subtract it.
  interval=$(awk -v n="$n" -v r="$rate" -v u="$upgrades" 'BEGIN { i = 6 * n / r / (u + 1) - 0.4; print (i < 0.2 ? 0.2 : i) }')

  sleep "$interval"
  for ((u = 0; u < upgrades; u++)); do
    kill -0 "$bench" 2>/dev/null || { echo "(the benchmark ended before upgrade $((u + 1)): raise --requests)"; break; }
    upgrade "${plan[$step]}"
    step=$((step + 1))
    if ((u + 1 < upgrades)); then sleep "$interval"; fi
  done

  status=0
  wait "$bench" || status=$?
  errs=$(tr '\r' '\n' <"$run/bench-$pipeline.out" | grep -ciE "error|ERR |reset|refused" || true)
  tr '\r' '\n' <"$run/bench-$pipeline.out" | grep -E "requests per second" | sed 's/^/    /'
  echo "    redis-benchmark exit status $status, error lines $errs"
  bench_errors=$((bench_errors + errs))
  ((status == 0)) || bench_failed=$((bench_failed + 1))
done

# Checks: exact INCRs, every loaded key intact, every idle connection still there.
incr_expected=$((requests + requests_pipelined))

incr=$(cli GET counter:__rand_int__)
bad_keys=$(awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) print "pre:" i }' |
  xargs -n 5000 redis-cli -p "$port" MGET |
  awk '{ v = sprintf("value-%d-", NR - 1); while (length(v) < 100) v = v "x"; if ($0 != v) bad++ }
       END { print bad + 0 }')
sleep 0.2
clients_after=$(info_field clients connected_clients)
kill "$idle_pid" 2>/dev/null || true
leftovers=0  # of this run's processes only: other Baton processes may be running
for p in "${served_by[@]}"; do
  leftovers=$((leftovers + $(find /dev/shm -maxdepth 1 -name "baton-$p-*" | wc -l)))
done


echo
echo "upgrades: $committed of $((committed + failed)) committed, serving pid $(cat "$run/pid")" \
  "(schema v$(info_field server kvd_schema_version), generation $(info_field baton baton_generation))"
echo "INCR counter: $incr, acknowledged INCRs: $incr_expected ($([[ $incr == "$incr_expected" ]] && echo exact || echo MISMATCH))"
echo "loaded keys intact: $((keys - bad_keys)) of $keys"
echo "idle connections: $clients_after connected after the upgrades, $baseline_clients before"
echo "/dev/shm leftovers: $leftovers"
client_errors=$((bench_errors + bench_failed))
echo "client-side errors: $client_errors"
((client_errors == 0 && failed == 0 && committed > 0 && bad_keys == 0 && leftovers == 0)) &&
  [[ $incr == "$incr_expected" && $clients_after == "$baseline_clients" ]]
