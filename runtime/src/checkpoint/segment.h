// ShmSegment: the shared memory behind a checkpoint: a memfd (4 KiB pages, or hugetlb),
// or, where only /dev/shm's huge= option gives transparent huge pages, a /dev/shm object
// created through Boost.Interprocess with mode 0600 and unlinked at once. No name
// outlives the creating call.
//
// Nothing may ever fault on it: tmpfs allocates a sparse object's pages on first touch
// and answers SIGBUS when it has none left. Writers reserve() a range (fallocate) before
// they touch it, so a full /dev/shm or a memory limit is an error, not a signal.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string_view>

#include "baton/checkpoint.h"
#include "baton/fd.h"
#include "baton/result.h"

namespace boost::interprocess {
class mapped_region;
}

namespace baton {

class ShmSegment {
 public:
  /// A fresh, zeroed, writable segment of `capacity` bytes, sparse: only reserve()d
  /// ranges may be touched.
  static Result<std::unique_ptr<ShmSegment>> create(size_t capacity, PagePolicy policy,
                                                    std::string_view name_prefix);
  /// Maps an existing segment read-only; refuses one larger than `max_bytes`.
  static Result<std::unique_ptr<ShmSegment>> map_readonly(int fd, size_t max_bytes);
  ~ShmSegment();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  PageKind page_kind() const { return kind_; }
  /// Allocates the object's memory for [0, end) (rounded up to whole pages, at most
  /// size()), unless already done. Thread-safe. Fails with what is full, never faults.
  Result<void> reserve(size_t end);
  /// How far [0, reserved()) is allocated.
  size_t reserved() const { return reserved_.load(std::memory_order_acquire); }
  /// Where the memory comes from, for operators: "/dev/shm" or "memory (memfd)".
  std::string_view backing() const;

  /// Cuts the object down to `bytes` (writer side, after sealing). Mapping stays valid
  /// below `bytes`.
  Result<void> shrink(size_t bytes);

 private:
  ShmSegment() = default;
  UniqueFd fd_;
  std::unique_ptr<boost::interprocess::mapped_region> region_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  PageKind kind_ = PageKind::kSmall;
  size_t huge_page_bytes_ = 0;  // hugetlb only
  bool in_dev_shm_ = false;
  std::atomic<size_t> reserved_{0};
};

/// Removes /dev/shm names left by Baton processes that no longer exist (a SIGKILL in the
/// microseconds between create and unlink). Returns how many were removed.
size_t sweep_stale_segments(std::string_view name_prefix);

}  // namespace baton
