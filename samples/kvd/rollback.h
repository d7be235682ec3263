// What kvd-v1 does to the v2 state it inherits when kvd is rolled back (docs/design.md,
// "kvd: schema versions"). Kept apart from main() so that a unit test can drive it.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "baton/value.h"

namespace kvd {

/// The v2 -> v1 migration. v1 cannot expire keys, so a key with a TTL keeps its value and
/// loses its TTL (counted), and a key already past its TTL (not yet erased by v2's lazy
/// expiry) is dropped rather than brought back to life. Entries arrive in order: restored
/// records, then replayed deltas, so a later write to a key decides its fate.
struct Rollback {
  int64_t now_ms = 0;
  uint64_t ttls_removed = 0;
  std::set<std::string> expired;  // to erase once the take-over is complete

  void migrate(std::string_view key, baton::Entry& e) {
    if (e.expires_at_ms != 0 && e.expires_at_ms <= now_ms) {
      expired.emplace(key);
      e.expires_at_ms = 0;
      return;
    }
    if (!expired.empty()) expired.erase(std::string(key));  // rewritten since it expired
    if (e.expires_at_ms != 0) {
      ++ttls_removed;
      e.expires_at_ms = 0;
    }
  }
};

}  // namespace kvd
