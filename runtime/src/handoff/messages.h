// The control messages of an upgrade as plain C++ values. The state machines consume
// and emit these; serialization/control_codec turns them into Cap'n Proto bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "baton/result.h"

namespace baton::handoff {

/// Bumped whenever serialization/control.capnp or the phase order changes.
inline constexpr uint32_t kProtocolVersion = 4;
/// The largest control message accepted; fd batches are split below it, so one socket's
/// state (FrozenSocket::state) can be up to about half of it.
inline constexpr size_t kMaxMessageBytes = size_t{1} << 20;

struct SectionRange {
  std::string name;
  uint32_t min_version = 0;
  uint32_t max_version = 0;
  bool operator==(const SectionRange&) const = default;
};

struct Hello {
  uint32_t protocol_version = kProtocolVersion;
  int32_t pid = 0;
  std::vector<std::string> capabilities;
  std::vector<SectionRange> sections;
  bool operator==(const Hello&) const = default;
};

struct Welcome {
  uint32_t protocol_version = kProtocolVersion;
  uint64_t generation = 0;
  std::vector<std::string> capabilities;
  bool operator==(const Welcome&) const = default;
};

struct CheckpointReady {
  uint64_t start_lsn = 0;
  uint64_t bytes = 0;
  bool operator==(const CheckpointReady&) const = default;
};

struct Restored {
  uint64_t records = 0;
  int64_t restore_us = 0;
  bool operator==(const Restored&) const = default;
};

struct Frozen {
  uint64_t final_lsn = 0;
  uint32_t fd_count = 0;
  int64_t freeze_start_us = 0;
  bool operator==(const Frozen&) const = default;
};

struct HandedFd {
  std::string tag;
  std::string state;
  uint64_t id = 0;     // the socket's inode
  bool early = false;  // in FdBatch: refers to an EarlyFds socket by id; no fd attached
  bool operator==(const HandedFd&) const = default;
};

struct FdBatch {
  std::vector<HandedFd> fds;
  bool operator==(const FdBatch&) const = default;
  /// The fds attached to this message: one per entry that is not `early`.
  size_t attached() const {
    size_t n = 0;
    for (const HandedFd& f : fds) n += !f.early;
    return n;
  }
};

struct EarlyFds {
  std::vector<HandedFd> fds;  // one attached fd per entry
  bool operator==(const EarlyFds&) const = default;
};

struct Prepared {
  uint64_t applied_lsn = 0;
  uint32_t fds_received = 0;
  bool operator==(const Prepared&) const = default;
};

/// The incumbent's half of an upgrade's timeline (CLOCK_MONOTONIC microseconds).
struct Timings {
  int64_t start_us = 0;
  int64_t spawn_us = 0;
  int64_t checkpoint_us = 0;
  int64_t catchup_us = 0;
  int64_t freeze_start_us = 0;
  uint64_t checkpoint_bytes = 0;
  uint64_t deltas = 0;
  uint64_t fds = 0;
  bool operator==(const Timings&) const = default;
};

struct Commit {
  uint64_t generation = 0;
  Timings timings;
  bool operator==(const Commit&) const = default;
};

struct Abort {
  std::string reason;
  bool operator==(const Abort&) const = default;
};

struct Serving {
  int32_t pid = 0;
  bool operator==(const Serving&) const = default;
};

struct Progress {
  uint64_t applied_lsn = 0;
  uint32_t early_fds = 0;

  bool operator==(const Progress&) const = default;
};

using Message = std::variant<Hello, Welcome, CheckpointReady, Restored, Frozen, FdBatch, Prepared,
                             Commit, Abort, Serving, Progress, EarlyFds>;

/// "HELLO", "WELCOME", ... for logs and errors.
std::string_view message_name(const Message& m);

}  // namespace baton::handoff
