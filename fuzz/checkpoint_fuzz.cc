// Fuzz target: restore_checkpoint over a segment built from the input, into the section
// kvd registers. Raw bytes stop at the header checksum, so two of the three modes repair
// or build the checksums and let mutations reach the descriptors, the chunk framing, the
// Cap'n Proto decoding and the section's restore. docs/fuzzing.md describes the modes.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "baton/checkpoint.h"
#include "baton/crc32c.h"
#include "baton/fd.h"
#include "baton/tracked_map.h"
#include "checkpoint/format.h"
#include "fuzz_input.h"
#include "kvd_section.h"

namespace baton::fuzz {
namespace {

namespace f = baton::format;

enum Mode : uint8_t {
  kRaw = 0,             // the rest is the segment, as is
  kFixedChecksums = 1,  // the rest is the segment; every checksum it locates is made right
  kStructured = 2,      // the rest describes sections and chunk messages; framing is built
};

uint32_t header_checksum(const std::string& seg, size_t header_bytes) {
  constexpr size_t at = offsetof(f::Header, header_checksum);
  const uint32_t zero = 0;
  uint32_t c = crc32c(0, seg.data(), at);
  c = crc32c(c, &zero, 4);
  return crc32c(c, seg.data() + at + 4, header_bytes - at - 4);
}

// Repairs, in place, every checksum the reader will check, walking the chunks as the
// reader does. Everything else stays as the fuzzer made it.
void fix_checksums(std::string& seg) {
  if (seg.size() < sizeof(f::Header)) return;
  f::Header h;
  std::memcpy(&h, seg.data(), sizeof h);
  if (h.section_count > f::kMaxSections) return;
  const size_t header_bytes = sizeof h + size_t{h.section_count} * sizeof(f::SectionDesc);
  if (h.header_bytes != header_bytes || header_bytes > seg.size()) return;
  for (size_t i = 0; i < h.section_count; ++i) {
    const size_t at = sizeof h + i * sizeof(f::SectionDesc);
    f::SectionDesc d;
    std::memcpy(&d, seg.data() + at, sizeof d);
    if (d.offset > seg.size() || d.bytes > seg.size() - d.offset) continue;
    uint64_t pos = d.offset, end = d.offset + d.bytes;
    uint32_t section_crc = 0;
    while (end - pos >= sizeof(f::ChunkHeader)) {
      f::ChunkHeader ch;
      std::memcpy(&ch, seg.data() + pos, sizeof ch);
      const uint64_t bytes = uint64_t{ch.message_words} * 8;
      if (bytes > end - pos - sizeof ch) break;
      ch.checksum = crc32c(0, seg.data() + pos + sizeof ch, bytes);
      std::memcpy(seg.data() + pos, &ch, sizeof ch);
      section_crc = crc32c(section_crc, &ch, sizeof ch);
      pos += sizeof ch + bytes;
    }
    d.section_checksum = section_crc;
    std::memcpy(seg.data() + at, &d, sizeof d);
  }
  const uint32_t crc = header_checksum(seg, header_bytes);
  std::memcpy(seg.data() + offsetof(f::Header, header_checksum), &crc, 4);
}

// Structured input, after the mode byte and the flags byte:
//   u8 sections (mod 4), then per section:
//     u8 name (3 = "other", else "kvd"), u8 schema version (mod 4), u8 chunks (mod 8),
//     then per chunk: u8 records, u16 body bytes, the body.
// A body is a Cap'n Proto segment (the 8-byte framing is added) or, with kFlagRawFraming,
// a whole message. Bodies are zero-padded to whole words. Every length, count and
// checksum in the segment is then right, so the fuzzer's bytes meet the decoder.
constexpr uint8_t kFlagRawFraming = 0x04;

std::string build_segment(FuzzInput& in, uint8_t flags) {
  std::string seg(f::kDataOffset, '\0');
  const size_t sections = in.take<uint8_t>() % 4;
  std::string descs;
  for (size_t i = 0; i < sections; ++i) {
    f::SectionDesc d{};
    const char* name = in.take<uint8_t>() % 4 == 3 ? "other" : "kvd";
    std::memcpy(d.name, name, std::strlen(name));
    d.schema_version = in.take<uint8_t>() % 4;
    d.offset = seg.size();
    const size_t chunks = in.take<uint8_t>() % 8;
    uint32_t section_crc = 0;
    for (size_t c = 0; c < chunks; ++c) {
      const uint32_t records = in.take<uint8_t>();
      std::string body(in.take_bytes(in.take<uint16_t>()));
      body.resize((body.size() + 7) / 8 * 8, '\0');
      std::string message;
      if (flags & kFlagRawFraming) {
        message = std::move(body);
      } else {
        const uint32_t table[2] = {0, static_cast<uint32_t>(body.size() / 8)};
        message.assign(reinterpret_cast<const char*>(table), sizeof table);
        message += body;
      }
      f::ChunkHeader ch{};
      ch.magic = f::kChunkMagic;
      ch.checksum = crc32c(0, message.data(), message.size());
      ch.records = records;
      ch.message_words = static_cast<uint32_t>(message.size() / 8);
      section_crc = crc32c(section_crc, &ch, sizeof ch);
      seg.append(reinterpret_cast<const char*>(&ch), sizeof ch);
      seg += message;
      d.bytes += sizeof ch + message.size();
      d.records += records;
      d.chunks += 1;
    }
    d.section_checksum = section_crc;
    descs.append(reinterpret_cast<const char*>(&d), sizeof d);
  }
  f::Header h{};
  std::memcpy(h.magic, f::kMagic, sizeof h.magic);
  h.format_version = f::kFormatVersion;
  h.section_count = static_cast<uint32_t>(sections);
  h.header_bytes = static_cast<uint32_t>(sizeof h + descs.size());
  h.start_lsn = flags >> 4;
  h.total_bytes = seg.size();
  std::memcpy(seg.data(), &h, sizeof h);
  std::memcpy(seg.data() + sizeof h, descs.data(), descs.size());
  const uint32_t crc = header_checksum(seg, h.header_bytes);
  std::memcpy(seg.data() + offsetof(f::Header, header_checksum), &crc, 4);
  return seg;
}

UniqueFd segment_fd(std::string_view bytes) {
  UniqueFd fd(::memfd_create("fuzz-checkpoint", MFD_CLOEXEC));
  BATON_FUZZ_CHECK(fd.valid(), "memfd_create failed");
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    BATON_FUZZ_CHECK(n > 0, "write to memfd failed");
    done += static_cast<size_t>(n);
  }
  return fd;
}

// What a successful restore must satisfy: the byte count is exact, and the state survives
// a checkpoint of its own and a restore into a fresh process's sections.
void check_restored(KvdNode& node) {
  TrackedMap& m = node.map;
  BATON_FUZZ_CHECK(m.estimate_bytes() == m.recount_bytes(), "estimate %llu, recount %llu",
                   static_cast<unsigned long long>(m.estimate_bytes()),
                   static_cast<unsigned long long>(m.recount_bytes()));
  CheckpointOptions opt;
  opt.pages = PagePolicy::kSmall;
  opt.prefault = false;
  opt.slice_bytes = 4096;
  opt.name_prefix = "baton-fuzz";
  auto w = CheckpointWriter::begin(node.reg, opt);
  BATON_FUZZ_CHECK(w.ok(), "%s", w.error().to_string().c_str());
  for (;;) {
    auto done = w->step();
    BATON_FUZZ_CHECK(done.ok(), "%s", done.error().to_string().c_str());
    if (done.value()) break;
  }
  auto cp = w->finish();
  BATON_FUZZ_CHECK(cp.ok(), "%s", cp.error().to_string().c_str());
  KvdNode again(m.schema_version() == 1);
  auto r = restore_checkpoint(cp->fd(), again.reg);
  BATON_FUZZ_CHECK(r.ok(), "re-restore: %s", r.error().to_string().c_str());
  BATON_FUZZ_CHECK(again.map.same_contents(m), "re-restored state differs");
}

}  // namespace
}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace baton;
  using namespace baton::fuzz;
  FuzzInput in(data, size);
  const uint8_t mode = in.take<uint8_t>() % 3;
  const uint8_t flags = in.take<uint8_t>();
  std::string seg;
  if (mode == kStructured) {
    seg = build_segment(in, flags);
  } else {
    seg = std::string(in.rest());
    if (mode == kFixedChecksums) fix_checksums(seg);
  }
  KvdNode node(flags & 0x01);
  RestoreOptions opt;
  opt.borrow_strings = flags & 0x02;
  UniqueFd fd = segment_fd(seg);
  auto restored = restore_checkpoint(fd.get(), node.reg, opt);
  fd.reset();
  if (verbose()) {
    std::fprintf(stderr, "mode %d: %s\n", mode,
                 restored.ok()
                     ? ("restored " + std::to_string(restored->records) + " records").c_str()
                     : restored.error().to_string().c_str());
  }
  if (restored.ok()) check_restored(node);
  return 0;
}
