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
#include "socket/spilled_state.h"

namespace baton::handoff {

/// A socket the server hands over at freeze: a listener or an established connection,
/// with the server's own label and opaque per-connection bytes.
struct HandoffSocket {
  int fd = -1;
  std::string tag;
  std::string state;
  uint64_t id = 0;      // its inode: matches a socket sent early to itself at the freeze
  bool early = false;   // successor: it came in EARLY_FDS, ahead of the freeze
  uint16_t worker = 0;  // the worker thread it belongs to (0: the main thread)
};

using baton::LagPolicy;
using baton::Timeouts;

/// One upgrade's line in the event log (docs/protocol.md, "Timeline").
struct TimelineRecord {
  uint64_t generation = 0;
  std::string outcome;  // "committed", "aborted", "rolled back" or "promoted"
  std::string reason;
  int64_t spawn_us = 0, checkpoint_us = 0, catchup_us = 0, blackout_us = 0, total_us = 0;
  uint64_t checkpoint_bytes = 0, deltas = 0, fds = 0;
  uint32_t probation_ms = 0;  // the window the process that wrote this serves on probation
  /// A rollback's cause, for metrics only: "crashed", "unhealthy" or "requested".
  std::string cause;
  /// Shadow verification: probes mirrored, evaluated by the receiver and mismatched, the
  /// first discrepancies, and the digest's outcome ("" when none ran).
  uint64_t probes_sent = 0, probes_evaluated = 0, probe_mismatches = 0;
  std::vector<std::string> discrepancies;
  std::string digest;
  /// With worker threads: each one's blackout, from its freeze to the successor serving.
  std::vector<int64_t> worker_blackout_us;
  /// One JSON object on one line, no trailing newline.
  std::string to_json() const;
};

/// Escapes `s` for use inside a JSON string.
std::string json_escape(std::string_view s);
/// "2.5 s": a duration in microseconds for an operator's message.
std::string seconds_text(int64_t us);

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
  /// The typed sections among them, with their schemas (for HELLO's check and WELCOME).
  virtual std::vector<SectionSchema> typed_sections() { return {}; }
  /// Worker threads besides the main one (RuntimeOptions::worker_threads).
  virtual uint32_t workers() { return 0; }
  /// After checkpoint_finish(): every worker's sealed segment, in worker order, sent after
  /// the main one; adds their bytes to `*bytes`.
  virtual std::vector<int> worker_segments(uint64_t* bytes) {
    (void)bytes;
    return {};
  }
  /// After freeze(): when each worker thread froze.
  virtual std::vector<int64_t> worker_freeze_us() { return {}; }
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
  /// SERVING arrived after COMMIT: never touch the handed fds again. With
  /// `probation_ms` 0 stop; else stand by for that long (the SERVING message describes the
  /// reverse delta stream).
  virtual void committed(const Serving& serving, uint32_t probation_ms) = 0;
  virtual void log(std::string_view line) = 0;
  virtual void timeline(const TimelineRecord& record) = 0;
  /// The counters FROZEN carries to the successor (Metrics::carried()).
  virtual std::vector<std::pair<std::string, double>> carried_metrics() { return {}; }
  /// Delivers whatever control messages have arrived (through on_message) now. Called
  /// before a deadline aborts, so that an answer already in the socket is not ignored.
  virtual void drain_control() {}
  /// The successor's channels broke but it is not reaped yet: on_successor_gone() follows
  /// with how it exited, so the machine waits for that instead of aborting now.
  virtual bool successor_exiting() { return false; }
  /// A sealed memfd holding a socket's state too large for a control message.
  virtual Result<UniqueFd> spill_state(std::string_view state) { return baton::spill_state(state); }
  /// How an operator recognises socket `fd` (its peer's address), for error messages.
  virtual std::string describe_socket(int fd) { return baton::describe_socket(fd); }
  // --- shadow verification
  /// Mirror sampled reads into the stream (on from the end of the checkpoint to the
  /// freeze, when the successor evaluates probes).
  virtual void mirror_probes(bool on) { (void)on; }
  virtual uint64_t probes_sent() { return 0; }
  /// The successor's latest tally, for status output.
  virtual void probe_tally(const ProbeTally& tally) { (void)tally; }
  /// A fresh random key for the state digest at the cut.
  virtual std::pair<uint64_t, uint64_t> new_digest_key() { return {0, 0}; }
};

class IncumbentMachine {
 public:
  /// `probation_ms`: the window COMMIT offers a successor that speaks protocol 5.
  IncumbentMachine(IncumbentEnv& env, uint64_t generation, LagPolicy lag = {},
                   Timeouts timeouts = {}, uint32_t probation_ms = 0)
      : env_(env),
        generation_(generation),
        lag_(lag),
        timeouts_(timeouts),
        probation_ms_(probation_ms) {}

  IncumbentPhase phase() const { return phase_; }
  uint64_t generation() const { return generation_; }
  /// The reason of the last abort, if any.
  const std::string& last_abort() const { return last_abort_; }

  /// SIGUSR2 or batonctl. While an upgrade runs, refuses (kState) and logs it.
  Result<void> request_upgrade();
  /// A successor on probation hands everything back to its standby: the same handoff
  /// without spawn or checkpoint (the standby is caught up), opened by ROLLBACK. Its
  /// "successor" is the standby; kill_successor() must end the link to it, not kill it.
  /// `peer_protocol`: the version chosen when the standby's build handed over to this one.
  Result<void> begin_rollback(std::string reason, uint32_t peer_protocol = kProtocolVersion);
  bool rolling_back() const { return rolling_back_; }
  /// The protocol version chosen at HELLO for the current or last upgrade.
  uint32_t protocol_version() const { return protocol_version_; }
  /// Shadow verification's policy (RuntimeOptions::shadow): the successor's probes are
  /// judged by it, and `digest` puts a digest key in COMMIT.
  void set_shadow(const ShadowPolicy& policy) { shadow_ = policy; }
  /// A message from the successor.
  void on_message(const Message& m);
  /// The successor exited or closed the control channel.
  void on_successor_gone(std::string_view why);
  /// Advances slices, the stream and deadlines. Call every loop turn during an upgrade.
  void tick();

 private:
  // Throttles the server above LagPolicy::throttle_bytes of backlog (and lifts it below
  // half), aborts above abort_bytes. False once it aborted.
  bool apply_lag_policy();
  void on_hello(const Hello& h);
  Result<void> send_early();
  void freeze();
  void abort(std::string reason, bool tell_successor = true);
  // A deadline of the current phase has passed.
  bool overdue(int64_t now) const;
  void stream_failed(Error e);
  // Takes the successor's probe tally; aborts (true) when it breaks the policy.
  bool take_tally(const ProbeTally& t);
  void mirror(bool on);

  IncumbentEnv& env_;
  uint64_t generation_;
  LagPolicy lag_;
  Timeouts timeouts_;
  IncumbentPhase phase_ = IncumbentPhase::kIdle;
  Timings t_;
  int64_t deadline_us_ = 0;
  int64_t phase_start_us_ = 0;
  std::optional<int64_t> restored_at_us_;
  std::optional<int64_t> restore_heard_us_;  // the last PROGRESS before RESTORED
  bool frozen_ = false;
  bool throttled_ = false;
  uint64_t final_lsn_ = 0;
  uint64_t acked_lsn_ = 0;  // the successor's last PROGRESS
  // WELCOME carried typed sections' schemas: no state goes until the successor's PROGRESS
  // says it accepts them (docs/protocol.md, "Typed sections"), by this deadline.
  bool schemas_pending_ = false;
  int64_t schemas_deadline_us_ = 0;
  uint32_t fd_count_ = 0;
  bool early_sent_ = false;
  std::unordered_map<uint64_t, int> early_;  // id -> fd of the sockets sent early
  uint32_t early_acked_ = 0;                 // ... that the successor has confirmed
  std::string last_abort_;
  uint32_t probation_ms_ = 0;
  uint32_t committed_probation_ms_ = 0;
  uint32_t protocol_version_ = kProtocolVersion;
  bool rolling_back_ = false;
  ShadowPolicy shadow_;
  bool mirroring_ = false;
  ProbeTally tally_;
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
  /// Compares the incumbent's typed sections' schemas (WELCOME) with this build's; an
  /// error names the section and why.
  virtual Result<void> check_schemas(const std::vector<SectionSchema>& theirs) {
    (void)theirs;
    return ok();
  }
  /// Worker threads besides the main one: the incumbent must run as many.
  virtual uint32_t workers() { return 0; }
  /// Restores each worker's segment into its registry (in worker order), before restore().
  virtual Result<void> restore_workers(std::vector<UniqueFd> fds) {
    (void)fds;
    return Error(ErrorKind::kState, "this successor has no worker threads");
  }
  /// FROZEN's worker freeze instants, for the timeline's per-thread blackout.
  virtual void worker_freezes(const std::vector<int64_t>& at_us) { (void)at_us; }
  /// Restores every section from the segment `fd`.
  virtual Result<Restored> restore(UniqueFd fd) = 0;
  /// Applies whatever delta frames have arrived; returns the last applied LSN.
  virtual Result<uint64_t> replay_available() = 0;
  /// A socket sent ahead of the freeze: serve() will hand it over again (same fd) unless
  /// it is withdrawn first. It must not be read or written before.
  virtual void early_socket(int fd, std::string_view tag, unsigned worker) = 0;
  /// The incumbent closed that early socket before its freeze; the machine closes the fd.
  virtual void early_socket_withdrawn(int fd) = 0;
  /// Takes over: serve `sockets`. `incumbent_gone` when no COMMIT came (takeover).
  virtual void serve(std::vector<HandoffSocket> sockets, const Commit& commit,
                     bool incumbent_gone) = 0;
  /// The upgrade failed on this side: exit without serving.
  virtual void fail(std::string_view reason) = 0;
  /// COMMIT offers probation: start capturing every write for the reverse stream and
  /// describe it in `serving` (its start LSN and this process's sections).
  virtual void begin_reverse_stream(Serving* serving) = 0;
  /// Why this process must not start serving (a stop signal is pending), or "".
  virtual std::string stop_requested() { return ""; }
  /// The state a memfd of FD_BATCH carries (spill_state()'s file).
  virtual Result<std::string> read_state(UniqueFd fd) { return read_spilled_state(fd.get()); }
  /// The shadow probes evaluated so far in the replay, for PROGRESS and PREPARED.
  virtual ProbeTally probe_tally() { return {}; }
  /// FROZEN brought the incumbent's counters (Metrics::adopt()).
  virtual void adopt_metrics(const std::vector<std::pair<std::string, double>>& samples) {
    (void)samples;
  }
};

class SuccessorMachine {
 public:
  SuccessorMachine(SuccessorEnv& env, int32_t pid, Timeouts timeouts = {})
      : env_(env), pid_(pid), timeouts_(timeouts) {}
  ~SuccessorMachine();

  SuccessorPhase phase() const { return phase_; }
  /// Sends HELLO.
  void start();
  /// A standby's planned rollback: the state is current already, so the machine starts in
  /// catch-up (replaying the reverse stream) and waits for EARLY_FDS and FROZEN.
  void begin_catch_up(uint64_t generation);
  /// Gives up without telling anyone: early sockets are withdrawn, held fds closed.
  void abandon();
  uint32_t protocol_version() const { return protocol_version_; }
  /// A message from the incumbent, with the fds that came with it (owned).
  void on_message(const Message& m, std::vector<UniqueFd> fds);
  /// The control channel closed: the incumbent is gone.
  void on_incumbent_gone();
  /// Reading the control channel failed otherwise: the incumbent may be alive, so this
  /// fails (telling it, if it can hear) rather than take over.
  void on_channel_error(std::string reason) { fail(std::move(reason)); }
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
  uint32_t protocol_version_ = kProtocolVersion;

  Commit commit_;
};

}  // namespace baton::handoff
