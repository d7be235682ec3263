// Successor: restore, replay and take the sockets over, around SuccessorMachine.
#include "handoff/successor.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <utility>

#include "baton/syscall.h"
#include "schema_codec.h"

namespace baton {

using handoff::Message;

namespace {

// The versions of a section this build can restore: its own, widened by every
// contiguous migration step down and up.
handoff::SectionRange readable_range(Section& s) {
  handoff::SectionRange r{s.name(), s.schema_version(), s.schema_version(),
                          s.typed_schema() != nullptr ? s.typed_schema()->type_id : 0};
  while (r.min_version > 0 &&
         s.migrations().path(s.name(), r.min_version - 1, s.schema_version()).ok())
    --r.min_version;
  while (s.migrations().path(s.name(), r.max_version + 1, s.schema_version()).ok()) ++r.max_version;
  return r;
}

}  // namespace

Successor::Successor(Host& host, UniqueFd control, UniqueFd stream)
    : host_(host), control_fd_(std::move(control)), stream_fd_(std::move(stream)) {}

Result<std::vector<InheritedSocket>> Successor::take_over(EarlySockets* early) {
  early_sink_ = early;
  BATON_ASSIGN_OR_RETURN(control_, handoff::ControlChannel::create(std::move(control_fd_)));
  BATON_ASSIGN_OR_RETURN(DeltaChannel stream, DeltaChannel::create(std::move(stream_fd_)));
  stream_.emplace(std::move(stream));
  handoff::SuccessorMachine machine(*this, ::getpid(), host_.options.timeouts);
  machine.start();
  while (machine.phase() != handoff::SuccessorPhase::kServing &&
         machine.phase() != handoff::SuccessorPhase::kFailed) {
    // The stream is read only from the catch-up on: deltas that race the checkpoint wait
    // in the socket until the restore is done. Watched before then, its readable fd made
    // this loop spin, and burned most of a core the serving incumbent needed (at 1.2 GB:
    // 80 % of a core for the whole checkpoint).
    const bool replaying = machine.phase() != handoff::SuccessorPhase::kHello &&
                           machine.phase() != handoff::SuccessorPhase::kAwaitCheckpoint;
    pollfd p[2] = {{control_.fd(), POLLIN, 0}, {stream_->fd(), POLLIN, 0}};
    ::poll(p, replaying ? 2 : 1, 10);
    if (p[0].revents != 0) {
      handoff::Received in;
      auto status = control_.try_receive(&in);
      if (!status.ok() && (status.error().kind() == ErrorKind::kCorrupt ||
                           status.error().kind() == ErrorKind::kVersion)) {
        machine.on_message(handoff::Abort{"bad control message: " + status.error().to_string()},
                           {});
      } else if (!status.ok()) {
        // Only a closed channel means the incumbent is gone; taking over on any other
        // error (the incumbent may be alive, about to unfreeze) could leave two serving.
        machine.on_channel_error("the control channel failed: " + status.error().to_string());
      } else if (*status == handoff::ControlChannel::Status::kClosed) {
        machine.on_incumbent_gone();
        continue;
      } else if (*status == handoff::ControlChannel::Status::kMessage) {
        machine.on_message(in.message, std::move(in.fds));
      }
    }
    machine.tick();
  }
  if (machine.phase() == handoff::SuccessorPhase::kFailed) {
    return Error(ErrorKind::kAborted, "upgrade failed: " + failure_);
  }
  if (probation_start_) probation_start_->protocol_version = machine.protocol_version();
  return std::move(inherited_);
}

Result<void> Successor::send(const Message& m) {
  if (std::holds_alternative<handoff::Prepared>(m)) {
    BATON_TRY(host_.failpoints.hit("successor.before_prepared"));
  }
  auto r = control_.send(m);
  if (r.ok() && std::holds_alternative<handoff::Hello>(m)) {
    BATON_TRY(host_.failpoints.hit("successor.after_hello"));
  }
  if (r.ok() && std::holds_alternative<handoff::Prepared>(m)) {
    BATON_TRY(host_.failpoints.hit("successor.after_prepared"));
  }
  return r;
}

std::vector<handoff::SectionRange> Successor::readable_sections() {
  std::vector<handoff::SectionRange> out;
  for (Section* s : host_.registry.sections()) out.push_back(readable_range(*s));
  for (Section* s : host_.workers.sections()) out.push_back(readable_range(*s));
  return out;
}

Result<void> Successor::restore_workers(std::vector<UniqueFd> fds) {
  // Worker threads have not started (take_over() comes first), so this thread may fill
  // their sections.
  worker_restores_.clear();
  RestoreOptions options;
  options.nice = host_.options.restore_nice;
  for (unsigned i = 0; i < fds.size(); ++i) {
    auto r = restore_checkpoint(fds[i].get(), host_.workers.at(i + 1).registry(), options);
    if (!r.ok()) {
      return Error(r.error().kind(),
                   "worker " + std::to_string(i + 1) + "'s checkpoint: " + r.error().message());
    }
    for (const std::string& note : r->notes)
      host_.say("worker " + std::to_string(i + 1) + ": " + note);
    worker_restores_.push_back(std::move(r).value());
  }
  return ok();
}

Result<void> Successor::check_schemas(const std::vector<handoff::SectionSchema>& theirs) {
  for (const handoff::SectionSchema& t : theirs) {
    Section* s = host_.find_section(t.name);
    if (s == nullptr || s->typed_schema() == nullptr) continue;  // HELLO's check names these
    // Another version is a breaking change with migrations, which convert the records.
    if (t.version != s->schema_version()) continue;
    BATON_TRY(serialization::check_schema_compatible(t.name, *s->typed_schema(), t.schema));
  }
  return ok();
}

void Successor::early_socket(int fd, std::string_view tag, unsigned worker) {
  if (early_sink_ != nullptr) early_sink_->early_socket(fd, std::string(tag), worker);
}
void Successor::early_socket_withdrawn(int fd) {
  if (early_sink_ != nullptr) early_sink_->early_socket_withdrawn(fd);
}

Result<handoff::Restored> Successor::restore(UniqueFd fd) {
  RestoreOptions options;
  options.nice = host_.options.restore_nice;
  int64_t reported_us = monotonic_us();
  options.progress = [&](uint64_t, uint64_t) {
    // A restore that hangs here is what the incumbent's silence deadline catches.
    (void)host_.failpoints.hit("successor.restoring");
    const int64_t now = monotonic_us();
    if (now - reported_us < 100'000) return;
    reported_us = now;
    (void)control_.send(handoff::Progress{0, 0, {}});  // a lost report only shortens the leash
  };
  BATON_ASSIGN_OR_RETURN(RestoreResult r, restore_checkpoint(fd.get(), host_.registry, options));
  for (const std::string& note : r.notes) host_.say(note);
  // One stream carries every thread's deltas.
  if (!worker_restores_.empty()) r = merge_restores(std::move(r), worker_restores_);
  DeltaReplayer replayer(r);
  // Shadow probes, evaluated at their place in the replay (docs/protocol.md).
  replayer.on_probe([this](const DeltaView& d) { host_.shadow.evaluate(d); });
  stream_->receive_into(std::move(replayer));
  BATON_TRY(host_.failpoints.hit("successor.after_restore"));
  return handoff::Restored{r.records, r.elapsed_us};
}

Result<uint64_t> Successor::replay_available() {
  return stream_->receive(host_.options.delta_limit_bytes + kFrameHeaderSize);
}

void Successor::begin_reverse_stream(handoff::Serving* serving) {
  DeltaLog& log = host_.registry.log();
  serving->reverse_start_lsn = log.begin_capture();
  for (Section* s : host_.registry.sections()) {
    serving->sections.push_back({s->name(), s->schema_version()});
  }
}

void Successor::serve(std::vector<handoff::HandoffSocket> sockets, const handoff::Commit& commit,
                      bool incumbent_gone) {
  for (handoff::HandoffSocket& s : sockets) {
    if (host_.adopt_runtime_listener(s.tag, s.fd)) continue;
    inherited_.push_back({UniqueFd(s.fd), std::move(s.tag), std::move(s.state), s.early, s.worker});
  }
  if (commit.generation != 0) host_.generation = commit.generation;
  // The timeline is written when the server calls serving(): only then has it taken its
  // sockets back, which is where the blackout honestly ends.
  handoff::TimelineRecord& r = pending_timeline_.emplace();
  r.generation = host_.generation;
  r.outcome = "committed";
  r.reason = incumbent_gone ? "incumbent died after PREPARED; the successor took over" : "";
  const handoff::Timings& t = commit.timings;
  r.spawn_us = t.spawn_us;
  r.checkpoint_us = t.checkpoint_us;
  r.catchup_us = t.catchup_us;
  r.blackout_us = t.freeze_start_us;       // a start time until serving() subtracts it
  r.worker_blackout_us = worker_freezes_;  // start times too
  r.total_us = t.start_us;
  r.checkpoint_bytes = t.checkpoint_bytes;
  r.deltas = t.deltas;
  r.fds = sockets.size();
  r.probes_sent = t.probes_sent;
  r.probes_evaluated = host_.shadow.tally().evaluated;
  r.probe_mismatches = host_.shadow.tally().mismatched;
  r.discrepancies = host_.shadow.tally().discrepancies;
  if (commit.probation_ms != 0 && !incumbent_gone) {
    ProbationStart& p = probation_start_.emplace();
    p.digest_key = {commit.digest_k0, commit.digest_k1};
    p.control = std::move(control_);
    stream_->receive_into(DeltaReplayer(std::vector<Section*>{}, 0));  // nothing comes this way
    p.stream = std::move(stream_);
    p.probation_ms = commit.probation_ms;
    r.probation_ms = commit.probation_ms;
  } else {
    if (commit.probation_ms != 0) host_.registry.log().end_capture();
    control_.close();
  }
  stream_.reset();
  host_.say("generation " + std::to_string(host_.generation) + " took over " +
            std::to_string(inherited_.size()) + " sockets" + (incumbent_gone ? " (takeover)" : "") +
            (probation_start_ ? "; on probation for " + std::to_string(commit.probation_ms) + " ms"
                              : std::string()));
}

std::string Successor::stop_requested() {
  sigset_t pending;
  if (::sigpending(&pending) != 0) return "";
  for (auto [sig, name] : {std::pair{SIGTERM, "SIGTERM"}, std::pair{SIGINT, "SIGINT"}}) {
    if (sigismember(&pending, sig) == 1) {
      return std::string("the successor was sent ") + name +
             " before it served; the incumbent serves on";
    }
  }
  return "";
}

void Successor::fail(std::string_view reason) {
  failure_ = std::string(reason);
  host_.say("upgrade failed: " + failure_);
}

}  // namespace baton
