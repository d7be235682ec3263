// Checkpoint and restore throughput, each against memcpy into the same kind of fresh
// segment measured in the same run. bytes_per_second counts key + value bytes.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "checkpoint/segment.h"
#include "state_fixture.h"

namespace baton::bench {
namespace {

constexpr int64_t k64MiB = int64_t{64} << 20;
constexpr int64_t k1GiB = int64_t{1} << 30;

using Clock = std::chrono::steady_clock;

// memcpy of N bytes from the heap into a segment created for it: faults included, the
// same page kind the checkpoint gets.
void BM_MemcpyToFreshSegment(benchmark::State& st) {
  const auto bytes = static_cast<size_t>(st.range(0));
  std::vector<char> src(bytes, 'x');
  for (auto _ : st) {
    auto seg = ShmSegment::create(bytes, PagePolicy::kAuto, "baton-bench");
    if (!seg.ok()) {
      st.SkipWithError(seg.error().to_string().c_str());
      return;
    }
    std::memcpy((*seg)->data(), src.data(), bytes);
    benchmark::ClobberMemory();
    st.PauseTiming();
    seg->reset();
    st.ResumeTiming();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * st.range(0));
}

void BM_Checkpoint(benchmark::State& st) {
  State& s = state_of(static_cast<uint64_t>(st.range(0)));
  int64_t max_slice_us = 0, p99_slice_us = 0;
  double ours = 0, baseline = 0;
  for (auto _ : st) {
    st.PauseTiming();
    baseline += memcpy_fresh_seconds(s.payload_bytes);
    st.ResumeTiming();
    auto t0 = Clock::now();
    auto w = CheckpointWriter::begin(s.registry, {});
    if (!w.ok()) {
      st.SkipWithError(w.error().to_string().c_str());
      return;
    }
    while (true) {
      auto done = w->step();
      if (!done.ok()) {
        st.SkipWithError(done.error().to_string().c_str());
        return;
      }
      if (done.value()) break;
    }
    auto cp = w->finish();
    ours += std::chrono::duration<double>(Clock::now() - t0).count();
    st.PauseTiming();
    max_slice_us = std::max(max_slice_us, cp->stats().max_slice_us);
    p99_slice_us = std::max(p99_slice_us, cp->stats().p99_slice_us);
    s.registry.log().end_capture();
    cp = Error(ErrorKind::kAborted, "released");
    st.ResumeTiming();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * s.payload_bytes));
  st.counters["max_slice_us"] = static_cast<double>(max_slice_us);
  st.counters["p99_slice_us"] = static_cast<double>(p99_slice_us);
  st.counters["ratio_to_memcpy"] = ours > 0 ? baseline / ours : 0;
}

void BM_Restore(benchmark::State& st) {
  State& s = state_of(static_cast<uint64_t>(st.range(0)));
  auto w = CheckpointWriter::begin(s.registry, {});
  while (w.ok() && !w->step().value()) {
  }
  auto cp = w->finish();
  s.registry.log().end_capture();
  if (!cp.ok()) {
    st.SkipWithError(cp.error().to_string().c_str());
    return;
  }
  double ours = 0, baseline = 0;
  for (auto _ : st) {
    st.PauseTiming();
    baseline += memcpy_fresh_seconds(s.payload_bytes);
    auto reg = std::make_unique<Registry>();
    auto map = std::make_unique<TrackedMap>("kv", 1);
    (void)reg->add(*map);
    st.ResumeTiming();
    auto t0 = Clock::now();
    auto r = restore_checkpoint(cp->fd(), *reg);
    ours += std::chrono::duration<double>(Clock::now() - t0).count();
    if (!r.ok()) {
      st.SkipWithError(r.error().to_string().c_str());
      return;
    }
    st.PauseTiming();
    map.reset();
    reg.reset();
    st.ResumeTiming();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * s.payload_bytes));
  st.counters["ratio_to_memcpy"] = ours > 0 ? baseline / ours : 0;
}

BENCHMARK(BM_MemcpyToFreshSegment)
    ->Arg(k64MiB)
    ->Arg(k1GiB)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Checkpoint)->Arg(k64MiB)->Arg(k1GiB)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Restore)->Arg(k64MiB)->Arg(k1GiB)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace baton::bench
