// Incumbent: the serving process's side of an upgrade. It spawns the successor, writes
// the checkpoint on the server's loop, streams deltas, freezes, hands the sockets over and
// commits (IncumbentMachine); with probation it then hands what a standby needs to
// Runtime, which turns this process into one (standby.h).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "baton/checkpoint.h"
#include "handoff/control_channel.h"
#include "handoff/host.h"
#include "handoff/machines.h"
#include "stream/delta_channel.h"

namespace baton {

/// What a committed incumbent keeps for probation: the link to its successor and a
/// duplicate of every socket it handed over.
struct StandbyStart {
  pid_t successor_pid = 0;
  UniqueFd pidfd;
  handoff::ControlChannel control;
  std::optional<DeltaChannel> stream;
  handoff::Serving serving;
  uint32_t probation_ms = 0;
  uint64_t successor_generation = 0;
  std::vector<std::pair<UniqueFd, std::string>> held;  // fd, tag
  DigestKey digest_key;                                // COMMIT's; both 0: no digest at the cut
};

class Incumbent final : public handoff::IncumbentEnv {
 public:
  explicit Incumbent(Host& host);
  ~Incumbent() override;

  handoff::IncumbentMachine& machine() { return machine_; }
  /// Handles `fd` if it is this role's (the control channel or the successor's pidfd).
  bool on_fd(int fd);
  void tick();
  /// After a commit with probation: what the standby needs, once.
  std::optional<StandbyStart> take_standby_start() { return std::exchange(standby_start_, {}); }

  // --- handoff::IncumbentEnv
  int64_t now_us() override { return monotonic_us(); }
  Result<void> spawn_successor() override;
  void kill_successor() override;
  Result<void> send(const handoff::Message& m, std::span<const int> fds) override;
  std::vector<handoff::SectionSchema> typed_sections() override;
  std::vector<handoff::SectionVersion> sections() override;
  Result<void> checkpoint_begin() override;
  Result<bool> checkpoint_step() override;
  /// The main thread's checkpoint has slices left and may write one now: the loop should
  /// not sleep.
  bool checkpoint_may_write() const {
    return writer_.has_value() && !main_checkpointed_ &&
           machine_.phase() == handoff::IncumbentPhase::kCheckpointing &&
           writer_->turn_wait_us() == 0;
  }
  uint32_t workers() override { return host_.workers.count(); }
  std::vector<int> worker_segments(uint64_t* bytes) override {
    return host_.workers.segment_fds(bytes);
  }
  std::vector<int64_t> worker_freeze_us() override { return worker_freeze_us_; }
  Result<handoff::CheckpointReady> checkpoint_finish(int* fd) override;
  void checkpoint_drop() override;
  Result<void> pump_deltas() override;
  uint64_t backlog_bytes() override;
  uint64_t last_lsn() override { return host_.registry.log().last_lsn(); }
  uint64_t deltas_sent() override { return stream_ ? stream_->deltas_sent() : 0; }
  std::vector<handoff::HandoffSocket> early_sockets() override;
  std::vector<handoff::HandoffSocket> freeze() override;
  void unfreeze() override;
  void throttle(bool on) override;
  void committed(const handoff::Serving& serving, uint32_t probation_ms) override;
  std::vector<std::pair<std::string, double>> carried_metrics() override {
    return host_.metrics.carried();
  }
  void log(std::string_view line) override { host_.say(line); }
  void timeline(const handoff::TimelineRecord& r) override;
  void drain_control() override { read_control(); }
  bool successor_exiting() override { return lost_.has_value(); }
  void mirror_probes(bool on) override { host_.shadow.mirror(on); }
  uint64_t probes_sent() override { return host_.shadow.sent(); }
  void probe_tally(const handoff::ProbeTally& t) override { host_.shadow.set_tally(t); }
  std::pair<uint64_t, uint64_t> new_digest_key() override;

 private:
  void read_control();
  // Why the successor stopped answering, for an operator: its own ABORT if it sent one,
  // else how it exited (reaped here), else the I/O error itself.
  Error successor_failure(Error io_error, std::string_view doing,
                          std::optional<std::string>* abort_reason = nullptr);
  std::optional<std::string> pending_abort();

  Host& host_;
  handoff::IncumbentMachine machine_;
  pid_t successor_pid_ = 0;
  UniqueFd pidfd_;
  handoff::ControlChannel control_;
  std::optional<DeltaChannel> stream_;
  std::optional<CheckpointWriter> writer_;
  bool main_checkpointed_ = false;  // writer_ is done; the workers may not be
  std::vector<int64_t> worker_freeze_us_;
  // Workers' early sockets, duplicated on their threads, by id, until the upgrade ends: at
  // the freeze a worker's socket is named by its copy, the fd EARLY_FDS sent.
  std::map<uint64_t, UniqueFd> early_copies_;
  std::optional<Error> worker_freeze_error_;  // a worker that did not freeze in time
  std::optional<Checkpoint> checkpoint_;
  std::vector<handoff::HandoffSocket> frozen_;  // what freeze() returned, for the standby
  int64_t freeze_deadline_us_ = 0;              // while frozen: how long a send may wait for room
  // The successor's channels broke and it was not reapable at once: its pidfd says how it
  // ended, soon; after kLostWaitUs the I/O error is the reason.
  struct Lost {
    std::string why;
    int64_t since_us = 0;
  };
  std::optional<Lost> lost_;
  std::optional<StandbyStart> standby_start_;
  DigestKey digest_key_;  // the last COMMIT's
};

}  // namespace baton
