// The control messages of an upgrade as plain C++ values. The state machines consume
// and emit these; serialization/control_codec turns them into Cap'n Proto bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "baton/result.h"

namespace baton::handoff {

/// The newest protocol this build speaks; bumped whenever a message or the phase order
/// changes in a way an older peer must understand (docs/protocol.md, "Versions").
inline constexpr uint32_t kProtocolVersion = 7;
/// The oldest protocol this build still speaks, so that an upgrade from, and a rollback
/// to, a build of the previous version works. Version 5 added probation.
inline constexpr uint32_t kMinProtocolVersion = 4;
/// The first version with probation (COMMIT's window, SERVING's reverse stream).
inline constexpr uint32_t kProbationProtocolVersion = 5;
/// The first version in which a socket's state may travel in a memfd (HandedFd::state_fd).
inline constexpr uint32_t kStateFdProtocolVersion = 6;
/// The first version with shadow verification: probe records in the delta streams, probe
/// tallies in PROGRESS and PREPARED, a digest key in COMMIT, and SHADOW.
inline constexpr uint32_t kShadowProtocolVersion = 7;
/// The largest control message accepted; fd batches are split below it, so one socket's
/// state (FrozenSocket::state) can be up to about half of it.
inline constexpr size_t kMaxMessageBytes = size_t{1} << 20;

struct SectionRange {
  std::string name;
  uint32_t min_version = 0;
  uint32_t max_version = 0;
  /// A typed section's root struct id (its Cap'n Proto id); 0: untyped, or an older build.
  uint64_t type_id = 0;
  bool operator==(const SectionRange&) const = default;
};

/// A typed section's schema, in WELCOME: the successor compares it with its own.
struct SectionSchema {
  std::string name;
  uint32_t version = 0;  // the incumbent's schema version of the section
  uint64_t type_id = 0;
  std::string schema;  // TypedSchema::encoded
  bool operator==(const SectionSchema&) const = default;
};

struct Hello {
  /// The oldest version the successor speaks: a version-4 incumbent requires exactly 4 here.
  uint32_t protocol_version = kMinProtocolVersion;
  int32_t pid = 0;
  std::vector<std::string> capabilities;
  std::vector<SectionRange> sections;
  /// The newest version the successor speaks; 0 from a version-4 build (= protocol_version).
  uint32_t max_protocol_version = kProtocolVersion;
  uint32_t workers = 0;  // worker threads besides the main one
  bool operator==(const Hello&) const = default;
};

struct Welcome {
  uint32_t protocol_version = kProtocolVersion;  // the version chosen for this upgrade
  uint64_t generation = 0;
  std::vector<std::string> capabilities;
  /// Every typed section of the incumbent; absent from an older build (it has none).
  std::vector<SectionSchema> schemas;
  bool operator==(const Welcome&) const = default;
};

struct CheckpointReady {
  uint64_t start_lsn = 0;
  uint64_t bytes = 0;
  uint32_t worker_segments = 0;  // segment fds attached after the main one, one per worker
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
  /// The sender's counters and histograms (Metrics::carried()), for the receiver to
  /// continue: the server is frozen, so they are final. Empty from an older build.
  std::vector<std::pair<std::string, double>> metrics;
  std::vector<int64_t> worker_freeze_us;  // when each worker thread froze
  bool operator==(const Frozen&) const = default;
};

struct HandedFd {
  std::string tag;
  std::string state;
  uint64_t id = 0;     // the socket's inode
  bool early = false;  // in FdBatch: refers to an EarlyFds socket by id; no fd attached
  /// In FdBatch (protocol 6): `state` is empty and the state travels in a sealed memfd,
  /// attached right after the socket's own fd (or alone, for an early socket).
  bool state_fd = false;
  uint16_t worker = 0;  // the worker thread that served it; 0: the main thread
  bool operator==(const HandedFd&) const = default;
};

struct FdBatch {
  std::vector<HandedFd> fds;
  bool operator==(const FdBatch&) const = default;
  /// The fds attached to this message: one per entry that is not `early`, and one per
  /// state that travels in a memfd.
  size_t attached() const {
    size_t n = 0;
    for (const HandedFd& f : fds) n += size_t{!f.early} + size_t{f.state_fd};
    return n;
  }
};

struct EarlyFds {
  std::vector<HandedFd> fds;  // one attached fd per entry
  bool operator==(const EarlyFds&) const = default;
};

/// Shadow probes evaluated by the receiving side of a stream (docs/protocol.md, "Shadow
/// verification"), with the first few discrepancies, shortened.
struct ProbeTally {
  uint64_t evaluated = 0;
  uint64_t mismatched = 0;
  std::vector<std::string> discrepancies;
  bool operator==(const ProbeTally&) const = default;
};

struct Prepared {
  uint64_t applied_lsn = 0;
  uint32_t fds_received = 0;
  ProbeTally probes;  // protocol 7: every probe up to the final LSN
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
  uint64_t probes_sent = 0;  // shadow probes mirrored into the stream
  bool operator==(const Timings&) const = default;
};

struct Commit {
  uint64_t generation = 0;
  Timings timings;
  /// Probation (protocol 5): the window during which this process stands by; 0 = none,
  /// the sender exits once the receiver serves.
  uint32_t probation_ms = 0;
  /// Protocol 7, with probation: the key of the state digest at the cut (both 0: none).
  uint64_t digest_k0 = 0, digest_k1 = 0;
  bool operator==(const Commit&) const = default;
};

struct Abort {
  std::string reason;
  bool operator==(const Abort&) const = default;
};

/// A section as a process writes its deltas: `id` is its index in that process's registry.
struct SectionVersion {
  std::string name;
  uint32_t version = 0;
  bool operator==(const SectionVersion&) const = default;
};

struct Serving {
  int32_t pid = 0;
  /// Probation: the reverse delta stream starts after this LSN of the sender's log, and
  /// its records name `sections` by index.
  uint64_t reverse_start_lsn = 0;
  std::vector<SectionVersion> sections;
  bool operator==(const Serving&) const = default;
};

/// Successor -> standby during probation: a planned rollback starts; the handoff then
/// runs backwards (EARLY_FDS, FROZEN, FD_BATCH, PREPARED, COMMIT, SERVING), no checkpoint.
struct Rollback {
  std::string reason;
  bool operator==(const Rollback&) const = default;
};

/// Successor -> standby: probation is over (window ended or promoted); the standby exits.
struct Promote {
  std::string reason;
  bool operator==(const Promote&) const = default;
};

struct Progress {
  uint64_t applied_lsn = 0;
  uint32_t early_fds = 0;
  ProbeTally probes;  // protocol 7

  bool operator==(const Progress&) const = default;
};

/// One section's state digest at the cut, hashed as schema version `version`.
struct SectionDigest {
  std::string name;
  uint32_t version = 0;
  uint64_t sum = 0;
  uint64_t entries = 0;
  bool operator==(const SectionDigest&) const = default;
};

/// Protocol 7, standby -> successor during probation: the reverse probes it evaluated,
/// its verdict on them (non-empty: roll back, and why), and, once computed, its digest of
/// every section at the cut.
struct ShadowReport {
  ProbeTally probes;
  std::string verdict;
  bool digest_done = false;
  std::vector<SectionDigest> digests;
  bool operator==(const ShadowReport&) const = default;
};

using Message =
    std::variant<Hello, Welcome, CheckpointReady, Restored, Frozen, FdBatch, Prepared, Commit,
                 Abort, Serving, Progress, EarlyFds, Rollback, Promote, ShadowReport>;

/// "HELLO", "WELCOME", ... for logs and errors.
std::string_view message_name(const Message& m);

}  // namespace baton::handoff
