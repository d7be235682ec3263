// Background page population for checkpoint segments.
#include "prefault.h"

#include <pthread.h>
#include <sys/mman.h>

#include <ctime>

#include <algorithm>
#include <utility>

namespace baton {
namespace {
constexpr size_t kStep = size_t{2} << 20;
constexpr size_t kPage = 4096;
}  // namespace

Prefaulter::Prefaulter(std::byte* base, size_t size, Mode mode, size_t window,
                       std::function<bool(size_t end)> reserve)
    : advice_(mode == Mode::kWrite ? MADV_POPULATE_WRITE : MADV_POPULATE_READ),
      window_(window),
      reserve_(std::move(reserve)) {
  // madvise needs page-aligned ranges; heap arrays are not. Populate the whole pages
  // inside [base, base + size).
  auto lo = reinterpret_cast<uintptr_t>(base);
  auto aligned = (lo + kPage - 1) / kPage * kPage;
  if (size < kPage || aligned - lo >= size - kPage) return;
  base_ = reinterpret_cast<std::byte*>(aligned);
  size_ = (size - (aligned - lo)) / kPage * kPage;
  offset_ = aligned - lo;
  if (reserve_ && !reserve_(offset_ + kPage)) return;
  if (::madvise(base_, kPage, advice_) != 0) return;  // EINVAL: kernel without it
  ready_.store(offset_ + kPage, std::memory_order_release);
  thread_ = std::thread([this] { run(); });
  has_cpu_clock_ = ::pthread_getcpuclockid(thread_.native_handle(), &cpu_clock_) == 0;
}

int64_t Prefaulter::cpu_us() const {
  if (!has_cpu_clock_ || !thread_.joinable()) return 0;
  return std::max<int64_t>(0, clock_us(cpu_clock_));
}

Prefaulter::~Prefaulter() { stop(); }

void Prefaulter::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Prefaulter::advance(size_t offset) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    consumer_ = offset > offset_ ? offset - offset_ : 0;
  }
  cv_.notify_one();
}

void Prefaulter::run() {
  size_t done = 0;
  for (;;) {
    size_t target, consumer;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || done < std::min(size_, consumer_ + window_); });
      if (stop_) return;
      consumer = consumer_;
      target = std::min(size_, consumer + window_);
    }
    done = std::max(done, consumer / kPage * kPage);  // never behind the consumer
    while (done < target && !stopping_.load(std::memory_order_relaxed)) {
      size_t n = std::min(kStep, size_ - done);
      // Full: the writer meets it and reports it. ENOMEM from madvise: give up quietly.
      if ((reserve_ && !reserve_(offset_ + done + n)) || ::madvise(base_ + done, n, advice_) != 0) {
        gave_up_.store(true, std::memory_order_release);
        return;
      }
      done += n;
      ready_.store(done >= size_ ? SIZE_MAX : offset_ + done, std::memory_order_release);
    }
    if (done >= size_) return;
  }
}

}  // namespace baton
