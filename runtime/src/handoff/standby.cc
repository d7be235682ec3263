// Standby: the reverse stream, the held sockets, and both kinds of rollback's I/O.
#include "handoff/standby.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace baton {

Standby::Standby(Host& host, StandbyStart start)
    : host_(host),
      successor_pid_(start.successor_pid),
      pidfd_(std::move(start.pidfd)),
      control_(std::move(start.control)),
      stream_(std::move(start.stream)),
      machine_(*this, ::getpid(), start.successor_generation, int64_t{start.probation_ms} * 1000,
               host.options.timeouts),
      started_us_(monotonic_us()) {
  for (auto& [fd, tag] : start.held) hold(std::move(fd), tag);
  host_.shadow.reset();
  host_.shadow.sender = "the successor";
  host_.shadow.evaluator = "the standby";
  Result<void> r = follow(start.serving);
  if (r.ok() && (start.digest_key.k0 != 0 || start.digest_key.k1 != 0)) {
    // The state is the cut's until the first reverse frame: the digest starts here.
    if (auto d = host_.shadow.digest_begin(host_.registry, start.digest_key); !d.ok()) {
      host_.shadow.digest_outcome = "not computed: " + d.error().message();
      host_.say("state digest at the cut: " + d.error().to_string());
    }
  }
  if (r.ok()) r = host_.watch(control_.fd());
  // Not the stream: a wake-up per frame (one per loop turn of a busy successor) cost the
  // successor's clients CPU on two cores; service() every millisecond reads it in batches.
  if (r.ok()) r = host_.watch(pidfd_.get());
  if (!r.ok()) {
    // The successor serves either way; without a standby it simply has no fallback.
    (void)control_.send(handoff::Abort{"the standby cannot follow: " + r.error().to_string()});
    exit_standby("cannot follow the successor: " + r.error().to_string());
    return;
  }
  host_.say("standing by for generation " + std::to_string(start.successor_generation) + " (pid " +
            std::to_string(successor_pid_) + ") for " + std::to_string(start.probation_ms) +
            " ms, holding " + std::to_string(held_.size()) + " sockets");
}

Standby::~Standby() {
  drop_held();
  if (control_.open()) host_.unwatch(control_.fd());
  if (pidfd_) host_.unwatch(pidfd_.get());
}

void Standby::drop_held() {
  for (auto& [fd, h] : held_) host_.unwatch(fd);
  held_.clear();
}

Result<void> Standby::follow(const handoff::Serving& serving) {
  if (!stream_) return Error(ErrorKind::kState, "no reverse stream");
  std::vector<Section*> by_peer_id;
  for (const handoff::SectionVersion& v : serving.sections) {
    Section* s = host_.registry.find(v.name);
    if (s == nullptr) {
      return Error(ErrorKind::kVersion, "the successor writes section '" + v.name +
                                            "', which this build does not register");
    }
    BATON_TRY(s->set_peer_version(v.version));
    by_peer_id.push_back(s);
  }
  DeltaReplayer replayer(std::move(by_peer_id), serving.reverse_start_lsn);
  // Reverse probes: the old version evaluates the new one's reads at their place.
  replayer.on_probe([this](const DeltaView& d) { host_.shadow.evaluate(d); });
  stream_->receive_into(std::move(replayer));
  return ok();
}

void Standby::tick() {
  machine_.tick();
  if (machine_.phase() != handoff::StandbyPhase::kStandingBy) return;
  if (host_.shadow.digest_running() && host_.shadow.digest_step()) {
    host_.say("state digest at the cut " + host_.shadow.digest_outcome);
  }
  report_shadow();
}

// SHADOW to the successor: at once for a new mismatch, a verdict or a finished digest,
// else at most every 100 ms while probes come in.
void Standby::report_shadow() {
  if (!control_.open()) return;
  const handoff::ProbeTally& t = host_.shadow.tally();
  const std::string verdict = verdict_sent_ ? "" : host_.shadow.verdict("the standby");
  const bool digest_ready =
      !digest_sent_ && !host_.shadow.digest_running() && !host_.shadow.digests().empty();
  const int64_t now = monotonic_us();
  const bool news = t.evaluated != reported_evaluated_ &&
                    (now - reported_at_us_ >= 100'000 || t.mismatched != reported_mismatched_);
  if (verdict.empty() && !digest_ready && !news) return;
  handoff::ShadowReport r{t, verdict, digest_ready, {}};
  if (digest_ready) r.digests = host_.shadow.digests();
  if (auto s = control_.send(r); !s.ok()) {
    host_.say("reporting shadow probes to the successor: " + s.error().to_string());
    return;
  }
  if (!verdict.empty()) {
    verdict_sent_ = true;
    host_.say("asking the successor to roll back: " + verdict);
  }
  digest_sent_ = digest_sent_ || digest_ready;
  reported_evaluated_ = t.evaluated;
  reported_mismatched_ = t.mismatched;
  reported_at_us_ = now;
}

bool Standby::on_fd(int fd) {
  if (control_.open() && fd == control_.fd()) {
    read_control();
    return true;
  }
  if (pidfd_ && fd == pidfd_.get()) {
    successor_gone_at_us_ = monotonic_us();
    read_control();  // whatever it said last comes first
    int status = 0;
    if (::waitpid(successor_pid_, &status, WNOHANG) != successor_pid_) return true;
    host_.unwatch(pidfd_.get());
    pidfd_.reset();
    successor_pid_ = 0;
    machine_.on_successor_gone(describe_exit(status));
    return true;
  }
  auto it = held_.find(fd);
  if (it == held_.end()) return false;
  // The successor closed this connection (shutdown), or the client did: so do we, or the
  // socket would outlive it, and fds pile up.
  host_.unwatch(fd);
  held_.erase(it);
  return true;
}

void Standby::read_control() {
  for (int i = 0; i < 64 && control_.open(); ++i) {
    handoff::Received in;
    auto status = control_.try_receive(&in);
    if (status.ok() && *status == handoff::ControlChannel::Status::kNone) return;
    if (status.ok() && *status == handoff::ControlChannel::Status::kMessage) {
      machine_.on_message(in.message, std::move(in.fds));
      continue;
    }
    if (!status.ok())
      host_.say("control channel from the successor: " + status.error().to_string());
    host_.unwatch(control_.fd());
    control_.close();
    machine_.on_channel_closed();
    return;
  }
}

void Standby::hold(UniqueFd fd, std::string_view tag) {
  const int raw = fd.get();
  const bool listener = tag == "listener" || is_runtime_listener(tag);
  // Not EPOLLIN: bytes for the successor must not wake us. Hang-ups do.
  if (!listener) (void)host_.watch(raw, EPOLLRDHUP);
  held_[raw] = Held{std::move(fd), std::string(tag)};
}

Result<uint64_t> Standby::drain_deltas() {
  return stream_->receive(host_.options.delta_limit_bytes + kFrameHeaderSize, /*to_end=*/true);
}

Result<uint64_t> Standby::replay_available() {
  return stream_->receive(host_.options.delta_limit_bytes + kFrameHeaderSize);
}

Result<handoff::Restored> Standby::restore(UniqueFd) {
  return Error(ErrorKind::kState, "a standby restores no checkpoint");
}

void Standby::early_socket(int fd, std::string_view tag, unsigned worker) {
  if (host_.early_sink != nullptr) host_.early_sink->early_socket(fd, std::string(tag), worker);
}

void Standby::early_socket_withdrawn(int fd) {
  if (host_.early_sink != nullptr) host_.early_sink->early_socket_withdrawn(fd);
}

void Standby::take_back(std::string_view reason) {
  const int64_t detected = successor_gone_at_us_ ? successor_gone_at_us_ : monotonic_us();
  std::vector<InheritedSocket> sockets;
  std::vector<Held> connections;
  for (auto& [fd, h] : held_) {
    if (is_runtime_listener(h.tag)) {
      (void)host_.adopt_runtime_listener(h.tag, h.fd.release());
    } else if (h.tag == "listener") {
      sockets.push_back({std::move(h.fd), h.tag, "", false});
    } else {
      host_.unwatch(fd);
      connections.push_back(std::move(h));
    }
  }
  held_.clear();
  const size_t closed = connections.size();
  host_.generation += 2;  // past the successor's generation: this is a new handoff
  handoff::TimelineRecord rec;
  rec.generation = host_.generation;
  rec.outcome = "rolled back";
  rec.cause = "crashed";
  rec.reason = std::string(reason) + "; " + std::to_string(closed) +
               " established connections closed, listeners kept";
  rec.fds = sockets.size();
  rec.total_us = monotonic_us() - started_us_;
  rec.blackout_us = detected;  // a start time until resume() subtracts it
  resume(std::move(sockets), std::move(rec));
  // What the successor had read from these connections, or owed them, died with it: close
  // them now rather than leave a client waiting for a reply that will not come. After the
  // listeners serve again: a shutdown sends a FIN (~20 us each; 1,000 took 26 ms).
  for (Held& h : connections) ::shutdown(h.fd.get(), SHUT_RDWR);
}

void Standby::serve(std::vector<handoff::HandoffSocket> sockets, const handoff::Commit& commit,
                    bool incumbent_gone) {
  drop_held();  // the successor sent every socket again; ours were duplicates
  std::vector<InheritedSocket> inherited;
  for (handoff::HandoffSocket& s : sockets) {
    if (host_.adopt_runtime_listener(s.tag, s.fd)) continue;
    const bool early = s.early && host_.early_sink != nullptr;
    inherited.push_back({UniqueFd(s.fd), std::move(s.tag), std::move(s.state), early});
  }
  if (commit.generation != 0) host_.generation = commit.generation;
  handoff::TimelineRecord rec;
  rec.generation = host_.generation;
  rec.outcome = "rolled back";
  rec.reason = incumbent_gone ? "the successor died after PREPARED of its rollback" : "";
  if (incumbent_gone) rec.cause = "crashed";
  rec.catchup_us = commit.timings.catchup_us;
  rec.deltas = commit.timings.deltas;
  rec.fds = sockets.size();
  rec.total_us = monotonic_us() - started_us_;
  rec.blackout_us = commit.timings.freeze_start_us;
  resume(std::move(inherited), std::move(rec));
}

void Standby::resume(std::vector<InheritedSocket> sockets, handoff::TimelineRecord record) {
  host_.idle_priority(false);
  if (host_.hooks) host_.hooks->resume(std::move(sockets));
  const int64_t now = monotonic_us();
  if (record.blackout_us) record.blackout_us = now - record.blackout_us;
  if (record.reason.empty()) record.reason = machine_.rollback_reason();
  if (record.cause.empty()) {
    const auto starts = [&](const char* p) { return record.reason.rfind(p, 0) == 0; };
    record.cause = starts("health check failed")     ? "unhealthy"
                   : starts("shadow probe mismatch") ? "mismatch"
                   : starts("state digest mismatch") ? "mismatch"
                                                     : "requested";
  }
  record.probes_evaluated = host_.shadow.tally().evaluated;
  record.probe_mismatches = host_.shadow.tally().mismatched;
  record.discrepancies = host_.shadow.tally().discrepancies;
  record.digest = record.reason.rfind("state digest mismatch", 0) == 0
                      ? "mismatch: " + record.reason
                      : host_.shadow.digest_outcome;
  host_.announce_serving();
  host_.say("generation " + std::to_string(host_.generation) + " serves again: " + record.reason);
  host_.write_timeline(record);
}

void Standby::exit_standby(std::string_view reason) {
  host_.say("standby exits: " + std::string(reason));
  drop_held();
  // The successor serves on and outlives us: it is not ours to kill.
  successor_pid_ = 0;
  if (pidfd_) host_.unwatch(pidfd_.get());
  pidfd_.reset();
  host_.handed_off = true;
  if (host_.hooks) host_.hooks->committed();
}

}  // namespace baton
