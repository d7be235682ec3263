// A corrupt, truncated, foreign or too-new checkpoint must give a clean error: no crash,
// no hang, and a message that names what is wrong.
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "../../runtime/src/checkpoint/format.h"
#include "baton/checkpoint.h"
#include "baton/crc32c.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"
#include "shm_util.h"

namespace baton {
namespace {

using testing::fd_with;

class Corruption : public ::testing::Test {
 protected:
  void SetUp() override {
    Registry reg;
    TrackedMap m("kv", 1), other("other", 1);
    ASSERT_TRUE(reg.add(m).ok());
    ASSERT_TRUE(reg.add(other).ok());
    std::string_view l[] = {"a", "b"};
    for (int i = 0; i < 300; ++i) {
      m.set("key" + std::to_string(i), std::string(50, 'x'), i % 7 ? 0 : 1700000000000);
      (void)m.push("list" + std::to_string(i % 10), End::kLeft, l);
      (void)other.zadd("z", i, "m" + std::to_string(i));
    }
    auto cp = testing::checkpoint_now(reg, 2048);
    reg.log().end_capture();
    good_ = testing::read_all(cp.fd());
    // hugetlb segments are padded to whole huge pages; the checkpoint is what it says.
    format::Header h;
    ASSERT_GE(good_.size(), sizeof h);
    std::memcpy(&h, good_.data(), sizeof h);
    good_.resize(h.total_bytes);
    ASSERT_GT(good_.size(), format::kDataOffset + 1000);
  }

  // Restores `bytes` into fresh sections; returns the error (or nullopt on success).
  std::optional<Error> restore(const std::string& bytes) {
    Registry reg;
    TrackedMap m("kv", 1), other("other", 1);
    EXPECT_TRUE(reg.add(m).ok());
    EXPECT_TRUE(reg.add(other).ok());
    UniqueFd fd = fd_with(bytes);
    auto r = restore_checkpoint(fd.get(), reg);
    if (r.ok()) return std::nullopt;
    return std::move(r).error();
  }

  // Rewrites the header checksum so a header-field change is judged on its own merits.
  static void reseal(std::string& b) {
    format::Header h;
    std::memcpy(&h, b.data(), sizeof h);
    size_t n = std::min<size_t>(h.header_bytes, b.size());
    if (n < sizeof h) n = sizeof h;
    std::memset(b.data() + offsetof(format::Header, header_checksum), 0, 4);
    uint32_t c = crc32c(0, b.data(), n);
    std::memcpy(b.data() + offsetof(format::Header, header_checksum), &c, 4);
  }

  std::string good_;
};

TEST_F(Corruption, IntactCopyRestores) { EXPECT_FALSE(restore(good_).has_value()); }

TEST_F(Corruption, ForeignBytesAreNamedForeign) {
  std::string junk(8192, 'J');
  auto e = restore(junk);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind(), ErrorKind::kCorrupt);
  EXPECT_NE(e->message().find("not a Baton checkpoint"), std::string::npos) << e->message();
  auto empty = restore("");
  ASSERT_TRUE(empty);
  EXPECT_NE(empty->message().find("truncated"), std::string::npos);
}

TEST_F(Corruption, TooNewFormatIsAVersionErrorNamingBothVersions) {
  std::string b = good_;
  uint32_t v = format::kFormatVersion + 1;
  std::memcpy(b.data() + offsetof(format::Header, format_version), &v, 4);
  reseal(b);
  auto e = restore(b);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind(), ErrorKind::kVersion);
  EXPECT_NE(e->message().find("version 2 is newer than this build reads (1)"), std::string::npos)
      << e->message();
}

TEST_F(Corruption, EveryHeaderFieldDamagedIsRefused) {
  format::Header h;
  std::memcpy(&h, good_.data(), sizeof h);
  // Each header byte (and each section descriptor byte), flipped and then resealed so the
  // header checksum cannot be what catches it. Bytes that carry no meaning (reserved,
  // creation time, pid, name padding) may pass; the rest must be refused by name.
  int refused = 0, total = 0;
  for (size_t i = 0; i < h.header_bytes; ++i) {
    bool meaningless =
        (i >= offsetof(format::Header, created_unix_us) &&
         i < offsetof(format::Header, page_kind)) ||
        (i >= offsetof(format::Header, reserved) && i < sizeof(format::Header)) ||
        i == offsetof(format::Header, header_checksum) ||
        (i > offsetof(format::Header, header_checksum) && i < offsetof(format::Header, start_lsn));
    if (i >= sizeof(format::Header)) {
      size_t in_desc = (i - sizeof(format::Header)) % sizeof(format::SectionDesc);
      meaningless = in_desc > 2 && in_desc < format::kNameBytes;  // past "kv\0" / "oth..."
    }
    if (meaningless) continue;
    std::string b = good_;
    b[i] ^= 0x10;
    reseal(b);
    ++total;
    auto e = restore(b);
    if (e) {
      ++refused;
      EXPECT_FALSE(e->message().empty());
    } else {
      // Only start_lsn may change without the data disagreeing; it is checked by replay.
      EXPECT_TRUE(i >= offsetof(format::Header, start_lsn) &&
                  i < offsetof(format::Header, total_bytes))
          << "byte " << i << " damaged but accepted";
    }
  }
  EXPECT_GT(refused, total * 3 / 4);
}

TEST_F(Corruption, UnsealedHeaderDamageIsACheckpointChecksumError) {
  std::string b = good_;
  b[offsetof(format::Header, start_lsn)] ^= 1;
  auto e = restore(b);
  ASSERT_TRUE(e);
  EXPECT_NE(e->message().find("header checksum mismatch (expected 0x"), std::string::npos);
}

TEST_F(Corruption, TruncationAtManyOffsetsIsRefused) {
  std::mt19937_64 rng(1);
  std::vector<size_t> cuts = {0, 1, 7, 8, 71, 72, 100, 4095, 4096, 4097, good_.size() - 1};
  for (int i = 0; i < 200; ++i) cuts.push_back(rng() % good_.size());
  for (size_t cut : cuts) {
    auto e = restore(good_.substr(0, cut));
    ASSERT_TRUE(e) << "truncated at " << cut << " but accepted";
    EXPECT_EQ(e->kind(), ErrorKind::kCorrupt) << e->message();
    EXPECT_NE(e->message().find("truncated"), std::string::npos) << e->message();
  }
}

TEST_F(Corruption, RandomByteFlipsInDataAreCaughtByChecksums) {
  std::mt19937_64 rng(2);
  for (int i = 0; i < 500; ++i) {
    std::string b = good_;
    size_t at = format::kDataOffset + rng() % (good_.size() - format::kDataOffset);
    b[at] ^= static_cast<char>(1 + rng() % 255);
    auto e = restore(b);
    ASSERT_TRUE(e) << "flip at " << at << " accepted";
    EXPECT_EQ(e->kind(), ErrorKind::kCorrupt);
    EXPECT_NE(e->message().find("checkpoint section '"), std::string::npos) << e->message();
  }
}

TEST_F(Corruption, ChunkChecksumErrorNamesSectionOffsetAndValues) {
  std::string b = good_;
  b[format::kDataOffset + sizeof(format::ChunkHeader) + 40] ^= 0x01;
  auto e = restore(b);
  ASSERT_TRUE(e);
  EXPECT_NE(e->message().find("checkpoint section 'kv' chunk at offset 4096: checksum mismatch "
                              "(expected 0x"),
            std::string::npos)
      << e->message();
}

TEST_F(Corruption, ValidChecksumsOverHostileCapnpAreRefusedNotCrashed) {
  // Forge chunk payloads with correct checksums but random content: the Cap'n Proto
  // reader limits and bounds checks must turn them into errors.
  std::mt19937_64 rng(3);
  format::ChunkHeader ch;
  std::memcpy(&ch, good_.data() + format::kDataOffset, sizeof ch);
  size_t msg_at = format::kDataOffset + sizeof ch;
  size_t msg_len = size_t{ch.message_words} * 8;
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::string b = good_;
    for (int k = 0; k < 1 + int(rng() % 8); ++k)
      b[msg_at + 8 + rng() % (msg_len - 8)] = char(rng());
    uint32_t c = crc32c(0, b.data() + msg_at, msg_len);
    std::memcpy(b.data() + format::kDataOffset + offsetof(format::ChunkHeader, checksum), &c, 4);
    auto e = restore(b);
    if (e) ++refused;
  }
  // The decoder runs over every forged message first (bounds, limits, duplicate members);
  // whatever it accepts, the section checksum over chunk headers refuses at the end.
  // Under ASan this also proves no out-of-bounds read on hostile input.
  EXPECT_EQ(refused, 300);
}

}  // namespace
}  // namespace baton
