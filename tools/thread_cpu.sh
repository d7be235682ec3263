#!/usr/bin/env bash
# Per-thread CPU of a process and its children, once a second: where an upgrade's CPU goes
# (the incumbent's loop, its prefault helper, the successor's restore threads). It found
# the successor spinning on the delta stream and the prefault helper's cost (docs/design.md,
# "Pacing").
#
# Usage: tools/thread_cpu.sh PID [SECONDS]   (default 60; stops early when PID exits)
# Prints one line a second: "t=N pid/tid(comm):percent ..." for every thread that used CPU
# in that second, the process first, then each child's threads.
set -euo pipefail

usage() {
  echo "usage: tools/thread_cpu.sh PID [SECONDS]  (SECONDS 1..3600, default 60)" >&2
  exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
pid=$1
seconds=${2:-60}
[[ $pid =~ ^[0-9]+$ ]] || { echo "thread_cpu: PID must be a number, got '$pid'" >&2; usage; }
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds >= 1 && seconds <= 3600)) ||
  { echo "thread_cpu: SECONDS must be 1..3600, got '$seconds'" >&2; usage; }
[[ -d /proc/$pid ]] || { echo "thread_cpu: no process $pid" >&2; exit 1; }
hz=$(getconf CLK_TCK)

# Prints "pid/tid(comm) ticks" for every thread of $1 and of its children.
snapshot() {
  local procs=("$1") kids=() p t stat fields
  # The file has no final newline, so read returns non-zero having read it all.
  read -r -a kids < "/proc/$1/task/$1/children" 2>/dev/null || true
  procs+=("${kids[@]}")
  for p in "${procs[@]}"; do
    for t in /proc/"$p"/task/*; do
      stat=$(cat "$t/stat" 2>/dev/null) || continue
      # Fields after the ")" that closes comm: utime and stime are the 12th and 13th.
      read -r -a fields <<< "${stat##*) }"
      echo "$p/${t##*/}($(cat "$t/comm" 2>/dev/null)) $((fields[11] + fields[12]))"
    done
  done
}

declare -A before
while read -r name ticks; do before[$name]=$ticks; done < <(snapshot "$pid")
for ((i = 1; i <= seconds; i++)); do
  sleep 1
  [[ -d /proc/$pid ]] || { echo "thread_cpu: process $pid exited"; exit 0; }
  line="t=$i"
  declare -A now=()
  while read -r name ticks; do
    now[$name]=$ticks
    used=$((ticks - ${before[$name]:-0}))  # a thread born this second counts from 0
    ((used > 0)) && line+=" $name:$((100 * used / hz))%"
  done < <(snapshot "$pid")
  echo "$line"
  before=()
  for name in "${!now[@]}"; do before[$name]=${now[$name]}; done
  unset now
done
