// The fixed layout at the start of a checkpoint segment. Any change here bumps
// kFormatVersion in the same commit as docs/checkpoint-format.md.
#pragma once

#include <cstddef>
#include <cstdint>

namespace baton::format {

inline constexpr char kMagic[8] = {'B', 'A', 'T', 'O', 'N', 'C', 'K', '\0'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kChunkMagic = 0x4b4e4843;  // "CHNK" little-endian
inline constexpr size_t kMaxSections = 40;
inline constexpr size_t kNameBytes = 48;         // NUL-terminated, so 47 usable
inline constexpr uint64_t kDataOffset = 4096;    // sections start here, page-aligned
inline constexpr uint64_t kMinRecordBytes = 32;  // a Record list element: 2 data words + 2 pointers

struct Header {
  char magic[8];
  uint32_t format_version;
  uint32_t header_bytes;  // sizeof(Header) + section_count * sizeof(SectionDesc)
  uint32_t section_count;
  uint32_t header_checksum;  // CRC32C of header_bytes bytes with this field zero
  uint64_t start_lsn;        // L0
  uint64_t total_bytes;      // bytes used, from offset 0, header included
  uint64_t created_unix_us;
  uint32_t writer_pid;
  uint32_t page_kind;
  uint64_t reserved[2];
};
static_assert(sizeof(Header) == 72);
static_assert(offsetof(Header, format_version) == 8);
static_assert(offsetof(Header, header_checksum) == 20);
static_assert(offsetof(Header, start_lsn) == 24);
static_assert(offsetof(Header, total_bytes) == 32);

struct SectionDesc {
  char name[kNameBytes];
  uint32_t schema_version;
  uint32_t section_checksum;  // CRC32C over the section's chunk headers, in order
  uint64_t offset;            // of the first chunk, from the segment start; 8-aligned
  uint64_t bytes;             // all chunks, headers included
  uint64_t records;
  uint64_t chunks;
};
static_assert(sizeof(SectionDesc) == 88);
static_assert(offsetof(SectionDesc, offset) == 56);
static_assert(sizeof(Header) + kMaxSections * sizeof(SectionDesc) <= kDataOffset);

struct ChunkHeader {
  uint32_t magic;
  uint32_t checksum;  // CRC32C of the message bytes
  uint32_t records;
  uint32_t message_words;  // the Cap'n Proto message that follows, framing included
};
static_assert(sizeof(ChunkHeader) == 16);

}  // namespace baton::format
