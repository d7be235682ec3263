// The probation machines: a successor serving on probation, and the standby behind it.
// No syscalls here, as in machines.cc: every effect goes through the environment.
#include "handoff/probation.h"

#include <algorithm>
#include <cstdio>

namespace baton::handoff {
std::string_view to_string(ProbationPhase phase) {
  switch (phase) {
    case ProbationPhase::kOn:
      return "probation";
    case ProbationPhase::kRollingBack:
      return "rolling-back";
    case ProbationPhase::kOver:
      return "over";
  }
  return "unknown";
}

std::string_view to_string(StandbyPhase phase) {
  switch (phase) {
    case StandbyPhase::kStandingBy:
      return "standby";
    case StandbyPhase::kRollingBack:
      return "rolling-back";
    case StandbyPhase::kServing:
      return "serving";
    case StandbyPhase::kExited:
      return "exited";
  }
  return "unknown";
}

// ================================================================ successor side

ProbationMachine::ProbationMachine(ProbationEnv& env, uint64_t generation, int64_t window_us,
                                   LagPolicy lag, Timeouts timeouts)
    : env_(env),
      lag_(lag),
      timeouts_(timeouts),
      generation_(generation),
      ends_at_us_(env.now_us() + window_us),
      next_health_us_(env.now_us() + kHealthIntervalUs) {}

int64_t ProbationMachine::remaining_us() const {
  if (phase_ == ProbationPhase::kOver) return 0;
  return std::max<int64_t>(0, ends_at_us_ - env_.now_us());
}

Result<void> ProbationMachine::rollback(std::string reason) {
  if (phase_ == ProbationPhase::kRollingBack) {
    return Error(ErrorKind::kState, "a rollback is already running");
  }
  if (phase_ == ProbationPhase::kOver) {
    return Error(ErrorKind::kState,
                 "no standby to roll back to: probation ended (" + outcome_ + ")");
  }
  phase_ = ProbationPhase::kRollingBack;
  // Probation is never offered to the process rolled back to (it has no older one).
  handoff_.emplace(env_, generation_, lag_, timeouts_, 0);
  auto r = handoff_->begin_rollback(std::move(reason), peer_protocol_);
  after_handoff();
  return r;
}

Result<void> ProbationMachine::promote(std::string reason) {
  if (phase_ != ProbationPhase::kOn) {
    return Error(ErrorKind::kState, phase_ == ProbationPhase::kOver
                                        ? "probation already ended (" + outcome_ + ")"
                                        : std::string("a rollback is running"));
  }
  over(std::move(reason), true);
  return ok();
}

void ProbationMachine::after_handoff() {
  if (phase_ != ProbationPhase::kRollingBack) return;
  if (handoff_->phase() == IncumbentPhase::kCommitted) {
    phase_ = ProbationPhase::kOver;
    outcome_ = "rolled back";
  } else if (handoff_->phase() == IncumbentPhase::kIdle) {
    // Aborted: kill_successor() already ended the link; this process serves on alone.
    phase_ = ProbationPhase::kOver;
    outcome_ = handoff_->last_abort();
  }
}

void ProbationMachine::on_message(const Message& m) {
  const auto* shadow = std::get_if<ShadowReport>(&m);
  if (phase_ == ProbationPhase::kRollingBack) {
    if (shadow != nullptr) return;  // the standby's last report, sent before ROLLBACK reached it
    handoff_->on_message(m);
    return after_handoff();
  }
  if (phase_ == ProbationPhase::kOver) return;
  if (shadow != nullptr) {
    if (std::string why = env_.on_shadow(*shadow); !why.empty()) (void)rollback(why);
    return;
  }
  if (const auto* a = std::get_if<Abort>(&m)) {
    return over("the standby gave up: " + a->reason + "; no rollback is possible now", false);
  }
  env_.log("control message " + std::string(message_name(m)) +
           " from the standby ignored during probation");
}

void ProbationMachine::on_standby_gone(std::string_view why) {
  if (phase_ == ProbationPhase::kRollingBack) {
    handoff_->on_successor_gone(why);
    return after_handoff();
  }
  if (phase_ == ProbationPhase::kOver) return;
  over("the standby is gone (" + std::string(why) + "); no rollback is possible now", false);
}

void ProbationMachine::tick() {
  if (phase_ == ProbationPhase::kRollingBack) {
    handoff_->tick();
    return after_handoff();
  }
  if (phase_ == ProbationPhase::kOver) return;
  if (auto r = env_.pump_deltas(); !r.ok()) {
    return over("the reverse delta stream failed: " + r.error().to_string(), false);
  }
  // Replies wait for their deltas to reach the stream, so a standby that stops reading
  // stalls clients: past the abort bound, probation ends and they are served again.
  if (const uint64_t backlog = env_.backlog_bytes(); backlog > lag_.abort_bytes) {
    return over("the standby fell " + std::to_string(backlog) + " bytes behind (limit " +
                    std::to_string(lag_.abort_bytes) + ")",
                true);
  }
  const int64_t now = env_.now_us();
  if (now >= next_health_us_) {
    next_health_us_ = now + kHealthIntervalUs;
    if (std::string why = env_.health(); !why.empty()) {
      (void)rollback("health check failed: " + why);
      return;
    }
  }
  if (now < ends_at_us_) return;
  // A window that ended before the digests were compared would promote an upgrade the
  // digest exists to catch: hold it open, bounded, and say so.
  if (env_.verdict_pending() && now < ends_at_us_ + kVerdictGraceUs) {
    if (!held_) env_.log("probation window ended; held open for the state digest comparison");
    held_ = true;
    return;
  }
  over("probation window ended", true);
}

void ProbationMachine::over(std::string reason, bool tell_standby) {
  phase_ = ProbationPhase::kOver;
  outcome_ = reason;
  env_.end_probation(reason, tell_standby);
}

// ================================================================ standby side

StandbyMachine::StandbyMachine(StandbyEnv& env, int32_t pid, uint64_t generation, int64_t window_us,
                               Timeouts timeouts)
    : env_(env),
      pid_(pid),
      generation_(generation),
      timeouts_(timeouts),
      ends_at_us_(env.now_us() + window_us + kStandbyGraceUs) {}

int64_t StandbyMachine::remaining_us() const {
  if (phase_ != StandbyPhase::kStandingBy) return 0;
  return std::max<int64_t>(0, ends_at_us_ - kStandbyGraceUs - env_.now_us());
}

void StandbyMachine::on_message(const Message& m, std::vector<UniqueFd> fds) {
  if (phase_ == StandbyPhase::kRollingBack) {
    if (const auto* a = std::get_if<Abort>(&m)) {
      handoff_->abandon();
      return exit("the successor aborted the rollback: " + a->reason, false);
    }
    handoff_->on_message(m, std::move(fds));
    return after_handoff();
  }
  if (phase_ != StandbyPhase::kStandingBy) return;
  if (const auto* p = std::get_if<Promote>(&m)) return exit("promoted: " + p->reason, false);
  if (const auto* a = std::get_if<Abort>(&m)) {
    return exit("the successor ended probation: " + a->reason, false);
  }
  if (const auto* e = std::get_if<EarlyFds>(&m)) {
    if (fds.size() != e->fds.size()) {
      return exit("EARLY_FDS came with " + std::to_string(fds.size()) + " fds, expected " +
                      std::to_string(e->fds.size()),
                  true);
    }
    for (size_t i = 0; i < fds.size(); ++i) env_.hold(std::move(fds[i]), e->fds[i].tag);
    return;
  }
  if (const auto* r = std::get_if<Rollback>(&m)) {
    rollback_reason_ = r->reason;
    env_.log("the successor rolls back to this process: " + r->reason);
    phase_ = StandbyPhase::kRollingBack;
    handoff_.emplace(env_, pid_, timeouts_);
    handoff_->begin_catch_up(generation_ + 1);
    handoff_->tick();
    return after_handoff();
  }
  exit("unexpected " + std::string(message_name(m)) + " while standing by", true);
}

void StandbyMachine::after_handoff() {
  if (handoff_->phase() == SuccessorPhase::kServing) {
    phase_ = StandbyPhase::kServing;
  } else if (handoff_->phase() == SuccessorPhase::kFailed) {
    // The machine told the successor (ABORT); it unfreezes and serves on without us.
    exit("the rollback failed here", false);
  }
}

void StandbyMachine::on_successor_gone(std::string_view why) {
  if (phase_ == StandbyPhase::kRollingBack) {
    if (handoff_->phase() == SuccessorPhase::kPrepared) {
      // It was frozen and had handed everything back: take over what it sent.
      handoff_->on_incumbent_gone();
      return after_handoff();
    }
    handoff_->abandon();
  }
  if (phase_ != StandbyPhase::kStandingBy && phase_ != StandbyPhase::kRollingBack) return;
  crash_rollback("the successor " + std::string(why));
}

void StandbyMachine::on_channel_closed() {
  if (phase_ != StandbyPhase::kStandingBy && phase_ != StandbyPhase::kRollingBack) return;
  if (!channel_closed_at_us_) channel_closed_at_us_ = env_.now_us();
}

void StandbyMachine::tick() {
  if (phase_ == StandbyPhase::kRollingBack) {
    handoff_->tick();
    after_handoff();
  } else if (phase_ == StandbyPhase::kStandingBy) {
    if (auto r = env_.replay_available(); !r.ok()) {
      return exit("the reverse delta stream is unusable (" + r.error().to_string() +
                      "); this standby can no longer follow the successor",
                  true);
    }
  } else {
    return;
  }
  const int64_t now = env_.now_us();
  if (channel_closed_at_us_ && now - *channel_closed_at_us_ > 1'000'000) {
    return exit("the successor closed the link without PROMOTE and is still running", false);
  }
  if (phase_ == StandbyPhase::kStandingBy && now >= ends_at_us_) {
    exit("no PROMOTE " + seconds_text(kStandbyGraceUs) + " past the end of the window", false);
  }
}

void StandbyMachine::crash_rollback(std::string why) {
  std::string reason = std::move(why);
  if (auto r = env_.drain_deltas(); !r.ok()) {
    // The successor is dead: this is the only copy left. Serve it, and say what it lacks.
    reason += "; the reverse stream ended badly (" + r.error().to_string() + ")";
  }
  phase_ = StandbyPhase::kServing;
  env_.take_back(reason);
}

void StandbyMachine::exit(std::string reason, bool tell_successor) {
  if (tell_successor) (void)env_.send(Abort{reason});
  phase_ = StandbyPhase::kExited;
  env_.exit_standby(reason);
}

}  // namespace baton::handoff
