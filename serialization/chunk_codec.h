// Encodes and decodes checkpoint chunks. The Cap'n Proto types stay behind this header:
// the runtime sees only bytes, Entries and Results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/result.h"
#include "baton/value.h"

namespace baton::serialization {

using RecordRef = std::pair<std::string_view, const Entry*>;

/// Builds one chunk message (standard single-segment framing) at `out`, which must be
/// 8-byte aligned and zeroed. Returns the bytes used, or kCapacity if it does not fit.
Result<size_t> encode_chunk(std::span<const RecordRef> records, std::byte* out,
                            size_t capacity_bytes);

/// Decodes a chunk message read in place from `message`, appending each record to `out`.
/// The message must hold exactly `expected_records` records, checked before anything is
/// materialized, and every count is bounded by the message's bytes, so a hostile
/// message cannot make decoding allocate more than a small multiple of its size.
/// With `borrow`, string values are Borrowed views into `message` (which must outlive
/// them); otherwise they are copied. Reader limits are sized to the message.
Result<void> decode_chunk(std::span<const std::byte> message, uint64_t expected_records,
                          bool borrow, std::vector<std::pair<std::string, Entry>>& out);

/// The largest key, string value or collection (in elements) a chunk can carry.
inline constexpr size_t kMaxBlobBytes = (size_t{1} << 29) - 1;

}  // namespace baton::serialization
