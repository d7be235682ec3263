// Builds benchmark state once per size.
#include "state_fixture.h"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/segment.h"

namespace baton::bench {

State& state_of(uint64_t bytes) {
  static std::unique_ptr<State> cached;
  static uint64_t cached_bytes = 0;
  if (cached && cached_bytes == bytes) return *cached;
  cached.reset();
  cached = std::make_unique<State>();
  (void)cached->registry.add(cached->map);
  std::string value(kValueBytes, 'v');
  char key[32];
  for (uint64_t i = 0; i < bytes / kValueBytes; ++i) {
    std::memcpy(value.data(), &i, sizeof i);
    int n = std::snprintf(key, sizeof key, "key:%012llu", static_cast<unsigned long long>(i));
    cached->map.set(std::string_view(key, static_cast<size_t>(n)), value);
    cached->payload_bytes += static_cast<uint64_t>(n) + kValueBytes;
  }
  cached_bytes = bytes;
  return *cached;
}

double memcpy_fresh_seconds(size_t bytes) {
  static std::vector<char> src;
  if (src.size() < bytes) src.assign(bytes, 'x');
  auto seg = ShmSegment::create(bytes, PagePolicy::kAuto, "baton-bench");
  if (!seg.ok()) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::memcpy((*seg)->data(), src.data(), bytes);
  benchmark::ClobberMemory();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace baton::bench
