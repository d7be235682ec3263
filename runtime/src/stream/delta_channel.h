// DeltaChannel: one end of a delta stream (a Unix stream socket between two processes),
// for either direction. The sending end frames what a DeltaLog captured and writes it
// through DeltaSender (io_uring) without blocking; the receiving end reads what arrived
// and applies whole frames through a DeltaReplayer. The forward stream of an upgrade and
// the reverse stream of probation are the same code.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "baton/checkpoint.h"
#include "baton/delta_log.h"
#include "baton/fd.h"
#include "baton/result.h"
#include "stream/delta_sender.h"

namespace baton {

class DeltaChannel {
 public:
  /// Takes the socket; it is made nonblocking.
  static Result<DeltaChannel> create(UniqueFd sock);
  DeltaChannel(DeltaChannel&&) noexcept;
  DeltaChannel& operator=(DeltaChannel&&) noexcept;
  ~DeltaChannel();

  int fd() const { return sock_.get(); }

  // --- sending end
  /// Frames of `log` go out from now on (the log is not owned; it must outlive this).
  Result<void> send_from(DeltaLog& log);
  /// Frames what the log captured and moves it towards the socket; never blocks. A log
  /// that overflowed its limit is a kCapacity error.
  Result<void> pump();
  /// Captured or queued bytes the socket has not accepted yet.
  uint64_t backlog_bytes() const;
  /// Deltas framed so far.
  uint64_t deltas_sent() const { return deltas_sent_; }
  /// True when every delta captured so far is in the kernel's socket buffer: the peer
  /// will read it even if this process dies now.
  bool drained() const;
  /// As drained(), for mutations only: pending probes may wait for the next pump.
  bool writes_drained() const;
  /// Stops the sending end (a write in flight is waited for); the socket stays.
  void stop_sending() {
    sender_.reset();
    log_ = nullptr;
  }
  /// Test hook (fail point incumbent.corrupt_frame): flip a payload byte of every frame.
  void corrupt_frames(bool on) { corrupt_ = on; }

  // --- receiving end
  /// Frames read from now on are applied by `replayer`.
  void receive_into(DeltaReplayer replayer);
  /// Reads what has arrived (to the end of the stream when `to_end`: the writer is gone)
  /// and applies every whole frame; returns the last LSN applied. `max_frame` bounds one
  /// frame's size.
  Result<uint64_t> receive(size_t max_frame, bool to_end = false);
  uint64_t applied_lsn() const { return replayer_ ? replayer_->next_lsn() - 1 : 0; }

 private:
  explicit DeltaChannel(UniqueFd sock) : sock_(std::move(sock)) {}

  UniqueFd sock_;
  // sending
  DeltaLog* log_ = nullptr;
  std::unique_ptr<DeltaSender> sender_;
  uint64_t deltas_sent_ = 0;
  bool corrupt_ = false;
  // receiving
  std::optional<DeltaReplayer> replayer_;
  std::string inbox_;
};

}  // namespace baton
