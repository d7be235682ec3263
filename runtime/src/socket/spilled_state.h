// Per-connection state too large for a control message travels in a sealed memfd attached
// next to its socket (FD_BATCH, protocol 6). Also: how an operator recognises a socket.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "baton/fd.h"
#include "baton/result.h"

namespace baton {

/// Above this, a socket's state goes in a memfd instead of the message itself.
inline constexpr size_t kInlineStateBytes = size_t{64} << 10;
/// The largest state a receiver reads back (a sanity bound on a peer's memfd).
inline constexpr size_t kMaxSpilledStateBytes = size_t{4} << 30;

/// A memfd holding `bytes`, sealed against any change, positioned at 0.
Result<UniqueFd> spill_state(std::string_view bytes);
/// Reads what spill_state() wrote; refuses a file larger than `max_bytes` or not sealed.
Result<std::string> read_spilled_state(int fd, size_t max_bytes = kMaxSpilledStateBytes);

/// "fd 9, peer 127.0.0.1:53422" (TCP), "fd 9, unix peer" or "fd 9": for error messages.
std::string describe_socket(int fd);

}  // namespace baton
