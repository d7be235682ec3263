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

  /// Sends `m` with `fds` attached. A full send buffer is waited out for up to 2 s.
  /// TODO(latency): the wait blocks the caller's loop; messages are small and the peer
  /// reads at once, so it has not been seen to wait.
  Result<void> send(const Message& m, std::span<const int> fds = {});

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
