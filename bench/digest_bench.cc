// The state digest at the cut (docs/protocol.md): seconds per GiB of state, hashed in the
// slices a serving process takes, against memcpy of the same bytes into a fresh segment
// measured in the same iteration. bytes_per_second counts key + value bytes.
#include <benchmark/benchmark.h>

#include <chrono>
#include "state_fixture.h"

namespace baton::bench {
namespace {

constexpr int64_t k64MiB = int64_t{64} << 20;
constexpr int64_t k1GiB = int64_t{1} << 30;
constexpr size_t kSliceBytes = size_t{256} << 10;  // ShadowPolicy::digest_slice_bytes

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// digest_begin, then digest_step(256 KiB) until done, as a successor on probation does
// between its turns; the result is checked against the one-pass reference.
void BM_DigestAtTheCut(benchmark::State& st) {
  State& s = state_of(static_cast<uint64_t>(st.range(0)));
  const DigestKey key{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  const StateDigest reference = s.map.full_digest(key);
  double ours = 0, baseline = 0, slices = 0;
  for (auto _ : st) {
    st.PauseTiming();
    baseline += memcpy_fresh_seconds(s.payload_bytes);
    st.ResumeTiming();
    auto t0 = Clock::now();
    auto begun = s.map.digest_begin(key, s.map.schema_version());
    if (!begun.ok() || !*begun) {
      st.SkipWithError("digest_begin failed");
      return;
    }
    while (!s.map.digest_step(kSliceBytes)) ++slices;
    const StateDigest d = s.map.digest_result();
    s.map.digest_end();
    ours += seconds_since(t0);
    if (d.sum != reference.sum || d.entries != reference.entries) {
      st.SkipWithError("the sliced digest differs from the one-pass reference");
      return;
    }
  }
  const auto n = static_cast<double>(st.iterations());
  const double gib = static_cast<double>(s.payload_bytes) / double(1 << 30);
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * s.payload_bytes));
  st.counters["s_per_GiB"] = ours / n / gib;
  st.counters["slices"] = slices / n + 1;
  st.counters["ratio_to_memcpy"] = ours > 0 ? baseline / ours : 0;
}

BENCHMARK(BM_DigestAtTheCut)->Arg(k64MiB)->Arg(k1GiB)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace baton::bench
