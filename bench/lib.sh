# Shared by the bench scripts (sourced, after `cd` to the project root).

# bench_counts PROG "NAME..." "$@": each --NAME N sets the variable NAME to N, a positive
# integer; anything else exits 2 naming the options. Defaults are set before the call.
bench_counts() {
  local prog=$1 names=" $2 " usage="" n
  shift 2
  for n in $names; do usage+=" --$n N"; done
  while (($#)); do
    if [[ $1 == --* && $names == *" ${1#--} "* ]]; then
      [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "$prog: $1 takes a positive number" >&2; exit 2; }
      printf -v "${1#--}" '%s' "$2"
      shift 2
    else
      echo "$prog: unknown option '$1'; options:$usage" >&2
      exit 2
    fi
  done
}

# bench_needs PROG "TOOL..." "BINARY..." [HINT]: exits 2 naming the first missing tool (with
# HINT, how to install it) or built binary.
bench_needs() {
  local prog=$1 hint=${4:-apt-get install redis-tools} t
  for t in $2; do
    command -v "$t" >/dev/null || { echo "$prog: needs $t ($hint)" >&2; exit 2; }
  done
  for t in $3; do
    [[ -x $t ]] || { echo "$prog: $t missing; cmake --build build first" >&2; exit 2; }
  done
}
