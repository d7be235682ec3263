// The cost of recording a delta: idle (the one branch every mutation pays) and active
// (an upgrade is capturing), plus a whole TrackedMap::set either way.
#include <benchmark/benchmark.h>

#include <string>

#include "baton/delta_log.h"
#include "baton/tracked_map.h"

namespace baton::bench {
namespace {

const std::string kValue(100, 'v');

// Exactly what a section does per mutation: test the flag, append only when capturing.
inline void record(DeltaLog& log, std::string_view key) {
  if (BATON_UNLIKELY(log.capturing())) log.append(0, TrackedMap::kOpSet, key, {kValue});
}

void BM_RecordDelta_idle(benchmark::State& st) {
  DeltaLog log;
  for (auto _ : st) {
    benchmark::ClobberMemory();  // reload the flag every time, as real code would
    record(log, "key:000000000042");
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

void BM_RecordDelta_active(benchmark::State& st) {
  DeltaLog log;
  log.begin_capture();
  uint64_t n = 0;
  for (auto _ : st) {
    benchmark::ClobberMemory();
    record(log, "key:000000000042");
    if (++n % 8192 == 0) benchmark::DoNotOptimize(log.take_frame());
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * (kValue.size() + 16)));
}

void BM_TrackedMapSet(benchmark::State& st, bool capturing) {
  Registry reg;
  TrackedMap m("kv", 1);
  (void)reg.add(m);
  for (int i = 0; i < 100000; ++i) m.set("key:" + std::to_string(i), kValue);
  if (capturing) reg.log().begin_capture();
  uint64_t n = 0;
  std::string key = "key:00000";
  for (auto _ : st) {
    key[4 + n % 5] = static_cast<char>('0' + n % 10);
    m.set(key, kValue);
    if (++n % 8192 == 0 && capturing) benchmark::DoNotOptimize(reg.log().take_frame());
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

BENCHMARK(BM_RecordDelta_idle)->Name("BM_RecordDelta/idle");
BENCHMARK(BM_RecordDelta_active)->Name("BM_RecordDelta/active");
BENCHMARK_CAPTURE(BM_TrackedMapSet, idle, false);
BENCHMARK_CAPTURE(BM_TrackedMapSet, capturing, true);

}  // namespace
}  // namespace baton::bench
