// SipHash-2-4 (Aumasson and Bernstein), written from the paper's description, over a
// stream of length-prefixed parts; and the entry hash built on it.
#include "baton/digest.h"

#include <bit>
#include <cstring>
#include <type_traits>

namespace baton {
namespace {

class SipHash {
 public:
  SipHash(uint64_t k0, uint64_t k1)
      : v0_(k0 ^ 0x736f6d6570736575ULL),
        v1_(k1 ^ 0x646f72616e646f6dULL),
        v2_(k0 ^ 0x6c7967656e657261ULL),
        v3_(k1 ^ 0x7465646279746573ULL) {}

  void update(const char* p, size_t n) {
    total_ += n;
    if (fill_ != 0) {
      const size_t take = std::min(n, size_t{8} - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ < 8) return;
      block(load(buf_));
      fill_ = 0;
    }
    for (; n >= 8; p += 8, n -= 8) block(load(p));
    std::memcpy(buf_, p, n);
    fill_ = n;
  }

  void part(std::string_view s) {
    const uint64_t len = s.size();
    update(reinterpret_cast<const char*>(&len), 8);
    update(s.data(), s.size());
  }

  uint64_t finish() {
    uint64_t last = (total_ & 0xff) << 56;
    for (size_t i = 0; i < fill_; ++i) last |= uint64_t{static_cast<uint8_t>(buf_[i])} << (8 * i);
    block(last);
    v2_ ^= 0xff;
    for (int i = 0; i < 4; ++i) round();
    return v0_ ^ v1_ ^ v2_ ^ v3_;
  }

 private:
  static uint64_t load(const char* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);  // little-endian hosts only, as the frames are
    return v;
  }
  void round() {
    v0_ += v1_;
    v1_ = std::rotl(v1_, 13) ^ v0_;
    v0_ = std::rotl(v0_, 32);
    v2_ += v3_;
    v3_ = std::rotl(v3_, 16) ^ v2_;
    v0_ += v3_;
    v3_ = std::rotl(v3_, 21) ^ v0_;
    v2_ += v1_;
    v1_ = std::rotl(v1_, 17) ^ v2_;
    v2_ = std::rotl(v2_, 32);
  }
  void block(uint64_t m) {
    v3_ ^= m;
    round();
    round();
    v0_ ^= m;
  }

  uint64_t v0_, v1_, v2_, v3_;
  char buf_[8];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

std::string_view bytes_of(const int64_t& v) { return {reinterpret_cast<const char*>(&v), 8}; }

}  // namespace

uint64_t siphash24(const DigestKey& key, std::string_view bytes) {
  SipHash h(key.k0, key.k1);
  h.update(bytes.data(), bytes.size());
  return h.finish();
}

uint64_t EntryHasher::hash(std::initializer_list<std::string_view> parts) const {
  SipHash h(key_.k0, key_.k1);
  for (std::string_view p : parts) h.part(p);
  return h.finish();
}

uint64_t EntryHasher::entry(std::string_view key, const Entry& e) const {
  const char type = static_cast<char>(e.type());
  const std::string_view t(&type, 1);
  // The entry itself: key, type and expiry; then one term per element.
  uint64_t sum = hash({"entry", key, t, bytes_of(e.expires_at_ms)});
  if (e.is_string()) return sum + hash({"string", key, e.str()});
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Box<List>>) {
          int64_t i = 0;
          for (const std::string& x : *v) {
            sum += hash({"list", key, bytes_of(i), x});
            ++i;
          }
        } else if constexpr (std::is_same_v<T, Box<Set>>) {
          for (const std::string& x : *v) sum += hash({"set", key, x});
        } else if constexpr (std::is_same_v<T, Box<Hash>>) {
          for (const auto& [f, x] : *v) sum += hash({"hash", key, f, x});
        } else if constexpr (std::is_same_v<T, Box<ZSet>>) {
          for (const auto& [score, m] : v->ordered()) {
            const int64_t bits = std::bit_cast<int64_t>(score);
            sum += hash({"zset", key, m, bytes_of(bits)});
          }
        }
      },
      e.value);
  return sum;
}

}  // namespace baton
