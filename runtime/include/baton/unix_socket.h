// Unix-socket helpers: messages with file descriptors attached (SCM_RIGHTS), and the
// peer's credentials (SO_PEERCRED).
#pragma once

#include <sys/types.h>

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "baton/fd.h"
#include "baton/result.h"

namespace baton {

/// The most fds one message carries (the kernel's SCM_MAX_FD is 253).
inline constexpr size_t kMaxFdsPerMessage = 253;

/// Sends `bytes` (at least one byte) with `fds` attached, in one sendmsg.
Result<void> send_fds(int sock, std::string_view bytes, std::span<const int> fds);

/// One received message: its bytes and the fds that came with it, already owned.
struct ReceivedMessage {
  std::string bytes;  // empty at end of stream
  std::vector<UniqueFd> fds;
};

/// Receives one message of at most `max_bytes` and any fds. Fds become owned at once,
/// so even a message refused as truncated leaks none.
Result<ReceivedMessage> recv_fds(int sock, size_t max_bytes);

/// The pid, uid and gid of the process at the other end of a connected Unix socket.
struct PeerCredentials {
  pid_t pid;
  uid_t uid;
  gid_t gid;
};
Result<PeerCredentials> peer_credentials(int sock);

}  // namespace baton
