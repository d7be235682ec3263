// io_uring and writev backends of DeltaSender.
#include "stream/delta_sender.h"

#include <fcntl.h>
#include <liburing.h>

#include <cerrno>

#include "baton/syscall.h"

namespace baton {
namespace {
constexpr size_t kMaxIov = 64;
}

Result<std::unique_ptr<DeltaSender>> DeltaSender::create(int sock, Backend preferred) {
  int flags = ::fcntl(sock, F_GETFL);
  if (flags < 0 || ::fcntl(sock, F_SETFL, flags | O_NONBLOCK) < 0) {
    return Error(ErrorKind::kSystem, "making the delta stream nonblocking", errno);
  }
  std::unique_ptr<DeltaSender> s(new DeltaSender(sock, Backend::kWritev));
  if (preferred == Backend::kUring) {
    auto ring = std::make_unique<io_uring>();
    if (io_uring_queue_init(8, ring.get(), 0) == 0) {
      s->ring_ = std::move(ring);
      s->backend_ = Backend::kUring;
    }
  }
  s->iov_.resize(kMaxIov);
  return s;
}

DeltaSender::DeltaSender(int sock, Backend backend) : sock_(sock), backend_(backend) {}

DeltaSender::~DeltaSender() {
  if (ring_) {
    // A write may still reference our buffers: wait for it before they go.
    if (in_flight_) {
      io_uring_cqe* cqe;
      if (io_uring_wait_cqe(ring_.get(), &cqe) == 0) io_uring_cqe_seen(ring_.get(), cqe);
    }
    io_uring_queue_exit(ring_.get());
  }
}

void DeltaSender::enqueue(std::string frame) {
  if (frame.empty()) return;
  queued_bytes_ += frame.size();
  frames_.push_back(std::move(frame));
}

size_t DeltaSender::fill_iov() {
  size_t n = 0;
  for (size_t i = 0; i < frames_.size() && n < kMaxIov; ++i, ++n) {
    size_t skip = i == 0 ? front_offset_ : 0;
    iov_[n].iov_base = frames_[i].data() + skip;
    iov_[n].iov_len = frames_[i].size() - skip;
  }
  return n;
}

void DeltaSender::consume(size_t n) {
  queued_bytes_ -= n;
  while (n > 0) {
    size_t left = frames_.front().size() - front_offset_;
    if (n < left) {
      front_offset_ += n;
      return;
    }
    n -= left;
    frames_.pop_front();
    front_offset_ = 0;
  }
}

Result<void> DeltaSender::pump() {
  if (backend_ == Backend::kWritev) {
    while (!frames_.empty()) {
      size_t n = fill_iov();
      msghdr msg{};
      msg.msg_iov = iov_.data();
      msg.msg_iovlen = n;
      // MSG_NOSIGNAL: a successor that died must be an error here, not a SIGPIPE.
      ssize_t w = ::sendmsg(sock_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return ok();
        return Error(ErrorKind::kSystem, "writing delta frames to the successor", errno);
      }
      consume(static_cast<size_t>(w));
    }
    return ok();
  }
  for (;;) {
    if (in_flight_) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_peek_cqe(ring_.get(), &cqe) != 0) return ok();  // still writing
      int res = cqe->res;
      io_uring_cqe_seen(ring_.get(), cqe);
      in_flight_ = false;
      if (res < 0 && res != -EAGAIN && res != -EINTR) {
        return Error(ErrorKind::kSystem, "writing delta frames to the successor (io_uring)", -res);
      }
      if (res > 0) consume(static_cast<size_t>(res));
    }
    if (frames_.empty()) return ok();
    size_t n = fill_iov();
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    if (sqe == nullptr) return ok();
    msg_ = msghdr{};
    msg_.msg_iov = iov_.data();
    msg_.msg_iovlen = n;
    // sendmsg, not writev: only sendmsg takes MSG_NOSIGNAL, and a write to a dead
    // successor would otherwise raise SIGPIPE in this process.
    io_uring_prep_sendmsg(sqe, sock_, &msg_, MSG_NOSIGNAL);

    int submitted = io_uring_submit(ring_.get());
    if (submitted < 0) {
      return Error(ErrorKind::kSystem, "submitting a delta write to io_uring", -submitted);
    }
    in_flight_ = true;
  }
}

}  // namespace baton
