// OnProbation: a successor serving on probation. Every write's delta goes back to the
// standby over the reverse stream before its reply may leave (Runtime::writes_durable()),
// sockets the server accepts reach the standby too, and a planned rollback hands
// everything back (ProbationMachine around an IncumbentMachine).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "handoff/control_channel.h"
#include "handoff/host.h"
#include "handoff/probation.h"
#include "handoff/successor.h"
#include "stream/delta_channel.h"

namespace baton {

class OnProbation final : public handoff::ProbationEnv {
 public:
  OnProbation(Host& host, ProbationStart start);
  ~OnProbation() override;

  handoff::ProbationMachine& machine() { return machine_; }
  /// Over: promoted, the standby gone, or a rollback that aborted (this process serves
  /// on alone) or committed (the server exits).
  bool over() const { return machine_.phase() == handoff::ProbationPhase::kOver; }
  bool on_fd(int fd);
  void tick();
  /// See Runtime::writes_durable().
  bool writes_durable();
  /// See Runtime::accepted().
  void accepted(int fd);
  void report_unhealthy(std::string reason) { unhealthy_ = std::move(reason); }
  /// Reverse-stream lag: bytes captured or in the socket that the standby has not read.
  uint64_t lag_bytes() const;

  // --- handoff::ProbationEnv
  std::string health() override;
  void end_probation(std::string_view reason, bool tell_standby) override;
  std::string on_shadow(const handoff::ShadowReport& report) override;
  bool verdict_pending() override;

  // --- handoff::IncumbentEnv: the planned rollback. Its "successor" is the standby.
  int64_t now_us() override { return monotonic_us(); }
  Result<void> spawn_successor() override;
  void kill_successor() override { drop_link(); }
  Result<void> send(const handoff::Message& m, std::span<const int> fds) override;
  std::vector<handoff::SectionVersion> sections() override { return {}; }
  Result<void> checkpoint_begin() override;
  Result<bool> checkpoint_step() override { return true; }
  Result<handoff::CheckpointReady> checkpoint_finish(int* fd) override;
  void checkpoint_drop() override {}
  Result<void> pump_deltas() override;
  uint64_t backlog_bytes() override { return stream_ ? stream_->backlog_bytes() : 0; }
  uint64_t last_lsn() override { return host_.registry.log().last_lsn(); }
  uint64_t deltas_sent() override { return stream_ ? stream_->deltas_sent() : 0; }
  std::vector<handoff::HandoffSocket> early_sockets() override { return host_.early_sockets(); }
  std::vector<handoff::HandoffSocket> freeze() override {
    freeze_deadline_us_ = monotonic_us() + host_.options.timeouts.freeze_us;
    return host_.freeze_sockets();
  }
  void unfreeze() override;
  void throttle(bool on) override;
  void committed(const handoff::Serving& serving, uint32_t probation_ms) override;
  std::vector<std::pair<std::string, double>> carried_metrics() override {
    return host_.metrics.carried();
  }
  void log(std::string_view line) override { host_.say(line); }
  void timeline(const handoff::TimelineRecord& r) override { host_.write_timeline(r); }
  void drain_control() override {
    if (control_.open()) on_fd(control_.fd());
  }

 private:
  // Sends the sockets accepted since the last call to the standby (EARLY_FDS).
  Result<void> send_accepted();
  // Closes the link to the standby and stops capturing; idempotent.
  void drop_link();

  Host& host_;
  handoff::ControlChannel control_;
  std::optional<DeltaChannel> stream_;
  int64_t started_us_;
  handoff::ProbationMachine machine_;
  std::vector<UniqueFd> accepted_;  // duplicates, until sent
  std::string unhealthy_;
  int64_t freeze_deadline_us_ = 0;  // while frozen for a rollback (see Incumbent)
  // The standby's digest at the cut, once it sent it; compared when ours is done too.
  std::optional<std::vector<handoff::SectionDigest>> standby_digests_;
  bool digest_wanted_ = false;  // COMMIT carried a key and this side's digest began
  bool digest_compared_ = false;
  // Compares the digests once both are there: why to roll back, or "".
  std::string compare_digests();
};

}  // namespace baton
