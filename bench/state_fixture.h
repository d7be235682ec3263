// Shared benchmark state: a TrackedMap of N bytes of 100-byte values, built once per size.
#pragma once

#include <cstdint>
#include <memory>

#include "baton/checkpoint.h"
#include "baton/tracked_map.h"

namespace baton::bench {

inline constexpr size_t kValueBytes = 100;

/// A registry holding one "kv" TrackedMap with `bytes` of 100-byte values.
struct State {
  Registry registry;
  TrackedMap map{"kv", 1};
  uint64_t payload_bytes = 0;  // keys + values
};

/// Builds (or returns the cached) state of `bytes` value bytes. Only one size is cached
/// at a time, to bound memory.
State& state_of(uint64_t bytes);

/// Seconds to memcpy `bytes` from the heap into a segment created for it, faults
/// included: the yardstick the checkpoint, restore and digest benchmarks divide by. Taken
/// inside each iteration, back to back with what it measures, so the ratio holds even
/// when the machine's page-fault cost drifts between runs (on a VM with free-page
/// reporting it does, by 3x or more).
double memcpy_fresh_seconds(size_t bytes);

}  // namespace baton::bench
