// Standby: the old process during probation. It serves nothing; it applies the reverse
// delta stream (through the registered migrations when the versions differ), keeps a
// duplicate of every socket the successor serves, and takes over when the successor dies
// (crash rollback) or hands everything back (planned rollback). StandbyMachine decides.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "handoff/control_channel.h"
#include "handoff/host.h"
#include "handoff/incumbent.h"
#include "handoff/probation.h"
#include "stream/delta_channel.h"

namespace baton {

class Standby final : public handoff::StandbyEnv {
 public:
  Standby(Host& host, StandbyStart start);
  ~Standby() override;

  handoff::StandbyMachine& machine() { return machine_; }
  /// Serving again after a rollback: the runtime makes this process an incumbent.
  bool serving() const { return machine_.phase() == handoff::StandbyPhase::kServing; }
  bool on_fd(int fd);
  void tick();
  pid_t successor_pid() const { return successor_pid_; }
  /// The successor's pidfd, for reaping it once it has handed back and exits.
  UniqueFd take_pidfd() {
    if (pidfd_) host_.unwatch(pidfd_.get());
    return std::move(pidfd_);
  }

  // --- handoff::StandbyEnv
  void hold(UniqueFd fd, std::string_view tag) override;
  Result<uint64_t> drain_deltas() override;
  void take_back(std::string_view reason) override;
  void exit_standby(std::string_view reason) override;
  void adopt_metrics(const std::vector<std::pair<std::string, double>>& samples) override {
    host_.metrics.adopt(samples);
  }
  void log(std::string_view line) override { host_.say(line); }

  // --- handoff::SuccessorEnv: the receiving end of a planned rollback
  int64_t now_us() override { return monotonic_us(); }
  Result<void> send(const handoff::Message& m) override { return control_.send(m); }
  std::vector<handoff::SectionRange> readable_sections() override { return {}; }
  Result<handoff::Restored> restore(UniqueFd fd) override;
  Result<uint64_t> replay_available() override;
  void early_socket(int fd, std::string_view tag, unsigned worker) override;
  void early_socket_withdrawn(int fd) override;
  void serve(std::vector<handoff::HandoffSocket> sockets, const handoff::Commit& commit,
             bool incumbent_gone) override;
  void fail(std::string_view reason) override {
    host_.say("rollback failed: " + std::string(reason));
  }
  void begin_reverse_stream(handoff::Serving*) override {}

 private:
  // Sets up the reverse stream's replayer; an error names what this process cannot follow.
  Result<void> follow(const handoff::Serving& serving);
  void drop_held();
  void read_control();
  void resume(std::vector<InheritedSocket> sockets, handoff::TimelineRecord record);

  struct Held {
    UniqueFd fd;
    std::string tag;
  };
  Host& host_;
  pid_t successor_pid_;
  UniqueFd pidfd_;
  handoff::ControlChannel control_;
  std::optional<DeltaChannel> stream_;
  handoff::StandbyMachine machine_;
  std::unordered_map<int, Held> held_;  // by fd number
  int64_t started_us_;
  int64_t successor_gone_at_us_ = 0;
  // Shadow verification: what the last SHADOW told the successor.
  uint64_t reported_evaluated_ = 0, reported_mismatched_ = 0;
  int64_t reported_at_us_ = 0;
  bool verdict_sent_ = false;
  bool digest_sent_ = false;
  void report_shadow();
};

}  // namespace baton
