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
/// With `borrow`, string values are Borrowed views into `message` (which must outlive
/// them); otherwise they are copied. Reader limits are sized to the message. Returns
/// the number of records appended.
Result<uint64_t> decode_chunk(std::span<const std::byte> message, bool borrow,
                              std::vector<std::pair<std::string, Entry>>& out);

}  // namespace baton::serialization
