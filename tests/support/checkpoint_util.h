// Helpers shared by checkpoint tests: run a whole checkpoint, restore into a fresh map,
// and a random mutation driver over every TrackedMap operation.
#pragma once

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "baton/checkpoint.h"
#include "baton/tracked_map.h"

namespace baton::testing {

/// One registry holding one TrackedMap named "kv": the setup most tests need.
struct KvNode {
  explicit KvNode(uint32_t schema_version = 1) : map("kv", schema_version) {
    EXPECT_TRUE(reg.add(map).ok());
  }
  Registry reg;
  TrackedMap map;
};

/// Runs a checkpoint to completion with no interleaved work.
inline Checkpoint checkpoint_now(Registry& reg, size_t slice_bytes = 1 << 20) {
  CheckpointOptions opt;
  opt.slice_bytes = slice_bytes;
  auto w = CheckpointWriter::begin(reg, opt);
  EXPECT_TRUE(w.ok()) << w.error().to_string();
  for (int i = 0; i < 1'000'000; ++i) {
    auto done = w->step();
    EXPECT_TRUE(done.ok()) << done.error().to_string();
    if (!done.ok() || done.value()) break;
  }
  auto cp = w->finish();
  EXPECT_TRUE(cp.ok()) << cp.error().to_string();
  return std::move(cp).value();
}

/// Applies one random mutation to `m`, drawn from every operation kind.
class RandomOps {
 public:
  explicit RandomOps(uint64_t seed, int keyspace = 64) : rng_(seed), keyspace_(keyspace) {}

  void one(TrackedMap& m) {
    static constexpr std::string_view kMembers[] = {"m0", "m1", "m2", "m3", "m4"};
    static constexpr std::string_view kFields[] = {"f0", "f1", "f2"};
    const std::string k = key();
    const std::string v = "v" + std::to_string(rng_() % 1000);
    const std::string_view two[] = {v, kMembers[rng_() % 5]};
    const std::string n = std::to_string(rng_() % 8);
    const End end = rng_() % 2 ? End::kLeft : End::kRight;
    switch (rng_() % 20) {
      case 0:
      case 1:
        m.set(k, v, rng_() % 3 == 0 ? int64_t(1700000000000 + rng_() % 1000) : 0);
        break;
      case 2:
      case 3:
        (void)m.incr_by("ctr" + n, int64_t(rng_() % 5) - 1);
        break;
      case 4:
      case 5:
        (void)m.push("list" + n, end, std::span(two, 1 + rng_() % 2));
        break;
      case 6:
        (void)m.pop("list" + n, end);
        break;
      case 7:
        (void)m.sadd("set" + n, std::span(two, 1 + rng_() % 2));
        break;
      case 8:
        (void)m.spop("set" + n, rng_());
        break;
      case 9:
        (void)m.srem("set" + n, std::span(&kMembers[rng_() % 5], 1));
        break;
      case 10: {
        const std::string_view fv[] = {kFields[rng_() % 3], v};
        (void)m.hset("hash" + n, fv);
        break;
      }
      case 11:
        (void)m.hdel("hash" + n, std::span(&kFields[rng_() % 3], 1));
        break;
      case 12:
        (void)m.zadd("z" + n, double(rng_() % 100) / 4, kMembers[rng_() % 5]);
        break;
      case 13:
        (void)m.zpopmin("z" + n);
        break;
      case 14:
        m.erase(k);
        break;
      case 15:
        m.expire_at(k, rng_() % 2 ? 0 : int64_t(1700000000000 + rng_() % 1000));
        break;
      case 16:
        m.erase("ctr" + n);
        break;
      case 17:
        if (rng_() % 40 == 0) m.clear();
        break;
      default:
        m.set(k, v);
        break;
    }
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::string key() { return "k" + std::to_string(rng_() % keyspace_); }
  std::mt19937_64 rng_;
  int keyspace_;
};

}  // namespace baton::testing
