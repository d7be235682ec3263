// OnProbation: the reverse stream, accepted sockets and the planned rollback's I/O.
#include "handoff/probation_shell.h"
#include "baton/unix_socket.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace baton {

OnProbation::OnProbation(Host& host, ProbationStart start)
    : host_(host),
      control_(std::move(start.control)),
      stream_(std::move(start.stream)),
      started_us_(monotonic_us()),
      machine_(*this, host.generation, int64_t{start.probation_ms} * 1000, host.options.lag,
               host.options.timeouts) {
  machine_.set_peer_protocol(start.protocol_version);
  // Shadow verification during probation: reverse probes for the standby to evaluate, and
  // the digest of the state as it is now, at the cut, before the server serves a request.
  host_.shadow.reset();
  host_.shadow.mirror(start.protocol_version >= handoff::kShadowProtocolVersion);
  if (start.digest_key.k0 != 0 || start.digest_key.k1 != 0) {
    if (auto d = host_.shadow.digest_begin(host_.registry, start.digest_key); !d.ok()) {
      host_.shadow.digest_outcome = "not computed: " + d.error().message();
      host_.say("state digest at the cut: " + d.error().to_string());
    } else {
      digest_wanted_ = true;
    }
  }
  Result<void> r = stream_ ? stream_->send_from(host_.registry.log())
                           : Error(ErrorKind::kState, "no reverse stream");
  if (r.ok()) r = host_.watch(control_.fd());
  if (!r.ok()) {
    // Never leave clients unanswered for a standby that cannot be fed: serve without one.
    machine_.on_standby_gone("the reverse stream could not start: " + r.error().to_string());
  }
}

OnProbation::~OnProbation() { drop_link(); }

bool OnProbation::on_fd(int fd) {
  if (!control_.open() || fd != control_.fd()) return false;
  for (int i = 0; i < 64 && control_.open(); ++i) {
    handoff::Received in;
    auto status = control_.try_receive(&in);
    if (status.ok() && *status == handoff::ControlChannel::Status::kNone) break;
    if (status.ok() && *status == handoff::ControlChannel::Status::kMessage) {
      machine_.on_message(in.message);
      continue;
    }
    machine_.on_standby_gone(status.ok() ? "its control channel closed"
                                         : status.error().to_string());
    break;
  }
  return true;
}

void OnProbation::tick() {
  if (machine_.phase() == handoff::ProbationPhase::kOn) {
    if (auto r = send_accepted(); !r.ok()) {
      machine_.on_standby_gone("sending accepted sockets: " + r.error().to_string());
    }
    if (host_.shadow.digest_running() && host_.shadow.digest_step()) {
      host_.say("state digest at the cut " + host_.shadow.digest_outcome);
      if (std::string why = compare_digests(); !why.empty()) (void)machine_.rollback(why);
    }
  }
  machine_.tick();
}

std::string OnProbation::on_shadow(const handoff::ShadowReport& report) {
  host_.shadow.set_tally(report.probes);  // the standby evaluates this process's probes
  if (report.digest_done && !standby_digests_) standby_digests_ = report.digests;
  if (!report.verdict.empty()) return report.verdict;
  return compare_digests();
}

bool OnProbation::verdict_pending() { return digest_wanted_ && !digest_compared_; }

std::string OnProbation::compare_digests() {
  if (digest_compared_ || !standby_digests_ || host_.shadow.digest_running() ||
      host_.shadow.digests().empty()) {
    return "";
  }
  digest_compared_ = true;
  std::string why = host_.shadow.digest_compare(*standby_digests_, "the standby");
  host_.say("state digest at the cut: " + host_.shadow.digest_outcome);
  return why;
}

bool OnProbation::writes_durable() {
  // A rolling-back successor still owes the standby its last writes: the server's freeze
  // asks too, before it lets replies go.
  if (machine_.phase() == handoff::ProbationPhase::kOver || !stream_) return true;
  if (auto r = send_accepted(); !r.ok()) {
    machine_.on_standby_gone("sending accepted sockets: " + r.error().to_string());
    return true;
  }
  // Only probes pending: no reply waits for them. They go with the next write's frame or
  // at the next tick, batched, instead of a sendmsg and a standby wake-up per loop turn.
  if (stream_->writes_drained()) return true;
  if (auto r = stream_->pump(); !r.ok()) {
    machine_.on_standby_gone("the reverse delta stream failed: " + r.error().to_string());
    return true;  // probation is over: nothing more to wait for
  }
  return stream_->drained();
}

uint64_t OnProbation::lag_bytes() const {
  if (!stream_) return 0;
  int unread = 0;  // bytes in the socket the standby has not read yet
  if (::ioctl(stream_->fd(), SIOCOUTQ, &unread) != 0) unread = 0;
  return stream_->backlog_bytes() + static_cast<uint64_t>(unread);
}

void OnProbation::accepted(int fd) {
  if (machine_.phase() != handoff::ProbationPhase::kOn) return;
  // A duplicate now: the number may be closed and reused before it is sent.
  UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (dup) accepted_.push_back(std::move(dup));
}

Result<void> OnProbation::send_accepted() {
  while (!accepted_.empty()) {
    const size_t n = std::min(accepted_.size(), kMaxFdsPerMessage);
    handoff::EarlyFds batch;
    std::vector<int> fds;
    for (size_t i = 0; i < n; ++i) {
      batch.fds.push_back({"conn", "", 0, false});
      fds.push_back(accepted_[i].get());
    }
    BATON_TRY(control_.send(batch, fds));
    accepted_.erase(accepted_.begin(), accepted_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  return ok();
}

std::string OnProbation::health() {
  if (host_.failpoints.at("successor.unhealthy") == FailPoints::Action::kError) {
    return "fail point successor.unhealthy is armed";
  }
  if (!unhealthy_.empty()) return unhealthy_;
  return host_.hooks ? host_.hooks->health() : std::string();
}

void OnProbation::end_probation(std::string_view reason, bool tell_standby) {
  if (tell_standby && control_.open()) {
    if (auto r = control_.send(handoff::Promote{std::string(reason)}); !r.ok()) {
      host_.say("telling the standby to exit: " + r.error().to_string());
    }
  }
  if (digest_wanted_ && !digest_compared_ && !host_.shadow.digest_running()) {
    host_.shadow.digest_outcome =
        "not compared: the standby's digest did not arrive before "
        "probation ended (this process's: " +
        host_.shadow.digest_outcome + ")";
  }
  drop_link();
  handoff::TimelineRecord rec;
  rec.generation = host_.generation;
  rec.outcome = "promoted";
  rec.reason = std::string(reason);
  rec.total_us = monotonic_us() - started_us_;
  rec.probes_sent = host_.shadow.sent();
  rec.probes_evaluated = host_.shadow.tally().evaluated;
  rec.probe_mismatches = host_.shadow.tally().mismatched;
  rec.discrepancies = host_.shadow.tally().discrepancies;
  rec.digest = host_.shadow.digest_outcome;
  host_.say("probation of generation " + std::to_string(host_.generation) +
            " over: " + std::string(reason));
  host_.write_timeline(rec);
}

void OnProbation::drop_link() {
  host_.shadow.mirror(false);
  host_.shadow.digest_abandon();
  if (control_.open()) host_.unwatch(control_.fd());
  control_.close();
  stream_.reset();
  accepted_.clear();
  host_.registry.log().end_capture();
}

Result<void> OnProbation::spawn_successor() {
  return Error(ErrorKind::kState, "a rollback spawns nothing: the standby runs already");
}

Result<void> OnProbation::checkpoint_begin() {
  return Error(ErrorKind::kState, "a rollback needs no checkpoint");
}

Result<handoff::CheckpointReady> OnProbation::checkpoint_finish(int*) {
  return Error(ErrorKind::kState, "a rollback needs no checkpoint");
}

Result<void> OnProbation::send(const handoff::Message& m, std::span<const int> fds) {
  if (std::holds_alternative<handoff::Commit>(m)) host_.idle_priority(true);  // as Incumbent
  return control_.send(m, fds, freeze_deadline_us_);
}

Result<void> OnProbation::pump_deltas() {
  if (!stream_) return Error(ErrorKind::kState, "the reverse stream is closed");
  return stream_->pump();
}

void OnProbation::unfreeze() {
  freeze_deadline_us_ = 0;
  host_.idle_priority(false);
  host_.pause_listeners(false);
  if (host_.hooks) host_.hooks->unfreeze();
}

void OnProbation::throttle(bool on) {
  if (host_.hooks) host_.hooks->throttle(on);
}

void OnProbation::committed(const handoff::Serving&, uint32_t) {
  freeze_deadline_us_ = 0;
  // The standby serves again: its clients are its own. Leave without touching them.
  host_.release_listeners();
  drop_link();
  // Handed back for good: the pidfile is the standby's now, and must not be removed at
  // our exit (it raced the standby's rewrite and lost the file).
  host_.handed_off = true;
  if (host_.hooks) host_.hooks->committed();
}

}  // namespace baton
