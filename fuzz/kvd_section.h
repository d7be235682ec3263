// kvd's section as the fuzz targets restore into and replay into: registered as kvd
// (samples/kvd/main.cc) or kvd-v1 registers it, and a state holding every entry type.
#pragma once

#include <string_view>

#include "baton/section.h"
#include "baton/tracked_map.h"
#include "fuzz_input.h"
#include "rollback.h"

namespace baton::fuzz {

/// One TrackedMap "kvd" at schema 2 that migrates from 1, or kvd-v1's at schema 1 that
/// migrates from 2 (the rollback rule), in a registry of its own.
struct KvdNode {
  explicit KvdNode(bool v1) : map("kvd", v1 ? 1 : 2) {
    rollback.now_ms = 1'700'000'000'000;  // a fixed clock: the same input, the same run
    if (v1) {
      (void)map.migrations().add(2, 1,
                                 [this](std::string_view k, Entry& e) { rollback.migrate(k, e); });
    } else {
      (void)map.migrations().add(1, 2, [](std::string_view, Entry&) {});
    }
    BATON_FUZZ_CHECK(reg.add(map).ok(), "registering kvd's section");
  }
  Registry reg;
  TrackedMap map;
  kvd::Rollback rollback;
};

/// An entry of every type, so that replayed deltas meet each kind of existing value.
inline void fill_every_type(TrackedMap& m) {
  m.set("s", "value");
  m.set("n", "41", 1'800'000'000'000);
  const std::string_view two[] = {"a", "b"};
  (void)m.push("l", End::kRight, two);
  (void)m.sadd("set", two);
  (void)m.hset("h", two);
  (void)m.zadd("z", 1.5, "m");
}

}  // namespace baton::fuzz
