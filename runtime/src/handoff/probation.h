// Probation (docs/protocol.md, "Probation"): after COMMIT the old process stands by, fed
// by a reverse delta stream, until the window ends or the new one is rolled back. Two
// machines, one per side, with no I/O, like machines.h: the successor's (it serves and
// streams its writes back) and the standby's (it applies them and takes over on a crash).
// A planned rollback is the ordinary handoff run backwards, so each side embeds the
// other side's machine for it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/fd.h"
#include "baton/result.h"
#include "handoff/machines.h"
#include "handoff/messages.h"

namespace baton::handoff {

/// How often a successor on probation asks for its health verdict.
inline constexpr int64_t kHealthIntervalUs = 100'000;
/// A standby that hears nothing past the end of its window plus this exits on its own.
inline constexpr int64_t kStandbyGraceUs = 10'000'000;
/// How long past its end a window is held open for a verdict still on its way (the state
/// digest at the cut); well inside kStandbyGraceUs, so the standby is still there.
inline constexpr int64_t kVerdictGraceUs = 5'000'000;

// ---------------------------------------------------------------- successor side

enum class ProbationPhase { kOn, kRollingBack, kOver };
std::string_view to_string(ProbationPhase phase);

/// What a successor on probation needs from the world. The IncumbentEnv half drives a
/// planned rollback: its "successor" is the standby (kill_successor() ends the link, it
/// does not kill), its deltas are the reverse stream, and it has no checkpoint.
class ProbationEnv : public IncumbentEnv {
 public:
  /// The server's verdict, asked every kHealthIntervalUs: empty when healthy.
  virtual std::string health() = 0;
  /// Probation is over and the successor keeps serving: send PROMOTE with `reason`, stop
  /// the reverse stream and close the link to the standby.
  virtual void end_probation(std::string_view reason, bool tell_standby) = 0;
  /// SHADOW from the standby: its reverse probes and digest. Returns why to roll back
  /// ("" to go on).
  virtual std::string on_shadow(const ShadowReport& report) { return report.verdict; }
  /// A verdict that only needs time is still coming (both state digests, compared): the
  /// window's end waits for it, at most kVerdictGraceUs.
  virtual bool verdict_pending() { return false; }
};

class ProbationMachine {
 public:
  /// `generation` is the successor's; a rollback commits generation + 1.
  ProbationMachine(ProbationEnv& env, uint64_t generation, int64_t window_us, LagPolicy lag,
                   Timeouts timeouts);

  ProbationPhase phase() const { return phase_; }
  /// The protocol version chosen when the standby handed over: a rollback speaks it.
  void set_peer_protocol(uint32_t version) { peer_protocol_ = version; }
  /// Microseconds left in the window (0 once over).
  int64_t remaining_us() const;
  /// Why probation ended, once over.
  const std::string& outcome() const { return outcome_; }
  /// The planned rollback, while or after it runs.
  const IncumbentMachine* rollback_handoff() const { return handoff_ ? &*handoff_ : nullptr; }

  /// An operator or the health check asks to go back to the standby.
  Result<void> rollback(std::string reason);
  /// An operator ends probation early: the standby exits, the successor serves on.
  Result<void> promote(std::string reason);
  /// A message from the standby.
  void on_message(const Message& m);
  /// The control channel to the standby closed, or the standby exited.
  void on_standby_gone(std::string_view why);
  /// Pumps the reverse stream, asks for health, watches the window and lag.
  void tick();

 private:
  void over(std::string reason, bool tell_standby);
  void after_handoff();

  ProbationEnv& env_;
  LagPolicy lag_;
  uint32_t peer_protocol_ = kProtocolVersion;
  Timeouts timeouts_;
  uint64_t generation_;
  ProbationPhase phase_ = ProbationPhase::kOn;
  int64_t ends_at_us_;
  bool held_ = false;  // the window ended and waits for a verdict
  int64_t next_health_us_;
  std::string outcome_;
  std::optional<IncumbentMachine> handoff_;
};

// ---------------------------------------------------------------- standby side

enum class StandbyPhase { kStandingBy, kRollingBack, kServing, kExited };
std::string_view to_string(StandbyPhase phase);

/// What the standby needs from the world. The SuccessorEnv half is the receiving end of a
/// planned rollback (restore() and begin_reverse_stream() are never called).
class StandbyEnv : public SuccessorEnv {
 public:
  /// Keeps a socket the successor accepted during probation, for a crash rollback.
  virtual void hold(UniqueFd fd, std::string_view tag) = 0;
  /// Crash: reads the reverse stream to its end and applies every whole frame; returns
  /// the last LSN applied. A trailing partial frame was never acknowledged to a client.
  virtual Result<uint64_t> drain_deltas() = 0;
  /// Crash rollback: serve now from the sockets held (listeners on; established
  /// connections closed, as docs/protocol.md says), and record `reason`.
  virtual void take_back(std::string_view reason) = 0;
  /// Probation is over: exit without serving.
  virtual void exit_standby(std::string_view reason) = 0;
  virtual void log(std::string_view line) = 0;
};

class StandbyMachine {
 public:
  /// `generation` is the successor's (the one on probation).
  StandbyMachine(StandbyEnv& env, int32_t pid, uint64_t generation, int64_t window_us,
                 Timeouts timeouts);

  StandbyPhase phase() const { return phase_; }
  int64_t remaining_us() const;
  /// The reason the successor gave for a planned rollback.
  const std::string& rollback_reason() const { return rollback_reason_; }
  /// A message from the successor, with the fds that came with it (owned).
  void on_message(const Message& m, std::vector<UniqueFd> fds);
  /// The successor exited (its pidfd), for any reason, described by `why`.
  void on_successor_gone(std::string_view why);
  /// The control channel closed. A successor that promotes says PROMOTE first, so this
  /// means it is dying: the pidfd follows. If it does not within a second, exit.
  void on_channel_closed();
  /// Applies arrived deltas and watches the deadlines.
  void tick();

 private:
  void crash_rollback(std::string why);
  void exit(std::string reason, bool tell_successor);
  void after_handoff();

  StandbyEnv& env_;
  int32_t pid_;
  uint64_t generation_;
  Timeouts timeouts_;
  StandbyPhase phase_ = StandbyPhase::kStandingBy;
  int64_t ends_at_us_;
  std::optional<int64_t> channel_closed_at_us_;
  std::string rollback_reason_;
  std::optional<SuccessorMachine> handoff_;
};

}  // namespace baton::handoff
