// DeltaSender: moves delta frames to the successor over a stream socket without ever
// blocking the server's loop, by io_uring (the default) or plain nonblocking writev.
// TODO(perf): one write in flight reaches 1.4 GB/s on this machine against ~11 GB/s for
// the socket (docs/benchmarks.md); deltas need far less today.

#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "baton/result.h"

struct io_uring;

namespace baton {

class DeltaSender {
 public:
  enum class Backend { kUring, kWritev };
  /// Sends on `sock` (not owned). kUring falls back to kWritev where io_uring is not
  /// available (the backend() says which runs).
  static Result<std::unique_ptr<DeltaSender>> create(int sock, Backend preferred);
  ~DeltaSender();

  void enqueue(std::string frame);
  /// Reaps finished writes and starts the next; never blocks.
  Result<void> pump();
  /// Bytes enqueued but not yet accepted by the socket.
  uint64_t queued_bytes() const { return queued_bytes_; }
  bool idle() const { return frames_.empty(); }
  Backend backend() const { return backend_; }

 private:
  DeltaSender(int sock, Backend backend);  // in the .cc: io_uring is incomplete here
  void consume(size_t n);
  size_t fill_iov();

  int sock_;
  Backend backend_;
  std::unique_ptr<io_uring> ring_;
  bool in_flight_ = false;
  std::deque<std::string> frames_;
  size_t front_offset_ = 0;  // bytes of frames_.front() already sent
  uint64_t queued_bytes_ = 0;
  std::vector<iovec> iov_;
  msghdr msg_{};  // the in-flight io_uring sendmsg's header; lives as long as the write
};

}  // namespace baton
