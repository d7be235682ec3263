// ControlChannel: the SOCK_SEQPACKET channel between two processes of an upgrade, one
// Cap'n Proto Message per packet with fds attached. Both directions, every role.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "baton/fd.h"
#include "baton/result.h"
#include "handoff/messages.h"

namespace baton::handoff {

/// A message and the fds that came with it, owned.
struct Received {
  Message message;
  std::vector<UniqueFd> fds;
};

class ControlChannel {
 public:
  ControlChannel() = default;
  /// Takes the socket; it is made nonblocking for reads.
  static Result<ControlChannel> create(UniqueFd sock);

  int fd() const { return sock_.get(); }
  bool open() const { return sock_.valid(); }
  void close() { sock_.reset(); }

  /// Sends `m` with `fds` attached. The socket buffers hold megabytes and every message
  /// is small, so a full buffer means a peer that reads nothing: by default that is an
  /// error at once (kCapacity), never a wait on the caller's loop. `wait_until_us`
  /// (CLOCK_MONOTONIC) lets a caller that is frozen anyway, such as the incumbent sending
  /// the fd batches inside the freeze, wait for room until then.
  Result<void> send(const Message& m, std::span<const int> fds = {}, int64_t wait_until_us = 0);

  /// What try_receive() saw.
  enum class Status { kMessage, kNone, kClosed };
  /// The next message, if one has arrived. kClosed at the end of the stream; an error for
  /// a packet that does not decode (kCorrupt/kVersion) or an I/O error.
  Result<Status> try_receive(Received* out);

 private:
  explicit ControlChannel(UniqueFd sock) : sock_(std::move(sock)) {}
  UniqueFd sock_;
};

}  // namespace baton::handoff
