// What one request pays when a TrackedMap must grow: the first new key after a restore, a
// new key that takes a growing map past a power of two, and one that doubles the index.
// The worst new key is set against the median of the same keys (the baseline, same map,
// same run). And what every request pays for that: lookups and a fill. docs/design.md,
// "Growing without a stall"; the figures are in docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

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

// Times new keys one by one: the first, which may find the map full, and `following`
// more, over which a doubling index finishes moving its keys. Reports the first and the
// worst, each against the median of all of them (the baseline, same map, same run); the
// benchmark's time is the worst.
void time_new_keys(benchmark::State& st, TrackedMap& m, uint64_t following) {
  std::vector<double> us;
  us.reserve(following + 1);
  for (uint64_t i = 0; i <= following; ++i) us.push_back(set_us(m, "new:" + std::to_string(i)));
  const double first = us.front();
  const auto worst_at = std::max_element(us.begin(), us.end());
  const double worst = *worst_at;
  st.counters["worst_is_key"] = static_cast<double>(worst_at - us.begin());
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  const double median = us[us.size() / 2];
  st.SetIterationTime(worst / 1e6);
  st.counters["first_new_key_us"] = first;
  st.counters["worst_new_key_us"] = worst;
  st.counters["median_new_key_us"] = median;
  st.counters["worst_over_median"] = median > 0 ? worst / median : 0;
}

// A section restored from a checkpoint of `keys` records, then new keys.
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
    time_new_keys(st, m, 10'000);
  }
}

// A map filled by set() to exactly `keys` (a power of two: a vector of slots would be full
// and move every slot at the next key), then new keys.
void BM_NewKeyAtAPowerOfTwo(benchmark::State& st) {
  const auto keys = static_cast<uint64_t>(st.range(0));
  const std::string value(100, 'v');
  for (auto _ : st) {
    TrackedMap m("kv", 1);
    for (uint64_t i = 0; i < keys; ++i) m.set(key_of(i), value);
    time_new_keys(st, m, 10'000);
  }
}

// A map filled by set() to the last key its index of `buckets` buckets takes (a load of
// 0.7), then new keys: the first starts doubling the index, and the following ones move
// its keys a few at a time.
void BM_NewKeyAtIndexGrowth(benchmark::State& st) {
  const auto keys = static_cast<uint64_t>(st.range(0)) * 7 / 10;
  const std::string value(100, 'v');
  for (auto _ : st) {
    TrackedMap m("kv", 1);
    for (uint64_t i = 0; i < keys; ++i) m.set(key_of(i), value);
    time_new_keys(st, m, keys / 8);  // the doubling ends within keys / 64 + 6,144 steps
  }
}

// The price of growing without a stall, paid by every request: a lookup goes through a
// block pointer, and inserts during a doubling move keys. Keys are looked up in an order
// unrelated to their insertion, as a cache's clients would.
struct LookupMap {
  explicit LookupMap(uint64_t n) : map("kv", 1) {
    const std::string value(100, 'v');
    for (uint64_t i = 0; i < n; ++i) map.set(key_of(i), value);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t k = (i * 2'654'435'761ULL) % n;  // a permutation: n is a power of two
      hits.push_back(key_of(k));
      misses.push_back("miss:" + std::to_string(k));
    }
  }
  TrackedMap map;
  std::vector<std::string> hits, misses;
};

void BM_Lookup(benchmark::State& st) {
  static std::unique_ptr<LookupMap> shared;  // built once per size, for hits and misses
  static uint64_t shared_n = 0;
  const auto n = static_cast<uint64_t>(st.range(0));
  if (shared_n != n) {
    shared.reset();
    shared = std::make_unique<LookupMap>(n);
    shared_n = n;
  }
  const auto& keys = st.range(1) != 0 ? shared->hits : shared->misses;
  size_t i = 0;
  for (auto _ : st) {
    benchmark::DoNotOptimize(shared->map.find(keys[i]));
    if (++i == keys.size()) i = 0;
  }
  st.SetItemsProcessed(st.iterations());
}

// Fills a map with `keys` new keys, through every slot block and index doubling.
void BM_Fill(benchmark::State& st) {
  const auto n = static_cast<uint64_t>(st.range(0));
  std::vector<std::string> keys;
  keys.reserve(n);
  for (uint64_t i = 0; i < n; ++i) keys.push_back(key_of((i * 2'654'435'761ULL) % n));
  const std::string value(100, 'v');
  for (auto _ : st) {
    st.PauseTiming();
    auto m = std::make_unique<TrackedMap>("kv", 1);
    st.ResumeTiming();
    for (const auto& k : keys) m->set(k, value);
    st.PauseTiming();
    m.reset();  // its teardown is not an insert's cost
    st.ResumeTiming();
  }
  st.SetItemsProcessed(st.iterations() * static_cast<int64_t>(n));
}

// One map each, timed by its worst new key.
void one_map(benchmark::internal::Benchmark* b) {
  b->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_NewKeyAfterRestore)->Arg(1 << 20)->Arg(12'000'000)->Apply(one_map);
BENCHMARK(BM_NewKeyAtAPowerOfTwo)->Arg(1 << 20)->Arg(1 << 23)->Apply(one_map);
BENCHMARK(BM_NewKeyAtIndexGrowth)->Arg(1 << 20)->Arg(1 << 24)->Apply(one_map);

BENCHMARK(BM_Lookup)
    ->ArgsProduct({{1 << 22}, {1, 0}})
    ->ArgNames({"keys", "hit"})
    ->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Fill)->Arg(1 << 22)->Iterations(2)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace baton::bench
