// Successor: a process started by an incumbent's runtime, taking over. take_over() runs
// SuccessorMachine on its own small loop until the process serves or fails; with
// probation it then leaves the link to the standby for probation_shell.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "baton/checkpoint.h"
#include "handoff/control_channel.h"
#include "handoff/host.h"
#include "handoff/machines.h"
#include "stream/delta_channel.h"

namespace baton {

/// What a successor that serves on probation keeps: the link to its standby.
struct ProbationStart {
  handoff::ControlChannel control;
  std::optional<DeltaChannel> stream;
  uint32_t probation_ms = 0;
  uint32_t protocol_version = 0;  // chosen at HELLO: what a rollback to the standby speaks
  DigestKey digest_key;           // COMMIT's; both 0: no digest at the cut
};

class Successor final : public handoff::SuccessorEnv {
 public:
  /// `control` and `stream` are the fds the incumbent passed (BATON_CONTROL_FD/_STREAM_FD).
  Successor(Host& host, UniqueFd control, UniqueFd stream);

  Result<std::vector<InheritedSocket>> take_over(EarlySockets* early);
  /// Set once take_over() succeeded with probation on.
  std::optional<ProbationStart> take_probation_start() {
    return std::exchange(probation_start_, {});
  }
  /// The committed upgrade's timeline, completed when the server serves again.
  std::optional<handoff::TimelineRecord>& pending_timeline() { return pending_timeline_; }

  // --- handoff::SuccessorEnv
  int64_t now_us() override { return monotonic_us(); }
  Result<void> send(const handoff::Message& m) override;
  Result<void> check_schemas(const std::vector<handoff::SectionSchema>& theirs) override;
  std::vector<handoff::SectionRange> readable_sections() override;
  Result<handoff::Restored> restore(UniqueFd fd) override;
  uint32_t workers() override { return host_.workers.count(); }
  Result<void> restore_workers(std::vector<UniqueFd> fds) override;
  void worker_freezes(const std::vector<int64_t>& at_us) override { worker_freezes_ = at_us; }
  Result<uint64_t> replay_available() override;
  void early_socket(int fd, std::string_view tag, unsigned worker) override;
  void early_socket_withdrawn(int fd) override;
  void serve(std::vector<handoff::HandoffSocket> sockets, const handoff::Commit& commit,
             bool incumbent_gone) override;
  void fail(std::string_view reason) override;
  void begin_reverse_stream(handoff::Serving* serving) override;
  /// A stop signal the server blocks (kvd blocks SIGTERM and SIGINT to read them in its
  /// loop) is pending: serving would commit an upgrade only to stop at once.
  std::string stop_requested() override;
  void adopt_metrics(const std::vector<std::pair<std::string, double>>& samples) override {
    host_.metrics.adopt(samples);
  }
  handoff::ProbeTally probe_tally() override { return host_.shadow.tally(); }

 private:
  Host& host_;
  UniqueFd control_fd_, stream_fd_;
  handoff::ControlChannel control_;
  std::optional<DeltaChannel> stream_;
  EarlySockets* early_sink_ = nullptr;
  std::vector<InheritedSocket> inherited_;
  std::vector<RestoreResult> worker_restores_;  // in worker order
  std::vector<int64_t> worker_freezes_;
  std::optional<handoff::TimelineRecord> pending_timeline_;
  std::optional<ProbationStart> probation_start_;
  std::string failure_;
};

}  // namespace baton
