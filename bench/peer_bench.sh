#!/usr/bin/env bash
# The side-by-side benchmark, one command: kvd upgraded live by Baton against Redis 7
# restarted (SHUTDOWN SAVE, reload the RDB) and memcached 1.6 warm-restarted (-e, SIGUSR1),
# on the same data (1 MiB to 4 GiB of 100-byte values; a server whose peak would not fit in
# memory is skipped, saying so) and the same load, plus a case with 1,000 idle connections.
# Writes report.md, phases.md and targets.md (issue 12's targets, met or missed). Installs
# the Debian packages it needs (redis-server, memcached, gnuplot-nox), builds, runs
# build/bin/peer_upgrade, and draws PNGs with gnuplot:
#   requests.png          successful requests per 10 ms across the upgrade, at 1.2 GB (or
#                         the largest state that all three servers ran, if smaller)
#   requests-largest.png  the same at the largest state all three ran, if larger (4 GiB)
#   downtime.png          longest gap without a successful request against state size
#
# Usage: bench/peer_bench.sh [--quick] [--out DIR] [peer_upgrade options...]
#   --quick: 1 and 16 MiB only (under 2 minutes); default out: build/peer-bench
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
BATON_PACKAGES+=(redis-server memcached gnuplot-nox)
baton_install_deps
# (Where systemd runs, Debian also starts its own redis and memcached on their default
# ports; this benchmark starts its own instances on free loopback ports.)


out=build/peer-bench
args=()
while (($#)); do
  case "$1" in
    --out) [[ $# -ge 2 ]] || { echo "peer_bench: --out needs a directory" >&2; exit 2; }; out=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cmake --preset default >/dev/null
cmake --build build -j"$(nproc)" --target kvd peer_upgrade
mkdir -p "$out"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
  "$(uname -r); redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')," \
  "memcached $(memcached -V | cut -d' ' -f2)" | tee "$out/machine.txt"
build/bin/peer_upgrade --out "$out" "${args[@]}"

# Plots, from the harness's own CSVs.
# requests.png is drawn at 1.2 GB (1144 MiB, issue 12's size) when every server ran it,
# requests-largest.png at the largest state every server ran (kvd skips a size it would
# not fit in memory, saying so).
all_three=$(awk -F, 'NR > 1 && $3 == 0 { n[$2]++ } END { for (s in n) if (n[s] == 3) print s }' \
  "$out/results.csv" | sort -n)
largest=$(tail -1 <<<"$all_three")
[[ -n "$largest" ]] || largest=$(awk -F, 'NR > 1 && $3 == 0 { print $2 }' "$out/results.csv" | sort -n | tail -1)
main=$largest
grep -qx 1200000000 <<<"$all_three" && main=1200000000
requests_plot() {  # requests_plot FILE MIB
  gnuplot <<GNUPLOT
set terminal pngcairo size 1100,500 font ",10"
set datafile separator ","
set output "$1"
set title "Successful requests per 10 ms across the upgrade ($2 MiB of state, 50 connections)"
set xlabel "ms since the upgrade was triggered"
set ylabel "successful requests per 10 ms"
set key outside right
plot for [s in "kvd redis memcached"] "$out/run-".s."-$2m/timeline.csv" every ::1 using 1:2 \
     with lines title s
GNUPLOT
}
requests_plot "$out/requests.png" $((main >> 20))
plots="$out/requests.png"
if [[ "$largest" != "$main" ]]; then
  requests_plot "$out/requests-largest.png" $((largest >> 20))
  plots+=" $out/requests-largest.png"
fi
gnuplot <<GNUPLOT
set terminal pngcairo size 1100,500 font ",10"
set datafile separator ","
set output "$out/downtime.png"
set title "Longest gap without a successful request, by state size (50 connections)"
set xlabel "state (MiB of 100-byte values)"
set ylabel "ms (log scale)"
set logscale xy
plot for [s in "kvd redis memcached"] "< awk -F, -v s=".s." 'NR > 1 && \$1 == s && \$3 == 0 { print \$2 / 1048576 \",\" (\$4 > 0.1 ? \$4 : 0.1) }' $out/results.csv" \
     using 1:2 with linespoints title s." (clients' longest gap)", \
     "< awk -F, 'NR > 1 && \$1 == \"kvd\" && \$3 == 0 { print \$2 / 1048576 \",\" \$5 }' $out/results.csv" \
     using 1:2 with linespoints dashtype 2 title "kvd blackout (Baton's timeline)"
GNUPLOT
echo "plots: $plots $out/downtime.png"
