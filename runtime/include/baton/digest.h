// State digests (docs/protocol.md, "State digest at the cut"): an order-independent, keyed
// digest of a section's state, so that two processes holding the same state in different
// layouts, or in different schema versions, can show it is the same.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "baton/value.h"

namespace baton {

/// The per-upgrade key. Chosen at random by the incumbent, so that no fixed structure of
/// the data (duplicates, reordered members) cancels out in the sum.
struct DigestKey {
  uint64_t k0 = 0, k1 = 0;
};

/// A section's digest: the wrapping sum of its entries' hashes, and how many entries.
struct StateDigest {
  uint64_t sum = 0;
  uint64_t entries = 0;
  bool operator==(const StateDigest&) const = default;
  void add(uint64_t entry_hash) {
    sum += entry_hash;
    ++entries;
  }
};

/// SipHash-2-4 of `bytes` (the reference function; tests check its published vectors).
uint64_t siphash24(const DigestKey& key, std::string_view bytes);

/// Keyed hashing of entries (SipHash-2-4 of length-prefixed parts). An entry's hash is a
/// sum over its elements, each hashed with the key and, for a list, its index: sets,
/// hashes and sorted sets hash the same in any iteration order, lists only in theirs.
class EntryHasher {
 public:
  explicit EntryHasher(DigestKey key) : key_(key) {}
  /// SipHash-2-4 of the parts, each preceded by its length.
  uint64_t hash(std::initializer_list<std::string_view> parts) const;
  /// The hash of the entry under `key`: its type, expiry and every element.
  uint64_t entry(std::string_view key, const Entry& e) const;

 private:
  DigestKey key_;
};

}  // namespace baton
