// Prefaulter: populates a mapping's pages on a helper thread, a window ahead of the
// thread that writes or reads it, so page faults (the dominant cost of a fresh 4 KiB
// shmem segment) run on another core. MADV_POPULATE_* changes no bytes, so the helper
// never races the consumer's data. Over a sparse segment it reserves each range first
// (ShmSegment::reserve), so populating never faults a page tmpfs cannot supply.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <thread>

namespace baton {

/// Microseconds on CPU clock `clock` (a thread's, the process's), or -1 if it cannot be
/// read (a thread that has exited).
inline int64_t clock_us(clockid_t clock) {
  timespec ts{};
  if (::clock_gettime(clock, &ts) != 0) return -1;
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

class Prefaulter {
 public:
  enum class Mode { kRead, kWrite };
  /// Starts the helper over the whole pages inside [base, base + size), unless the range
  /// holds none or the kernel lacks MADV_POPULATE_READ/WRITE (before 5.14).
  /// `reserve(end)`, when given, must make [base, base + end) safe to touch; the helper
  /// stops at its first false (the consumer meets the same failure itself).
  Prefaulter(std::byte* base, size_t size, Mode mode, size_t window,
             std::function<bool(size_t end)> reserve = {});
  ~Prefaulter();
  Prefaulter(const Prefaulter&) = delete;
  Prefaulter& operator=(const Prefaulter&) = delete;

  /// The consumer has reached `offset` (from the caller's base); the helper keeps
  /// `window` bytes beyond it ready.
  void advance(size_t offset);
  /// Whether a helper thread runs.
  bool active() const { return thread_.joinable(); }
  /// Whether [0, end) (from the caller's base) is populated, or never will be by the
  /// helper (none runs, or it gave up): a consumer that must not wait on the helper's
  /// page locks, as the checkpoint's writer on the server's thread, touches only that.
  bool covers(size_t end) const {
    return !active() || gave_up_.load(std::memory_order_acquire) ||
           end <= ready_.load(std::memory_order_acquire);
  }
  /// CPU time the helper thread has used so far, in microseconds (0 once stopped): the
  /// checkpoint's pacing charges it to the checkpoint, since it takes a core the server's
  /// clients could use.
  int64_t cpu_us() const;
  /// Stops and joins the helper.
  void stop();

 private:
  void run();

  std::byte* base_ = nullptr;  // first whole page of the range
  size_t size_ = 0;            // whole pages only
  size_t offset_ = 0;          // from the caller's base to base_
  int advice_;
  size_t window_;
  std::function<bool(size_t)> reserve_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t consumer_ = 0;
  bool stop_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> ready_{0};  // covers(): populated up to here, SIZE_MAX when all is
  std::atomic<bool> gave_up_{false};
  std::thread thread_;
  clockid_t cpu_clock_{};
  bool has_cpu_clock_ = false;
};

}  // namespace baton
