// CompactString: inline up to 15 bytes, one exact-size heap block beyond.
#include "baton/compact_string.h"

#include <algorithm>
#include <new>
#include <stdexcept>

namespace baton {
namespace {

void check_size(size_t n) {
  if (n > CompactString::kMaxSize) {
    throw std::length_error("a string of " + std::to_string(n) +
                            " bytes is longer than the 2 GiB - 1 a CompactString holds");
  }
}

char* allocate(size_t n) { return static_cast<char*>(::operator new(n)); }

// memmove that accepts the null data() of an empty view (memmove's arguments must not be
// null even for 0 bytes; the checkpoint fuzzer found an empty value that had one).
void move_bytes(void* to, const char* from, size_t n) {
  if (n > 0) std::memmove(to, from, n);
}

}  // namespace

void CompactString::init(std::string_view s) {
  check_size(s.size());
  if (s.size() <= kInline) {
    move_bytes(raw_, s.data(), s.size());
    set_small(s.size());
    return;
  }
  char* block = allocate(s.size());
  std::memcpy(block, s.data(), s.size());
  set_heap(block, s.size(), s.size());
}

CompactString& CompactString::assign(std::string_view s) {
  check_size(s.size());
  if (!small() && s.size() <= capacity() && s.size() > kInline) {
    char* block = load<char*>(0);
    std::memmove(block, s.data(), s.size());  // `s` may be part of the block
    store<uint32_t>(8, static_cast<uint32_t>(s.size()));
    return *this;
  }
  if (s.size() <= kInline) {
    // Read the old block's address before the inline bytes overwrite it; `s` may be in it.
    char* old = small() ? nullptr : load<char*>(0);
    move_bytes(raw_, s.data(), s.size());
    set_small(s.size());
    ::operator delete(old);
    return *this;
  }
  char* block = allocate(s.size());
  std::memcpy(block, s.data(), s.size());  // before the old block, which `s` may view, goes
  release();
  set_heap(block, s.size(), s.size());
  return *this;
}

CompactString& CompactString::append(std::string_view s) {
  const size_t n = size();
  check_size(n + s.size());
  const size_t total = n + s.size();
  if (total <= capacity()) {
    move_bytes(data() + n, s.data(), s.size());
    if (small()) {
      set_small(total);
    } else {
      store<uint32_t>(8, static_cast<uint32_t>(total));
    }
    return *this;
  }
  // Geometric growth keeps repeated appends amortized O(1).
  const size_t cap = std::min(kMaxSize, std::max(total, 2 * n));
  char* block = allocate(cap);
  std::memcpy(block, data(), n);
  move_bytes(block + n, s.data(), s.size());  // `s` may view the old bytes: still there
  release();
  set_heap(block, total, cap);
  return *this;
}

}  // namespace baton
