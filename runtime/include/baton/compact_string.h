// CompactString: the bytes of a key or a string value in 16 bytes, half of std::string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace baton {

/// A byte string that takes 16 bytes: up to 15 bytes are held inline, longer ones in one
/// heap block of exactly their size (append() grows it geometrically). A TrackedMap holds
/// one key and one string value per entry, so the 16 bytes it saves on each are 32 bytes
/// per key (docs/design.md, "Memory per key").
///
/// Not NUL-terminated. At most kMaxSize bytes; more throws std::length_error, as
/// std::string does past its max_size() (Redis's limit is 512 MiB).
class CompactString {
 public:
  static constexpr size_t kInline = 15;
  static constexpr size_t kMaxSize = (size_t{1} << 31) - 1;

  CompactString() noexcept { set_small(0); }
  CompactString(std::string_view s) { init(s); }  // NOLINT: converts like std::string
  CompactString(const std::string& s) : CompactString(std::string_view(s)) {}  // NOLINT
  CompactString(const char* s) : CompactString(std::string_view(s)) {}         // NOLINT
  CompactString(const CompactString& o) { init(o.view()); }
  CompactString(CompactString&& o) noexcept {
    std::memcpy(raw_, o.raw_, sizeof raw_);
    o.set_small(0);
  }
  CompactString& operator=(const CompactString& o) {
    assign(o.view());
    return *this;
  }
  CompactString& operator=(CompactString&& o) noexcept {
    if (this != &o) {
      release();
      std::memcpy(raw_, o.raw_, sizeof raw_);
      o.set_small(0);
    }
    return *this;
  }
  CompactString& operator=(std::string_view s) { return assign(s); }
  ~CompactString() { release(); }

  size_t size() const { return small() ? raw_[kInline] & ~kSmallFlag : load<uint32_t>(8); }
  bool empty() const { return size() == 0; }
  const char* data() const {
    return small() ? reinterpret_cast<const char*>(raw_) : load<char*>(0);
  }
  char* data() { return small() ? reinterpret_cast<char*>(raw_) : load<char*>(0); }
  std::string_view view() const { return {data(), size()}; }
  operator std::string_view() const { return view(); }  // NOLINT: reads like std::string
  /// Bytes this string can hold without allocating.
  size_t capacity() const { return small() ? kInline : load<uint32_t>(12); }

  /// Replaces the bytes; `s` may view this string's own bytes.
  CompactString& assign(std::string_view s);
  CompactString& assign(const char* p, size_t n) { return assign(std::string_view(p, n)); }
  /// Appends; `s` may view this string's own bytes.
  CompactString& append(std::string_view s);
  CompactString& operator+=(std::string_view s) { return append(s); }
  CompactString& operator+=(char c) { return append(std::string_view(&c, 1)); }
  /// Empties the string and frees its heap block, if any.
  void clear() noexcept {
    release();
    set_small(0);
  }

  friend bool operator==(const CompactString& a, const CompactString& b) {
    return a.view() == b.view();
  }
  friend bool operator==(const CompactString& a, std::string_view b) { return a.view() == b; }

 private:
  // Inline: bytes 0..14 hold the data, byte 15 is kSmallFlag | size. Heap: bytes 0..7 the
  // block, 8..11 the size, 12..15 the capacity, which is below 2^31, so byte 15's top bit
  // is clear. Fields are copied in and out with memcpy: no union member is ever inactive.
  static constexpr uint8_t kSmallFlag = 0x80;

  bool small() const { return (raw_[kInline] & kSmallFlag) != 0; }
  void set_small(size_t n) { raw_[kInline] = static_cast<uint8_t>(kSmallFlag | n); }
  template <typename T>
  T load(size_t at) const {
    T v;
    std::memcpy(&v, raw_ + at, sizeof v);
    return v;
  }
  template <typename T>
  void store(size_t at, T v) {
    std::memcpy(raw_ + at, &v, sizeof v);
  }
  void set_heap(char* block, size_t size, size_t cap) {
    store<char*>(0, block);
    store<uint32_t>(8, static_cast<uint32_t>(size));
    store<uint32_t>(12, static_cast<uint32_t>(cap));
  }
  void init(std::string_view s);
  void release() noexcept {
    if (!small()) ::operator delete(load<char*>(0));
  }

  alignas(8) uint8_t raw_[16] = {};
};

static_assert(sizeof(CompactString) == 16);

}  // namespace baton
