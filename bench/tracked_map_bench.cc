// What one request pays when a TrackedMap's slot array is full: the first new key after
// a restore, and a new key that takes a growing map past a power of two. Each is timed
// against the next new key in the same map (the baseline, same run): docs/design.md,
// "Checkpoints" ("The slot array is populated ahead of inserts").
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "baton/tracked_map.h"

namespace baton::bench {
namespace {

std::string key_of(uint64_t i) {
  char k[32];
  std::snprintf(k, sizeof k, "key:%010llu", static_cast<unsigned long long>(i));
  return k;
}

double set_us(TrackedMap& m, const std::string& key) {
  const auto t0 = std::chrono::steady_clock::now();
  m.set(key, "x");
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

// Times the next two new keys: the one that may find the array full, then the baseline.
void time_new_keys(benchmark::State& st, TrackedMap& m) {
  const double first = set_us(m, "new:1");
  const double next = set_us(m, "new:2");
  st.SetIterationTime(first / 1e6);
  st.counters["first_new_key_us"] = first;
  st.counters["next_new_key_us"] = next;
  st.counters["first_over_next"] = next > 0 ? first / next : 0;
}

// A section restored from a checkpoint of `keys` records, then two new keys.
void BM_NewKeyAfterRestore(benchmark::State& st) {
  const auto keys = static_cast<uint64_t>(st.range(0));
  const std::string value(100, 'v');
  for (auto _ : st) {
    TrackedMap m("kv", 1);
    if (!m.restore_begin(keys, nullptr).ok()) return st.SkipWithError("restore_begin failed");
    for (uint64_t i = 0; i < keys; ++i) {
      Entry e;
      e.value = CompactString(value);
      if (!m.restore_record(key_of(i), std::move(e)).ok()) {
        return st.SkipWithError("restore_record failed");
      }
    }
    if (!m.restore_end().ok()) return st.SkipWithError("restore_end failed");
    time_new_keys(st, m);
  }
}

// A map filled by set() to exactly `keys` (a power of two, so its array is full), then
// two new keys: the first moves every slot. Not fixed; the same in every process.
void BM_NewKeyAtAPowerOfTwo(benchmark::State& st) {
  const auto keys = static_cast<uint64_t>(st.range(0));
  const std::string value(100, 'v');
  for (auto _ : st) {
    TrackedMap m("kv", 1);
    for (uint64_t i = 0; i < keys; ++i) m.set(key_of(i), value);
    time_new_keys(st, m);
  }
}

BENCHMARK(BM_NewKeyAfterRestore)
    ->Arg(1 << 20)
    ->Arg(12'000'000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_NewKeyAtAPowerOfTwo)
    ->Arg(1 << 20)
    ->Arg(1 << 23)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace baton::bench
