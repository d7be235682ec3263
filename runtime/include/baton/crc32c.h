// CRC32C (Castagnoli), the checksum of checkpoint chunks, headers and delta frames.
#pragma once

#include <cstddef>
#include <cstdint>

namespace baton {

/// Extends `crc` over `size` bytes; start with 0. Uses SSE4.2 when the CPU has it.
uint32_t crc32c(uint32_t crc, const void* data, size_t size);

}  // namespace baton
