// The upgrade protocol as two state machines, one per side, apart from all I/O. Each
// consumes events (messages, ticks, a peer going away) and acts through an injected
// environment, so every transition is unit-tested without processes
// (tests/handoff/machines_test.cc). docs/protocol.md is the specification.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "baton/fd.h"
#include "baton/result.h"
#include "baton/runtime.h"
#include "handoff/messages.h"

namespace baton::handoff {

/// A socket the server hands over at freeze: a listener or an established connection,
/// with the server's own label and opaque per-connection bytes.
struct HandoffSocket {
  int fd = -1;
  std::string tag;
  std::string state;
  uint64_t id = 0;     // its inode: matches a socket sent early to itself at the freeze
  bool early = false;  // successor: it came in EARLY_FDS, ahead of the freeze
};

/// A section as the incumbent writes it.
struct SectionVersion {
  std::string name;
  uint32_t version = 0;
};

using baton::LagPolicy;
using baton::Timeouts;

/// One upgrade's line in the event log (docs/protocol.md, "Timeline").
struct TimelineRecord {
  uint64_t generation = 0;
  std::string outcome;  // "committed" or "aborted"
  std::string reason;
  int64_t spawn_us = 0, checkpoint_us = 0, catchup_us = 0, blackout_us = 0, total_us = 0;
  uint64_t checkpoint_bytes = 0, deltas = 0, fds = 0;
  /// One JSON object on one line, no trailing newline.
  std::string to_json() const;
};

/// Escapes `s` for use inside a JSON string.
std::string json_escape(std::string_view s);

// ---------------------------------------------------------------- incumbent

enum class IncumbentPhase {
  kIdle,
  kAwaitHello,
  kCheckpointing,
  kCatchUp,
  kAwaitPrepared,
  kAwaitServing,
  kCommitted

};
std::string_view to_string(IncumbentPhase phase);

/// What the incumbent's machine needs from the world.
class IncumbentEnv {
 public:
  virtual ~IncumbentEnv() = default;
  virtual int64_t now_us() = 0;  // CLOCK_MONOTONIC
  virtual Result<void> spawn_successor() = 0;
  /// SIGKILL and reap the successor, if any. Returns only once it is gone.
  virtual void kill_successor() = 0;
  virtual Result<void> send(const Message& m, std::span<const int> fds) = 0;
  virtual std::vector<SectionVersion> sections() = 0;
  virtual Result<void> checkpoint_begin() = 0;  // L0: deltas start to be captured
  virtual Result<bool> checkpoint_step() = 0;   // one bounded slice; true when done
  /// Seals the checkpoint; `fd` is the segment to send.
  virtual Result<CheckpointReady> checkpoint_finish(int* fd) = 0;
  /// Ends the capture and frees the segment (abort path). Idempotent.
  virtual void checkpoint_drop() = 0;
  virtual Result<void> pump_deltas() = 0;  // moves captured frames towards the stream
  virtual uint64_t backlog_bytes() = 0;    // captured but not yet in the socket
  virtual uint64_t last_lsn() = 0;
  virtual uint64_t deltas_sent() = 0;
  /// Sockets to hand over ahead of the freeze (the server keeps serving them); may be none.
  virtual std::vector<HandoffSocket> early_sockets() = 0;
  /// Stop accepting and reading; keep every fd open; return them all.
  virtual std::vector<HandoffSocket> freeze() = 0;
  virtual void unfreeze() = 0;
  virtual void throttle(bool on) = 0;
  /// COMMIT is sent: never touch the handed fds again; stop.
  virtual void committed() = 0;
  virtual void log(std::string_view line) = 0;
  virtual void timeline(const TimelineRecord& record) = 0;
};

class IncumbentMachine {
 public:
  IncumbentMachine(IncumbentEnv& env, uint64_t generation, LagPolicy lag = {},
                   Timeouts timeouts = {})
      : env_(env), generation_(generation), lag_(lag), timeouts_(timeouts) {}

  IncumbentPhase phase() const { return phase_; }
  uint64_t generation() const { return generation_; }
  /// The reason of the last abort, if any.
  const std::string& last_abort() const { return last_abort_; }

  /// SIGUSR2 or batonctl. While an upgrade runs, refuses (kState) and logs it.
  Result<void> request_upgrade();
  /// A message from the successor.
  void on_message(const Message& m);
  /// The successor exited or closed the control channel.
  void on_successor_gone(std::string_view why);
  /// Advances slices, the stream and deadlines. Call every loop turn during an upgrade.
  void tick();

 private:
  void on_hello(const Hello& h);
  Result<void> send_early();
  void freeze();
  void abort(std::string reason, bool tell_successor = true);

  IncumbentEnv& env_;
  uint64_t generation_;
  LagPolicy lag_;
  Timeouts timeouts_;
  IncumbentPhase phase_ = IncumbentPhase::kIdle;
  Timings t_;
  int64_t deadline_us_ = 0;
  int64_t phase_start_us_ = 0;
  std::optional<int64_t> restored_at_us_;
  bool frozen_ = false;
  bool throttled_ = false;
  uint64_t final_lsn_ = 0;
  uint64_t acked_lsn_ = 0;  // the successor's last PROGRESS
  uint32_t fd_count_ = 0;
  bool early_sent_ = false;
  std::unordered_map<uint64_t, int> early_;  // id -> fd of the sockets sent early
  uint32_t early_acked_ = 0;                 // ... that the successor has confirmed
  std::string last_abort_;
};

// ---------------------------------------------------------------- successor

enum class SuccessorPhase { kHello, kAwaitCheckpoint, kCatchUp, kPrepared, kServing, kFailed };
std::string_view to_string(SuccessorPhase phase);

/// What the successor's machine needs from the world.
class SuccessorEnv {
 public:
  virtual ~SuccessorEnv() = default;
  virtual int64_t now_us() = 0;
  virtual Result<void> send(const Message& m) = 0;
  virtual std::vector<SectionRange> readable_sections() = 0;
  /// Restores every section from the segment `fd`.
  virtual Result<Restored> restore(UniqueFd fd) = 0;
  /// Applies whatever delta frames have arrived; returns the last applied LSN.
  virtual Result<uint64_t> replay_available() = 0;
  /// A socket sent ahead of the freeze: serve() will hand it over again (same fd) unless
  /// it is withdrawn first. It must not be read or written before.
  virtual void early_socket(int fd, std::string_view tag) = 0;
  /// The incumbent closed that early socket before its freeze; the machine closes the fd.
  virtual void early_socket_withdrawn(int fd) = 0;
  /// Takes over: serve `sockets`. `incumbent_gone` when no COMMIT came (takeover).
  virtual void serve(std::vector<HandoffSocket> sockets, const Commit& commit,
                     bool incumbent_gone) = 0;
  /// The upgrade failed on this side: exit without serving.
  virtual void fail(std::string_view reason) = 0;
};

class SuccessorMachine {
 public:
  SuccessorMachine(SuccessorEnv& env, int32_t pid, Timeouts timeouts = {})
      : env_(env), pid_(pid), timeouts_(timeouts) {}
  ~SuccessorMachine();

  SuccessorPhase phase() const { return phase_; }
  /// Sends HELLO.
  void start();
  /// A message from the incumbent, with the fds that came with it (owned).
  void on_message(const Message& m, std::vector<UniqueFd> fds);
  /// The control channel closed: the incumbent is gone.
  void on_incumbent_gone();
  /// Replays arrived deltas and checks deadlines.
  void tick();

 private:
  void maybe_prepare();
  void fail(std::string reason, bool tell_incumbent = true);

  SuccessorEnv& env_;
  int32_t pid_;
  Timeouts timeouts_;
  SuccessorPhase phase_ = SuccessorPhase::kHello;
  int64_t deadline_us_ = 0;
  uint64_t generation_ = 0;
  std::optional<Frozen> frozen_;
  uint64_t applied_lsn_ = 0;
  uint64_t reported_lsn_ = 0;
  int64_t reported_at_us_ = 0;

  std::vector<HandoffSocket> sockets_;                 // fds owned: closed unless handed to serve()
  std::unordered_map<uint64_t, HandoffSocket> early_;  // by id; fds owned likewise
  uint32_t early_received_ = 0;

  Commit commit_;
};

}  // namespace baton::handoff
