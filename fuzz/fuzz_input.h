// Helpers the fuzz targets share: a cursor over the fuzzer's bytes that never fails (it
// yields zeros past the end), and the check that turns a broken property into a crash.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace baton::fuzz {

/// Reads fixed-size fields and byte runs off the front of the input.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : in_(reinterpret_cast<const char*>(data), size) {}
  explicit FuzzInput(std::string_view in) : in_(in) {}

  bool empty() const { return in_.empty(); }
  size_t remaining() const { return in_.size(); }

  /// A little-endian integer; missing bytes read as zero.
  template <typename T>
  T take() {
    T v{};
    size_t n = std::min(sizeof v, in_.size());
    std::memcpy(&v, in_.data(), n);
    in_.remove_prefix(n);
    return v;
  }
  /// Up to `n` bytes (fewer at the end).
  std::string_view take_bytes(size_t n) {
    std::string_view b = in_.substr(0, n);
    in_.remove_prefix(b.size());
    return b;
  }
  std::string_view rest() {
    std::string_view b = in_;
    in_ = {};
    return b;
  }

 private:
  std::string_view in_;
};

/// True when BATON_FUZZ_VERBOSE is set: the targets then print why an input was refused,
/// to check by hand that seeds reach as deep as they should.
inline bool verbose() {
  static const bool on = std::getenv("BATON_FUZZ_VERBOSE") != nullptr;
  return on;
}

/// A property that must hold for every input: libFuzzer reports the abort as a crash and
/// saves the input.
#define BATON_FUZZ_CHECK(cond, ...)                                                         \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, "  " __VA_ARGS__);                                               \
      std::fprintf(stderr, "\n");                                                           \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

}  // namespace baton::fuzz
