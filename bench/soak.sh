#!/usr/bin/env bash
# Soak (issue 14; docs/benchmarks.md, "Soak: 1,000 upgrades"): N consecutive live upgrades
# of kvd under load, mixed with aborts and planned rollbacks, and checks that clients saw
# nothing and the serving process does not grow.
#
# Load, all the time: three redis-benchmark processes (SET, GET and INCR on a preloaded
# keyspace; redis-benchmark 7 exits at the first error or reset, so each must still run at
# the end) and bench/soak_client.py: an INCR loop on a counter it alone writes (every
# reply must be the last + 1), reads of keys nobody writes, and idle connections that must
# all answer at the end.
# Upgrades, one after the other through `batonctl upgrade` (which waits for the outcome),
# each followed by its outcome line in the event log:
#   every --abort-every'th    the successor is a wrapper that arms the fail point
#                             successor.after_restore=error for itself alone: aborted;
#   every --rollback-every'th (offset by half) committed, then `batonctl rollback` during
#                             probation: the old process serves again;
#   the others                committed, then `batonctl promote`: the old process exits.
# After each one it samples whichever process serves: fds (and how many are TCP clients),
# lines of /proc/PID/maps, threads, RSS, zombie children; the figures after upgrade
# --warmup are compared with those after the last one. Every commit starts a new process,
# so that comparison is across generations: what grows there is what an upgrade carries
# over. Then a streak (--streak N) of upgrades that alternate abort and rollback, after
# each of which the same process serves again: its figures before and after the streak
# are the per-process leak check of the incumbent, standby and resume paths.
#
# Usage: bench/soak.sh [--upgrades N] [--abort-every N] [--rollback-every N] [--keys N]
#                      [--clients N] [--idle N] [--warmup N] [--timeout S] [--bin-dir DIR]
#                      [--streak N] [--out DIR]
#   defaults: 1000 upgrades then a streak of 100, abort and rollback every 10th, 100000 keys, 20 benchmark
#   clients, 50 idle connections, warm-up 5, 30 s per outcome, bin dir build/bin (needs
#   kvd and batonctl), out: none (else samples.csv, events, logs are copied there).
# Exits non-zero on any client error, a counter mismatch, an unexpected outcome, a missed
# deadline, growth of fds or threads, or RSS past first x 1.10 + 8 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

upgrades=1000 abort_every=10 rollback_every=10 keys=100000 clients=20 idle=50 warmup=5
timeout=30 bin_dir=build/bin out="" fixed=10000 streak=100
while (($#)); do
  case "$1" in
    --upgrades | --abort-every | --rollback-every | --keys | --clients | --idle | --warmup | --timeout | --streak)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "soak: $1 takes a whole number" >&2; exit 2; }
      name=${1#--}
      declare "${name//-/_}=$2"
      shift 2
      ;;
    --bin-dir | --out)
      [[ $# -ge 2 ]] || { echo "soak: $1 needs a directory" >&2; exit 2; }
      if [[ $1 == --out ]]; then out=$2; else bin_dir=$2; fi
      shift 2
      ;;
    *)
      echo "soak: unknown option '$1'; options: --upgrades --abort-every --rollback-every" \
        "--keys --clients --idle --warmup --timeout --streak --bin-dir --out" >&2
      exit 2
      ;;
  esac
done
((upgrades >= 1 && clients >= 3 && keys >= 1 && timeout >= 1)) ||
  { echo "soak: --upgrades, --keys, --timeout >= 1; --clients >= 3" >&2; exit 2; }
((warmup < upgrades)) || warmup=$((upgrades - 1))
((warmup >= 1)) || warmup=1
bin_dir=$(cd "$bin_dir" 2>/dev/null && pwd) || { echo "soak: no directory $bin_dir" >&2; exit 2; }
KVD=$bin_dir/kvd CTL=$bin_dir/batonctl PY=/usr/bin/python3
for b in "$KVD" "$CTL" "$PY"; do [[ -x $b ]] || { echo "soak: $b missing" >&2; exit 2; }; done
for t in redis-benchmark redis-cli; do
  command -v $t >/dev/null || { echo "soak: needs $t (Debian redis-tools)" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

run=$(mktemp -d /tmp/baton-soak-XXXXXX)
load_pids=() first_kvd=""
ours() {  # is pid $1 a kvd of this run? (its command line names the run directory)
  [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$run/"
}
run_pids() {  # every live process of this run's kvd chain
  local d p
  for d in /proc/[0-9]*; do p=${d#/proc/}; ours "$p" && echo "$p"; done 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in $(run_pids); do kill "$p" 2>/dev/null || true; done
  [[ -n $first_kvd ]] && kill "$first_kvd" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -n $out ]]; then mkdir -p "$out" && cp -f "$run"/{samples.csv,events,kvd.log,client.json,maps.first,maps.mix,maps.last} "$out"/ 2>/dev/null || true; fi
  rm -rf "$run"
}
trap cleanup EXIT

ctl() { "$CTL" --socket "$run/ctl" "$@"; }
cli() { timeout 60 redis-cli -p "$port" "$@"; }
now_ms() { date +%s%3N; }
events() { if [[ -f $run/events ]]; then wc -l <"$run/events"; else echo 0; fi; }
event() { sed -n "${1}p" "$run/events"; }
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$2"; }
tail_logs() {
  echo "--- last events:"; tail -n 5 "$run/events" 2>/dev/null || true
  echo "--- kvd log tail:"; tail -n 20 "$run/kvd.log" 2>/dev/null || true
}
die() { echo "soak: FAILED at upgrade ${i:-0}: $*"; tail_logs; failure="$*"; finish 1; }

# Binaries at the path kvd is started from (the successor is whatever is there at the
# upgrade): kvd.good is a hard link to the same inode, so installing it back changes
# nothing for the maps; kvd.fail arms the fail point for the one successor it starts.
mkdir -p "$run/bin"
cp "$KVD" "$run/bin/kvd"
ln "$run/bin/kvd" "$run/bin/kvd.good"
cat >"$run/bin/kvd.fail" <<EOF
#!/bin/sh
BATON_FAILPOINTS=successor.after_restore=error exec "$run/bin/kvd.good" "\$@"
EOF
chmod +x "$run/bin/kvd.fail"
install_bin() { ln -f "$run/bin/kvd.$1" "$run/bin/kvd.tmp" && mv -f "$run/bin/kvd.tmp" "$run/bin/kvd"; }

"$run/bin/kvd" --port 0 --port-file "$run/port" --pidfile "$run/pid" --event-log "$run/events" \
  --control "$run/ctl" --probation-ms 3600000 >"$run/kvd.log" 2>&1 &
first_kvd=$!
for _ in $(seq 200); do [[ -s $run/pid && -s $run/port ]] && break; sleep 0.05; done
[[ -s $run/pid && -s $run/port ]] || { echo "soak: kvd did not start"; cat "$run/kvd.log"; exit 1; }
port=$(cat "$run/port")

# Preload: the benchmark's whole keyspace (key:%012d 100-byte values, counter:%012d), keys
# nobody writes (soak:fixed:N, checked at the end) and the own counter: the number of keys
# is constant from here on, so the state does not grow.
t0=$(now_ms)
awk -v n="$keys" -v f="$fixed" 'function cmd3(a, b, c) {
    printf "*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(a), a, length(b), b, length(c), c }
  BEGIN {
    x = sprintf("%100s", ""); gsub(/ /, "x", x)
    for (i = 0; i < n; i++) { cmd3("SET", sprintf("key:%012d", i), x); cmd3("SET", sprintf("counter:%012d", i), "0") }
    for (i = 0; i < f; i++) { v = sprintf("fixed-%d-", i); while (length(v) < 100) v = v "y"; cmd3("SET", "soak:fixed:" i, v) }
    cmd3("SET", "soak:counter", "0")
  }' | cli --pipe >"$run/load.out" 2>&1
grep -q "errors: 0, replies: $((2 * keys + fixed + 1))" "$run/load.out" || { cat "$run/load.out"; exit 1; }
dbsize=$(cli DBSIZE)
echo "soak: kvd pid $(cat "$run/pid") on 127.0.0.1:$port, $dbsize keys loaded in $(($(now_ms) - t0)) ms;" \
  "$(nproc) cores, $(uname -r); run directory $run"

# The load. Each redis-benchmark runs one test of 2e9 requests, so its connections stay
# the same all along (it reconnects only between tests).
per=$((clients / 3))
for t in set get incr; do
  c=$per
  [[ $t == incr ]] && c=$((clients - 2 * per))
  redis-benchmark -p "$port" -c "$c" -n 2000000000 -r "$keys" -d 100 -P 1 -t "$t" -q \
    >"$run/rb-$t.out" 2>&1 &
  load_pids+=($!)
done
rb_pids=("${load_pids[@]}")
"$PY" bench/soak_client.py --port "$port" --fixed "$fixed" --idle "$idle" --out "$run/client.json" \
  --ready "$run/client.ready" >"$run/client.log" 2>&1 &
client_pid=$!
load_pids+=("$client_pid")
for _ in $(seq 200); do [[ -e $run/client.ready ]] && break; sleep 0.05; done
[[ -e $run/client.ready ]] || { echo "soak: the client did not start"; cat "$run/client.log"; exit 1; }
sleep 1
load_alive() { local p; for p in "${load_pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done; }
load_alive || { echo "soak: the load did not start"; cat "$run"/rb-*.out "$run/client.log"; exit 1; }
echo "soak: load: redis-benchmark -c $per/$per/$((clients - 2 * per)) -P 1 -r $keys -d 100" \
  "SET/GET/INCR, soak_client.py (INCR loop, reads, $idle idle connections)"

# One sample of process $1: fds total, of which TCP (clients and listener), other fds by
# kind, maps lines, threads, VmRSS kB, RssAnon/RssFile/RssShmem kB, zombie children.
sample() {
  local pid=$1 fds tcp kinds maps threads rss anon file shmem zombies
  # (|| true: a process's fds and /proc's pids may vanish while they are listed)
  fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
  tcp=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 -lname 'socket:*' -printf '%l\n' 2>/dev/null |
    awk 'NR == FNR { if (FNR > 1) inode[$10] = 1; next } { gsub(/[^0-9]/, ""); if ($0 in inode) n++ } END { print n + 0 }' \
      /proc/net/tcp - || true)
  kinds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null |
    sed -e 's/^socket:.*/socket/' -e 's/^anon_inode:\[\{0,1\}\([a-z_]*\).*/\1/' -e 's/^pipe:.*/pipe/' \
      -e 's|^/dev/shm/.*|shm|' -e 's|^/memfd:.*|memfd|' | sort | uniq -c |
    awk '{ printf "%s%s=%d", sep, $2, $1; sep = " " }' || true)
  maps=$(wc -l <"/proc/$pid/maps" 2>/dev/null || echo 0)
  read -r threads rss anon file shmem < <(awk '/^Threads:/ { t = $2 } /^VmRSS:/ { r = $2 }
    /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } /^RssShmem:/ { s = $2 }
    END { print t + 0, r + 0, a + 0, f + 0, s + 0 }' "/proc/$pid/status" 2>/dev/null)
  zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$pid" '{ sub(/^.*\) /, "") } $1 == "Z" && $2 == p { n++ } END { print n + 0 }' || true)
  echo "$pid,$fds,$tcp,$maps,$threads,$rss,$anon,$file,$shmem,$zombies,$kinds"
}
# Waits (bounded) for event line $1; false if it did not come.
await_event() {
  local deadline=$(($(now_ms) + timeout * 1000))
  while (($(events) < $1)); do (($(now_ms) < deadline)) || return 1; sleep 0.02; done
}
await_gone() {  # pid $1 exited (or is a zombie)
  local deadline=$(($(now_ms) + timeout * 1000)) s
  while s=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) && [[ $s != Z ]]; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.02
  done
}

committed=0 aborted=0 rolled_back=0 failure="" served=() streak_pid="" total=$((upgrades + streak))
echo "upgrade,kind,outcome,blackout_us,rollback_blackout_us,elapsed_ms,pid,fds,tcp,maps,threads,rss_kb,anon_kb,file_kb,shmem_kb,zombies,kinds" \
  >"$run/samples.csv"
t_start=$(now_ms)

col() { cut -d, -f"$2" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 == 0) print "-"; else printf "%.3f", b / a }'; }
pct() {  # percentile $1 of the numbers in column $2 (> 0) of the samples
  awk -F, -v c="$2" 'NR > 1 && $c > 0 { print $c }' "$run/samples.csv" | sort -n |
    awk -v q="$1" '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * q + 0.999999); if (i < 1) i = 1; printf "%.0f", a[i] }'
}
# Compares the samples after upgrades $2 and $3 ($1 names the comparison); adds to grew.
# fds and threads must be equal (the clients never reconnect), maps are reported, RSS
# must stay within first x 1.10 + 8 MiB (docs/benchmarks.md, "Soak").
compare() {
  local what=$1 first last name c mx spec
  first=$(awk -F, -v w="$2" '$1 == w' "$run/samples.csv")
  last=$(awk -F, -v w="$3" '$1 == w' "$run/samples.csv")
  if [[ -z $first || -z $last ]]; then grew+=("$what: no samples after upgrades $2 and $3"); return; fi
  echo
  echo "| serving process, $what | after upgrade $2 (pid $(col "$first" 7)) | after upgrade $3 (pid $(col "$last" 7)) | last / first | min-max in between | trend per 100 upgrades |"
  echo "|---|---|---|---|---|---|"
  for spec in "fds:8" "of which TCP:9" "maps:10" "threads:11" "VmRSS kB:12" "RssAnon kB:13" "RssFile kB:14" "RssShmem kB:15" "zombie children:16"; do
    name=${spec%:*} c=${spec##*:}
    # min-max and the least-squares slope over every sample in between
    mx=$(awk -F, -v c="$c" -v a="$2" -v b="$3" 'NR > 1 && $1 >= a && $1 <= b {
        if (n == 0 || $c < lo) lo = $c; if (n == 0 || $c > hi) hi = $c
        n++; sx += $1; sy += $c; sxx += $1 * $1; sxy += $1 * $c }
      END { d = n * sxx - sx * sx; printf "%d-%d | %+.1f", lo, hi, (d > 0 ? 100 * (n * sxy - sx * sy) / d : 0) }' "$run/samples.csv")
    echo "| $name | $(col "$first" "$c") | $(col "$last" "$c") | $(ratio "$(col "$first" "$c")" "$(col "$last" "$c")") | $mx |"
  done
  echo "| fds by kind | $(col "$first" 17) | $(col "$last" 17) | | | |"
  (($(col "$last" 8) == $(col "$first" 8))) || grew+=("$what: fds $(col "$first" 8) -> $(col "$last" 8)")
  (($(col "$last" 11) == $(col "$first" 11))) || grew+=("$what: threads $(col "$first" 11) -> $(col "$last" 11)")
  (($(col "$last" 10) == $(col "$first" 10))) || echo "note ($what): maps $(col "$first" 10) -> $(col "$last" 10)"
  awk -v a="$(col "$first" 12)" -v b="$(col "$last" 12)" 'BEGIN { exit !(b <= a * 1.10 + 8192) }' ||
    grew+=("$what: RSS $(col "$first" 12) kB -> $(col "$last" 12) kB (bound: x1.10 + 8 MiB)")
  (($(col "$last" 16) == 0)) || grew+=("$what: $(col "$last" 16) zombie children")
}

# The final table; $1 is the exit status so far.
finish() {
  local status=$1 rc p
  # Stop the load: the benchmarks must still be running (they exit at their first error).
  rb_errors=0
  for p in "${rb_pids[@]}"; do kill -0 "$p" 2>/dev/null || rb_errors=$((rb_errors + 1)); done
  for p in "${rb_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kill -TERM "$client_pid" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$client_pid" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$client_pid" 2>/dev/null || true
  wait "${load_pids[@]}" 2>/dev/null || true
  local rb_lines
  rb_lines=$(cat "$run"/rb-*.out | tr '\r' '\n' | grep -ciE "error|unexpected|reset|refused" || true)
  rb_errors=$((rb_errors + rb_lines))
  local cj="{}"
  [[ -s $run/client.json ]] && cj=$(cat "$run/client.json")
  js() { "$PY" -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], "?"))' "$cj" "$1"; }
  local c_err c_acked c_unans c_start c_final c_idle c_fixed_bad c_lat server_counter dbsize_end
  c_err=$(js errors) c_acked=$(js acked_incr) c_unans=$(js unanswered_incr) c_start=$(js start_value)
  c_final=$(js final_value) c_idle=$(js idle_ok) c_fixed_bad=$(js fixed_bad) c_lat=$(js max_latency_ms)
  server_counter=$(cli GET soak:counter 2>/dev/null || echo "?")
  dbsize_end=$(cli DBSIZE 2>/dev/null || echo "?")
  local exact=no
  [[ $server_counter =~ ^[0-9]+$ && $c_acked =~ ^[0-9]+$ && $c_start =~ ^[0-9]+$ &&
    $server_counter == $((c_start + c_acked)) && $c_final == "$server_counter" ]] && exact=yes
  [[ $c_err =~ ^[0-9]+$ ]] || c_err=1  # no counts from the client is an error
  local client_errors=$((rb_errors + c_err))

  # Stop kvd, then look for anything it left: processes, segments.
  local serving
  serving=$(cat "$run/pid" 2>/dev/null || true)
  [[ -n $serving ]] && kill -TERM "$serving" 2>/dev/null || true
  [[ -n $serving ]] && { await_gone "$serving" || true; }
  wait "$first_kvd" 2>/dev/null || true
  sleep 0.2
  # A zombie counts if its parent is this script or a kvd of this run: an exited
  # generation's own successors are reparented to PID 1 (or a subreaper), which reaps
  # them in its own time (reported, not counted).
  local left_procs left_zombies=0 init_zombies=0 shm=0 st
  left_procs=$(run_pids | wc -l)
  for p in $(printf '%s\n' "${served[@]}" "$serving" | sort -u); do
    st=$(awk '{ sub(/^.*\) /, ""); print $1, $2 }' "/proc/$p/stat" 2>/dev/null || true)
    if [[ $st == "Z "* ]]; then
      if [[ ${st#Z } == "$$" ]] || ours "${st#Z }"; then left_zombies=$((left_zombies + 1)); else init_zombies=$((init_zombies + 1)); fi
    fi
    shm=$((shm + $(find /dev/shm -maxdepth 1 -name "baton-$p-*" 2>/dev/null | wc -l)))
  done

  local total_ms=$(($(now_ms) - t_start))
  local done_n=$((committed + aborted + rolled_back))
  echo
  echo "| soak: $done_n of $total upgrades ($upgrades mixed, then a streak of $streak) | |"
  echo "|---|---|"
  echo "| committed, promoted | $committed |"
  echo "| aborted (successor.after_restore=error) | $aborted |"
  echo "| committed, rolled back (batonctl rollback) | $rolled_back |"
  echo "| client errors | $client_errors (redis-benchmark: $rb_errors; soak_client: $c_err errors, $(js reconnects) reconnects) |"
  echo "| own counter (soak:counter) | $server_counter on the server, $c_acked INCRs acknowledged from $c_start, $c_unans unanswered: $([[ $exact == yes ]] && echo exact || echo MISMATCH) |"
  echo "| fixed keys, idle connections | $((fixed - ${c_fixed_bad/\?/$fixed})) of $fixed intact; $c_idle of $idle idle connections answer |"
  echo "| keys (DBSIZE) | $dbsize before, $dbsize_end after |"
  echo "| longest client request (soak_client) | $c_lat ms |"
  echo "| blackout, committed upgrades | median $(pct 0.5 4) µs, p99 $(pct 0.99 4) µs, max $(pct 1 4) µs |"
  echo "| blackout, rollbacks | median $(pct 0.5 5) µs, p99 $(pct 0.99 5) µs, max $(pct 1 5) µs |"
  echo "| total time | $((total_ms / 1000)) s ($(awk -v t="$total_ms" -v n="$done_n" 'BEGIN { if (n) printf "%.2f", t / n / 1000; else print "-" }') s per upgrade) |"
  echo "| left behind after kvd stopped | $left_procs processes, $left_zombies zombies of ours (and $init_zombies exited generations still unreaped by PID 1, their parent once orphaned), $shm /dev/shm segments |"
  local grew=() last_i
  last_i=$(tail -n 1 "$run/samples.csv" | cut -d, -f1)
  [[ $last_i =~ ^[0-9]+$ ]] || last_i=0
  if ((last_i <= upgrades)); then
    compare "across generations" "$warmup" "$last_i"
  else
    compare "across generations" "$warmup" "$upgrades"
    compare "one process, through the streak" "$upgrades" "$last_i"
  fi
  ((done_n > 0)) || grew+=("no upgrade done")
  ((client_errors == 0)) || { status=1; echo "FAIL: $client_errors client errors"; grep -h . "$run"/rb-*.out 2>/dev/null | tr '\r' '\n' | grep -iE "error|unexpected|reset|refused" | head -5; "$PY" -c 'import json,sys; [print("  ", s) for s in json.loads(sys.argv[1]).get("error_samples", [])]' "$cj" 2>/dev/null || true; }
  [[ $exact == yes ]] || { status=1; echo "FAIL: counter mismatch"; }
  [[ ${c_fixed_bad} == 0 && ${c_idle} == "$idle" ]] || { status=1; echo "FAIL: fixed keys damaged or idle connections lost"; }
  [[ $dbsize_end == "$dbsize" ]] || { status=1; echo "FAIL: DBSIZE changed"; }
  ((${#grew[@]} == 0)) || { status=1; printf 'FAIL: grew: %s\n' "${grew[@]}"; }
  ((left_procs == 0 && left_zombies == 0 && shm == 0)) || { status=1; echo "FAIL: processes or segments left behind"; }
  [[ -z $failure ]] || echo "FAIL: $failure"
  ((status == 0)) && echo "soak: PASS" || echo "soak: FAIL"
  exit "$status"  # the EXIT trap cleans up
}

for ((i = 1; i <= total; i++)); do
  kind=promote
  if ((i > upgrades)); then  # the streak: abort, rollback, abort, ...
    kind=rollback
    (((i - upgrades) % 2)) && kind=abort
  else
    ((abort_every > 0 && i % abort_every == 0)) && kind=abort
    [[ $kind == promote ]] && ((rollback_every > 0 && i % rollback_every == rollback_every / 2)) && kind=rollback
  fi
  before=$(cat "$run/pid")
  served+=("$before")
  n0=$(events)
  rollback_blackout=0
  [[ $kind == abort ]] && install_bin fail
  rc=0
  ctl --timeout "$timeout" upgrade >"$run/ctl.out" 2>&1 || rc=$?
  [[ $kind == abort ]] && install_bin good
  await_event $((n0 + 1)) || die "no outcome line within $timeout s (batonctl exit $rc: $(tr '\n' ' ' <"$run/ctl.out"))"
  line=$(event $((n0 + 1)))
  outcome=$(field outcome "$line")
  blackout=$(field blackout_us "$line")
  if [[ $kind == abort ]]; then
    [[ $outcome == aborted && $rc == 1 && $line == *successor.after_restore* ]] ||
      die "expected an abort by the fail point, got '$outcome' (batonctl exit $rc): $line"
    [[ $(cat "$run/pid") == "$before" ]] || die "the pid changed on an abort"
    aborted=$((aborted + 1))
    blackout=0  # aborted before the freeze: no blackout
  else
    [[ $outcome == committed && $rc == 0 ]] ||
      die "expected a commit, got '$outcome' (batonctl exit $rc: $(tr '\n' ' ' <"$run/ctl.out")): $line"
    after=$(cat "$run/pid")
    [[ $after != "$before" ]] || die "committed but the pidfile still names $before"
    served+=("$after")
    if [[ $kind == promote ]]; then
      ctl promote >"$run/ctl.out" 2>&1 || die "batonctl promote: $(cat "$run/ctl.out")"
      await_event $((n0 + 2)) || die "no promoted line within $timeout s"
      line=$(event $((n0 + 2)))
      [[ $(field outcome "$line") == promoted ]] || die "expected 'promoted': $line"
      await_gone "$before" || die "the standby $before did not exit within $timeout s"
      committed=$((committed + 1))
    else
      ctl rollback >"$run/ctl.out" 2>&1 || die "batonctl rollback: $(cat "$run/ctl.out")"
      await_event $((n0 + 2)) || die "no rolled-back line within $timeout s"
      line=$(event $((n0 + 2)))
      [[ $(field outcome "$line") == "rolled back" ]] || die "expected 'rolled back': $line"
      rollback_blackout=$(field blackout_us "$line")
      await_gone "$after" || die "the rolled-back successor $after did not exit within $timeout s"
      [[ $(cat "$run/pid") == "$before" ]] || die "rolled back but the pidfile names $(cat "$run/pid"), not $before"
      rolled_back=$((rolled_back + 1))
    fi
  fi
  load_alive || die "a load process died: $(cat "$run"/rb-*.out "$run/client.log" | tr '\r' '\n' | grep -iE 'error|reset' | head -3)"
  serving=$(cat "$run/pid")
  s=$(sample "$serving")
  elapsed=$(($(now_ms) - t_start))
  echo "$i,$kind,$outcome,${blackout:-0},${rollback_blackout:-0},$elapsed,$s" >>"$run/samples.csv"
  # The first and last serving processes' maps, to explain a difference (--out keeps them).
  if ((i == warmup)); then cat "/proc/$serving/maps" >"$run/maps.first" 2>/dev/null || true; fi
  if ((i == upgrades)); then cat "/proc/$serving/maps" >"$run/maps.mix" 2>/dev/null || true; fi
  if ((i == total)); then cat "/proc/$serving/maps" >"$run/maps.last" 2>/dev/null || true; fi
  ((i <= upgrades)) || [[ $serving == "$streak_pid" ]] || die "the streak's process $streak_pid no longer serves ($serving does)"
  ((i == upgrades)) && streak_pid=$serving
  if ((i % 50 == 0 || i == upgrades || i == total || i == warmup)); then
    IFS=, read -r _ fds tcp maps threads rss _ <<<"$s"
    printf 'soak: %4d/%d  committed %d aborted %d rolled back %d  %6.1f s  pid %s fds %s (tcp %s) maps %s threads %s rss %d MiB\n' \
      "$i" "$total" "$committed" "$aborted" "$rolled_back" "$(awk -v e="$elapsed" 'BEGIN { print e / 1000 }')" \
      "$serving" "$fds" "$tcp" "$maps" "$threads" $((rss / 1024))
  fi
done
finish 0
