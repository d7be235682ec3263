// DeltaChannel: framing and writing on one end, reading and replaying on the other.
#include "stream/delta_channel.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace baton {

Result<DeltaChannel> DeltaChannel::create(UniqueFd sock) {
  const int flags = ::fcntl(sock.get(), F_GETFL);
  if (flags < 0 || ::fcntl(sock.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return Error(ErrorKind::kSystem, "making the delta stream nonblocking", errno);
  }
  return DeltaChannel(std::move(sock));
}

DeltaChannel::DeltaChannel(DeltaChannel&&) noexcept = default;
DeltaChannel& DeltaChannel::operator=(DeltaChannel&&) noexcept = default;
// sender_ goes first (declared after sock_): a write in flight must end before the socket.
DeltaChannel::~DeltaChannel() { sender_.reset(); }

Result<void> DeltaChannel::send_from(DeltaLog& log) {
  BATON_ASSIGN_OR_RETURN(sender_, DeltaSender::create(sock_.get(), DeltaSender::Backend::kUring));
  log_ = &log;
  deltas_sent_ = 0;
  return ok();
}

Result<void> DeltaChannel::pump() {
  if (log_ == nullptr) return Error(ErrorKind::kState, "delta channel has no log to send");
  if (log_->overflowed()) {
    return Error(ErrorKind::kCapacity, "delta log passed its " +
                                           std::to_string(log_->limit_bytes()) +
                                           "-byte limit: writes outpace the stream");
  }
  const uint64_t count = log_->pending_count();
  std::string frame = log_->take_frame();
  if (!frame.empty()) {
    if (corrupt_) frame[frame.size() - 1] ^= 0x5a;  // the frame checksum must catch it
    deltas_sent_ += count;
    sender_->enqueue(std::move(frame));
  }
  return sender_->pump();
}

uint64_t DeltaChannel::backlog_bytes() const {
  return (sender_ ? sender_->queued_bytes() : 0) + (log_ ? log_->pending_bytes() : 0);
}

bool DeltaChannel::drained() const {
  return (log_ == nullptr || log_->pending_count() == 0) && (!sender_ || sender_->idle());
}

bool DeltaChannel::writes_drained() const {
  return (log_ == nullptr || log_->pending_writes() == 0) && (!sender_ || sender_->idle());
}

void DeltaChannel::receive_into(DeltaReplayer replayer) {
  replayer_.emplace(std::move(replayer));
  inbox_.clear();
}

Result<uint64_t> DeltaChannel::receive(size_t max_frame, bool to_end) {
  if (!replayer_) return Error(ErrorKind::kState, "delta channel has no replayer");
  char buf[1 << 16];
  // Bounded per call so that a fast writer cannot keep the reader's loop here, except
  // when draining a stream whose writer is gone.
  for (int i = 0; to_end || i < 256; ++i) {
    const ssize_t n = ::read(sock_.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && !to_end) break;
      if (errno == EAGAIN || errno == ECONNRESET) break;
      return Error(ErrorKind::kSystem, "reading the delta stream", errno);
    }
    if (n == 0) break;
    inbox_.append(buf, static_cast<size_t>(n));
  }
  size_t used = 0;
  for (;;) {
    BATON_ASSIGN_OR_RETURN(size_t len,
                           frame_size(std::string_view(inbox_).substr(used), max_frame));
    if (len == 0 || inbox_.size() - used < len) break;
    BATON_TRY(replayer_->apply_frame(std::string_view(inbox_).substr(used, len)));
    used += len;
  }
  inbox_.erase(0, used);
  return applied_lsn();
}

}  // namespace baton
