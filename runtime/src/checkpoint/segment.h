// ShmSegment: the shared memory behind a checkpoint. Created through Boost.Interprocess
// with mode 0600 and unlinked at once, so no name outlives the creating call.
#pragma once

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
  /// A fresh, zeroed, writable segment of `capacity` bytes (sparse on tmpfs).
  static Result<std::unique_ptr<ShmSegment>> create(size_t capacity, PagePolicy policy,
                                                    std::string_view name_prefix);
  /// Maps an existing segment read-only; refuses one larger than `max_bytes`.
  static Result<std::unique_ptr<ShmSegment>> map_readonly(int fd, size_t max_bytes);
  ~ShmSegment();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  PageKind page_kind() const { return kind_; }
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
};

/// Removes /dev/shm names left by Baton processes that no longer exist (a SIGKILL in the
/// microseconds between create and unlink). Returns how many were removed.
size_t sweep_stale_segments(std::string_view name_prefix);

}  // namespace baton
