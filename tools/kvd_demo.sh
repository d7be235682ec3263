#!/usr/bin/env bash
# kvd live upgrades under redis-benchmark load: the README's main job (tools/demo.sh).
#
# Starts kvd-v1, loads it, holds idle connections open, then runs redis-benchmark
# (plain, then pipelined -P 16) while it upgrades the server with SIGUSR2: first v1 -> v2,
# then v2 -> v2, with a rollback v2 -> v1 and back during the pipelined run. Each new
# version serves on probation (--probation-ms, default 2000) with the old one as a hot
# standby; the demo lets every window run out. Last, it installs a broken build (kvd-crashy aborts one
# second after it starts serving) under a load that redials (incr_load), and probation
# rolls it back. Prints each timeline and the client-side error count; exits non-zero on
# any client error, a lost or doubled INCR, a damaged key, a dropped idle connection, an
# upgrade that did not commit or a broken one that was not rolled back.
#
# Usage: tools/kvd_demo.sh [--keys N] [--requests N] [--requests-pipelined N] [--upgrades N]
#                          [--idle N] [--clients N] [--probation-ms N]
# --requests is redis-benchmark's -n for the plain run (default 300000), --requests-pipelined
# for the -P 16 run (default 6x --requests); --upgrades is per run. --bin-dir DIR takes kvd
# kvd-v1, kvd-crashy and incr_load from DIR (default build/bin; the tests pass their
# preset's). Expects them built (tools/demo.sh builds them).
set -euo pipefail
cd "$(dirname "$0")/.."

keys=200000 requests=300000 requests_pipelined="" upgrades=5 idle=1000 clients=50
probation_ms=2000
bin_dir=build/bin
while (($#)); do
  case "$1" in
    --bin-dir)
      [[ $# -ge 2 && -d "$2" ]] || { echo "kvd_demo: --bin-dir needs an existing directory" >&2; exit 2; }
      bin_dir=$(cd "$2" && pwd)
      shift 2
      ;;
    --keys | --requests | --requests-pipelined | --upgrades | --idle | --clients | --probation-ms)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "kvd_demo: $1 takes a whole number" >&2; exit 2; }
      name=${1#--}
      declare "${name//-/_}=$2"
      shift 2
      ;;
    *)
      echo "kvd_demo: unknown option '$1'; options: --keys --requests --requests-pipelined" \
        "--upgrades --idle --clients --probation-ms --bin-dir" >&2
      exit 2
      ;;
  esac
done
requests_pipelined=${requests_pipelined:-$((requests * 6))}
# The broken build crashes 1 s after it starts serving: the window must outlast that, with
# room for a slow machine (or a sanitizer build), or the crash comes after the standby left.
((upgrades >= 1 && clients >= 1 && requests >= 1 && probation_ms >= 1500)) ||
  { echo "kvd_demo: counts must be >= 1, --probation-ms >= 1500 (the broken build crashes at 1 s)" >&2; exit 2; }

V1="$bin_dir/kvd-v1" V2="$bin_dir/kvd" CRASHY="$bin_dir/kvd-crashy" LOAD="$bin_dir/incr_load"

for b in "$V1" "$V2" "$CRASHY" "$LOAD"; do [[ -x "$b" ]] || { echo "kvd_demo: $b missing; run tools/demo.sh" >&2; exit 2; }; done
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
  --control "$run/ctl" --probation-ms "$probation_ms" >"$run/kvd.log" 2>&1 &
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

step=0 committed=0 failed=0 rolled_back=0
served_by=()  # every incumbent: their checkpoint segments are named baton-<pid>-*
events() { if [[ -f "$run/events" ]]; then wc -l <"$run/events"; else echo 0; fi; }
# Waits for event line number $1 (up to $2 seconds); false if it did not come.
await_event() {
  for _ in $(seq $(($2 * 20))); do
    (($(events) >= $1)) && return 0
    sleep 0.05
  done
  return 1
}
row() {  # one event line as a table row; $2 is the schema change
  local line=$1
  num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$line"; }
  str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$line"; }
  printf '%-4s %-8s %-11s %8.3fms %8.1fms %8.1fms %8.1fMiB %7s %6s %s\n' "$(num generation)" \
    "$2" "$(str outcome)" "$(div "$(num blackout_us)" 1000)" \
    "$(div "$(num total_us)" 1000)" "$(div "$(num catchup_us)" 1000)" \
    "$(div "$(num checkpoint_bytes)" 1048576)" "$(num deltas)" "$(num fds)" "$(str reason)"
}
outcome_of() { sed -n 's/.*"outcome":"\([^"]*\)".*/\1/p' <<<"$1"; }
# Upgrades to binary $1 and waits for the end of its probation; $2 is the probation outcome
# expected ("promoted": the window ran out; "rolled back": a broken build).
upgrade() {
  local bin=$1 expect=${2:-promoted} before events_before line from to
  before=$(cat "$run/pid")
  served_by+=("$before")
  events_before=$(events)
  from=$(info_field server kvd_schema_version)
  install_binary "$bin"
  kill -USR2 "$before"
  if ! await_event $((events_before + 1)) 60; then
    echo "upgrade did not finish within 60 s"; failed=$((failed + 1)); return
  fi
  line=$(sed -n "$((events_before + 1))p" "$run/events")
  to=$(info_field server kvd_schema_version)
  row "$line" "v$from->v$to"
  if [[ $(outcome_of "$line") != committed || $(cat "$run/pid") == "$before" ]]; then
    failed=$((failed + 1)); return
  fi
  committed=$((committed + 1))
  # Probation: the old process stands by until the window ends, or takes over.
  if ! await_event $((events_before + 2)) $((probation_ms / 1000 + 30)); then
    echo "probation did not end within $((probation_ms / 1000 + 30)) s"; failed=$((failed + 1)); return
  fi
  line=$(sed -n "$((events_before + 2))p" "$run/events")
  row "$line" "probation"
  if [[ $(outcome_of "$line") != "$expect" ]]; then
    echo "    expected the probation to end '$expect'"; failed=$((failed + 1))
  elif [[ $expect == "rolled back" ]]; then
    rolled_back=$((rolled_back + 1))
  fi
  # Let the standby (or the crashed successor) go before the next upgrade.
  for _ in $(seq 100); do [[ $(info_field baton baton_phase) == serving ]] && break; sleep 0.05; done
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
  printf '%-4s %-8s %-11s %10s %10s %10s %11s %7s %6s\n' gen schema outcome blackout total \
    catch-up checkpoint deltas fds

  # Spread the upgrades over the run (6 tests; about 85k requests/s plain, 1.2M/s with -P 16
  # on the 2-core reference machine) so that each kind of write races some of them.
  rate=$((pipeline > 1 ? 1200000 : 85000))
  # An upgrade itself takes 0.1-0.5 s here, and its probation window: subtract both.
  interval=$(awk -v n="$n" -v r="$rate" -v u="$upgrades" -v p="$probation_ms" \
    'BEGIN { i = 6 * n / r / (u + 1) - 0.4 - p / 1000; print (i < 0.2 ? 0.2 : i) }')

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

# Idle connections are checked here: a crash rollback (below) keeps the listeners but
# closes established connections (docs/protocol.md, "Probation").
sleep 0.2
clients_after=$(info_field clients connected_clients)

# A broken build under load: kvd-crashy aborts a second after it starts serving, inside its
# probation window; the standby takes over with every acknowledged write. redis-benchmark
# gives up on the first reset, so this load is incr_load, which redials and checks its
# count (acknowledged <= final <= acknowledged + unanswered) itself.
echo
echo "--- a broken build: kvd-crashy aborts 1 s after it starts serving, under incr_load"
printf '%-4s %-8s %-11s %10s %10s %10s %11s %7s %6s\n' gen schema outcome blackout total \
  catch-up checkpoint deltas fds
load_seconds=$(awk -v p="$probation_ms" 'BEGIN { print 2 + p / 1000 }')
"$LOAD" --port "$port" --connections 8 --seconds "$load_seconds" --key counter:broken \
  >"$run/incr_load.out" 2>&1 &
load=$!
pids+=("$load")
sleep 0.5
upgrade "$CRASHY" "rolled back"
load_status=0
wait "$load" || load_status=$?
sed 's/^/    /' "$run/incr_load.out"
load_refused=$(sed -n 's/.*refused \([0-9]*\).*/\1/p' "$run/incr_load.out")
install_binary "$V2"  # the broken build never serves again
((load_status == 0)) || bench_failed=$((bench_failed + 1))
[[ ${load_refused:-1} == 0 ]] || bench_failed=$((bench_failed + 1))

# Checks: exact INCRs, every loaded key intact, every idle connection still there.
incr_expected=$((requests + requests_pipelined))

incr=$(cli GET counter:__rand_int__)
bad_keys=$(awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) print "pre:" i }' |
  xargs -n 5000 redis-cli -p "$port" MGET |
  awk '{ v = sprintf("value-%d-", NR - 1); while (length(v) < 100) v = v "x"; if ($0 != v) bad++ }
       END { print bad + 0 }')
kill "$idle_pid" 2>/dev/null || true
leftovers=0  # of this run's processes only: other Baton processes may be running
for p in "${served_by[@]}"; do
  leftovers=$((leftovers + $(find /dev/shm -maxdepth 1 -name "baton-$p-*" | wc -l)))
done


echo
echo "broken builds rolled back by probation: $rolled_back of 1 (no acknowledged write lost: $([[ $load_status == 0 ]] && echo yes || echo NO))"
echo "upgrades: $committed of $((committed + failed)) committed, serving pid $(cat "$run/pid")" \
  "(schema v$(info_field server kvd_schema_version), generation $(info_field baton baton_generation))"
echo "INCR counter: $incr, acknowledged INCRs: $incr_expected ($([[ $incr == "$incr_expected" ]] && echo exact || echo MISMATCH))"
echo "loaded keys intact: $((keys - bad_keys)) of $keys"
echo "idle connections: $clients_after connected after the upgrades, $baseline_clients before" \
  "(before the broken build; its crash closed them, as documented)"
echo "/dev/shm leftovers: $leftovers"
client_errors=$((bench_errors + bench_failed))
echo "client-side errors: $client_errors"
((client_errors == 0 && failed == 0 && committed > 0 && bad_keys == 0 && leftovers == 0 &&
  rolled_back == 1)) &&
  [[ $incr == "$incr_expected" && $clients_after == "$baseline_clients" ]]
