// The incumbent's and the successor's protocol logic. No syscalls here: every effect
// goes through the environment, which is what makes each transition testable.
#include "handoff/machines.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "baton/unix_socket.h"

namespace baton::handoff {
std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string seconds_text(int64_t us) {
  char buf[32];
  if (us < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%lld ms", static_cast<long long>(us / 1000));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s", us / 1e6);
  }
  return buf;
}

std::string_view message_name(const Message& m) {
  static constexpr std::string_view kNames[] = {
      "HELLO",    "WELCOME",   "CHECKPOINT_READY", "RESTORED", "FROZEN",
      "FD_BATCH", "PREPARED",  "COMMIT",           "ABORT",    "SERVING",
      "PROGRESS", "EARLY_FDS", "ROLLBACK",         "PROMOTE",  "SHADOW"};

  static_assert(std::size(kNames) == std::variant_size_v<Message>, "name every message");
  return kNames[m.index()];
}

std::string TimelineRecord::to_json() const {
  char nums[512];
  std::snprintf(nums, sizeof nums,
                "\"spawn_us\":%" PRId64 ",\"checkpoint_us\":%" PRId64 ",\"catchup_us\":%" PRId64
                ",\"blackout_us\":%" PRId64 ",\"total_us\":%" PRId64
                ",\"checkpoint_bytes\":%" PRIu64 ",\"deltas\":%" PRIu64 ",\"fds\":%" PRIu64
                ",\"probation_ms\":%" PRIu32,
                spawn_us, checkpoint_us, catchup_us, blackout_us, total_us, checkpoint_bytes,
                deltas, fds, probation_ms);
  std::string shadow = ",\"probes\":{\"sent\":" + std::to_string(probes_sent) +
                       ",\"evaluated\":" + std::to_string(probes_evaluated) +
                       ",\"mismatched\":" + std::to_string(probe_mismatches) +
                       ",\"discrepancies\":{";
  // An object keyed "1", "2", ... rather than an array: batonctl's flat parser, in builds
  // before this one too, reads nested objects only.
  for (size_t i = 0; i < discrepancies.size(); ++i) {
    shadow +=
        (i ? ",\"" : "\"") + std::to_string(i + 1) + "\":\"" + json_escape(discrepancies[i]) + "\"";
  }
  shadow += "}},\"digest\":\"" + json_escape(digest) + "\"";
  if (!worker_blackout_us.empty()) {  // keyed by worker index, like the discrepancies
    shadow += ",\"worker_blackout_us\":{";
    for (size_t i = 0; i < worker_blackout_us.size(); ++i) {
      shadow += (i ? ",\"" : "\"") + std::to_string(i + 1) +
                "\":" + std::to_string(worker_blackout_us[i]);
    }
    shadow += "}";
  }
  return "{\"generation\":" + std::to_string(generation) + ",\"outcome\":\"" +
         json_escape(outcome) + "\",\"reason\":\"" + json_escape(reason) + "\"," + nums + shadow +
         "}";
}

std::string_view to_string(IncumbentPhase phase) {
  switch (phase) {
    case IncumbentPhase::kIdle:
      return "idle";
    case IncumbentPhase::kAwaitHello:
      return "await-hello";
    case IncumbentPhase::kCheckpointing:
      return "checkpointing";
    case IncumbentPhase::kCatchUp:
      return "catch-up";
    case IncumbentPhase::kAwaitPrepared:
      return "await-prepared";
    case IncumbentPhase::kAwaitServing:
      return "await-serving";

    case IncumbentPhase::kCommitted:
      return "committed";
  }
  return "unknown";
}

std::string_view to_string(SuccessorPhase phase) {
  switch (phase) {
    case SuccessorPhase::kHello:
      return "hello";
    case SuccessorPhase::kAwaitCheckpoint:
      return "await-checkpoint";
    case SuccessorPhase::kCatchUp:
      return "catch-up";
    case SuccessorPhase::kPrepared:
      return "prepared";
    case SuccessorPhase::kServing:
      return "serving";
    case SuccessorPhase::kFailed:
      return "failed";
  }
  return "unknown";
}

// ================================================================ incumbent

Result<void> IncumbentMachine::request_upgrade() {
  if (phase_ != IncumbentPhase::kIdle) {
    std::string why = "upgrade request ignored: generation " + std::to_string(generation_ + 1) +
                      " is already in phase " + std::string(to_string(phase_));
    env_.log(why);
    return Error(ErrorKind::kState, why);
  }
  t_ = Timings{};
  t_.start_us = env_.now_us();
  restored_at_us_.reset();
  restore_heard_us_.reset();
  frozen_ = throttled_ = false;
  final_lsn_ = 0;
  acked_lsn_ = 0;

  fd_count_ = 0;
  early_sent_ = false;
  early_.clear();
  early_acked_ = 0;
  last_abort_.clear();
  rolling_back_ = false;
  mirroring_ = false;
  tally_ = {};
  protocol_version_ = kProtocolVersion;
  phase_ = IncumbentPhase::kAwaitHello;  // before spawning: abort() must see an upgrade
  if (auto r = env_.spawn_successor(); !r.ok()) {
    abort("spawning the successor failed: " + r.error().to_string(), false);
    return std::move(r).error();
  }
  phase_start_us_ = env_.now_us();
  t_.spawn_us = phase_start_us_ - t_.start_us;
  deadline_us_ = phase_start_us_ + timeouts_.hello_us;
  env_.log("upgrade to generation " + std::to_string(generation_ + 1) + ": successor spawned");
  return ok();
}

void IncumbentMachine::on_hello(const Hello& h) {
  // The newest version both speak. A version-4 build sends only protocol_version.
  const uint32_t theirs_min = h.protocol_version;
  const uint32_t theirs_max = std::max(h.max_protocol_version, h.protocol_version);
  const uint32_t chosen = std::min(theirs_max, kProtocolVersion);
  if (chosen < theirs_min || chosen < kMinProtocolVersion) {
    return abort("successor speaks protocol versions " + std::to_string(theirs_min) + ".." +
                 std::to_string(theirs_max) + ", this incumbent speaks " +
                 std::to_string(kMinProtocolVersion) + ".." + std::to_string(kProtocolVersion));
  }
  protocol_version_ = chosen;
  if (shadow_.min_probes != 0 && shadow_.sample_rate > 0 && chosen < kShadowProtocolVersion &&
      !rolling_back_) {
    return abort("successor speaks protocol " + std::to_string(chosen) +
                 ", which has no shadow probes, and this incumbent requires " +
                 std::to_string(shadow_.min_probes) + " (ShadowPolicy::min_probes)");
  }
  for (const SectionVersion& mine : env_.sections()) {
    auto it = std::find_if(h.sections.begin(), h.sections.end(),
                           [&](const SectionRange& r) { return r.name == mine.name; });
    if (it == h.sections.end()) {
      return abort("successor does not register section '" + mine.name +
                   "'; its state would be lost");
    }
    if (mine.version < it->min_version || mine.version > it->max_version) {
      return abort("successor reads section '" + mine.name + "' schema versions " +
                   std::to_string(it->min_version) + ".." + std::to_string(it->max_version) +
                   ", this incumbent writes version " + std::to_string(mine.version));
    }
  }
  if (h.workers != env_.workers()) {
    return abort("successor runs " + std::to_string(h.workers) +
                 " worker threads besides the main one, this incumbent " +
                 std::to_string(env_.workers()) +
                 "; each thread's sections and sockets move to the same thread of the "
                 "successor, so the count must match (change it with a restart)");
  }
  const std::vector<SectionSchema> typed = env_.typed_sections();
  const std::vector<SectionVersion> mine = env_.sections();
  for (const SectionRange& theirs : h.sections) {
    auto it = std::find_if(typed.begin(), typed.end(),
                           [&](const SectionSchema& t) { return t.name == theirs.name; });
    const bool typed_here = it != typed.end();
    if (typed_here == (theirs.type_id != 0)) continue;
    const bool ours_exists = std::any_of(
        mine.begin(), mine.end(), [&](const SectionVersion& v) { return v.name == theirs.name; });
    if (!ours_exists) continue;  // a new section: it starts empty
    return abort("section '" + theirs.name + "' holds " +
                 (typed_here ? "typed records" : "untyped entries") + " here and " +
                 (typed_here ? "untyped entries" : "typed records") +
                 " in the successor; one cannot be read as the other");
  }
  schemas_pending_ = !typed.empty();
  schemas_deadline_us_ = env_.now_us() + timeouts_.hello_us;
  if (auto r = env_.send(Welcome{protocol_version_, generation_ + 1, {}, typed}, {}); !r.ok()) {
    return abort("sending WELCOME: " + r.error().to_string(), false);
  }
  if (auto r = env_.checkpoint_begin(); !r.ok()) {
    return abort("checkpoint could not start: " + r.error().to_string());
  }
  phase_ = IncumbentPhase::kCheckpointing;
  phase_start_us_ = env_.now_us();
}

void IncumbentMachine::on_message(const Message& m) {
  if (phase_ == IncumbentPhase::kIdle || phase_ == IncumbentPhase::kCommitted) {
    env_.log("control message " + std::string(message_name(m)) + " ignored: no upgrade runs");
    return;
  }
  if (const auto* a = std::get_if<Abort>(&m))
    return abort("successor aborted: " + a->reason, false);
  if (const auto* h = std::get_if<Hello>(&m); h && phase_ == IncumbentPhase::kAwaitHello) {
    return on_hello(*h);
  }
  if (std::holds_alternative<Restored>(m) && phase_ == IncumbentPhase::kCatchUp &&
      !restored_at_us_) {
    restored_at_us_ = env_.now_us();
    return tick();
  }
  if (const auto* p = std::get_if<Progress>(&m)) {
    // Informational in any phase: how far the successor has replayed. Before RESTORED,
    // a sign of life from a restore that can take minutes.
    if (phase_ == IncumbentPhase::kCatchUp && !restored_at_us_) restore_heard_us_ = env_.now_us();
    if (phase_ == IncumbentPhase::kCheckpointing) schemas_pending_ = false;  // accepted
    acked_lsn_ = std::max(acked_lsn_, p->applied_lsn);
    early_acked_ = std::max(early_acked_, p->early_fds);
    take_tally(p->probes);
    return;
  }
  if (const auto* p = std::get_if<Prepared>(&m); p && phase_ == IncumbentPhase::kAwaitPrepared) {
    if (p->applied_lsn != final_lsn_ || p->fds_received != fd_count_) {
      return abort("successor prepared at LSN " + std::to_string(p->applied_lsn) + " with " +
                   std::to_string(p->fds_received) + " fds; expected LSN " +
                   std::to_string(final_lsn_) + " with " + std::to_string(fd_count_));
    }
    // Every probe up to the final LSN is in this tally: the last chance to refuse.
    if (take_tally(p->probes)) return;
    // Probation needs a successor that streams its writes back (version 5), and never
    // follows a rollback: the process rolled back to has no older one behind it.
    const bool probation = protocol_version_ >= kProbationProtocolVersion && !rolling_back_;
    Commit c{generation_ + 1, t_, probation ? probation_ms_ : 0};
    if (c.probation_ms != 0 && shadow_.digest && protocol_version_ >= kShadowProtocolVersion) {
      std::tie(c.digest_k0, c.digest_k1) = env_.new_digest_key();
    }
    committed_probation_ms_ = c.probation_ms;
    if (auto r = env_.send(c, {}); !r.ok()) {
      return abort("sending COMMIT: " + r.error().to_string(), false);
    }
    // Still frozen: exit only once the successor confirms it serves. If it dies before
    // SERVING it never touched a socket, and this process can serve on.
    phase_ = IncumbentPhase::kAwaitServing;  // the freeze's deadline still holds
    return;
  }
  if (const auto* s = std::get_if<Serving>(&m); s && phase_ == IncumbentPhase::kAwaitServing) {
    phase_ = IncumbentPhase::kCommitted;
    ++generation_;
    env_.log(std::string(rolling_back_ ? "rollback" : "upgrade") + " to generation " +
             std::to_string(generation_) + " committed" +
             (committed_probation_ms_
                  ? "; standing by for " + seconds_text(committed_probation_ms_ * int64_t{1000})
                  : std::string()));
    env_.committed(*s, committed_probation_ms_);
    return;
  }
  abort("unexpected " + std::string(message_name(m)) + " in phase " +
        std::string(to_string(phase_)));
}

Result<void> IncumbentMachine::begin_rollback(std::string reason, uint32_t peer_protocol) {
  if (phase_ != IncumbentPhase::kIdle) {
    return Error(ErrorKind::kState, "rollback refused: a handoff is already in phase " +
                                        std::string(to_string(phase_)));
  }
  t_ = Timings{};
  t_.start_us = env_.now_us();
  frozen_ = throttled_ = false;
  final_lsn_ = 0;
  acked_lsn_ = 0;  // until the standby's first PROGRESS says how far it has applied
  fd_count_ = 0;
  early_sent_ = false;
  early_.clear();
  early_acked_ = 0;
  last_abort_.clear();
  rolling_back_ = true;
  protocol_version_ = std::min(peer_protocol, kProtocolVersion);  // what the standby speaks
  env_.log("rollback to generation " + std::to_string(generation_ + 1) + ": " + reason);
  // The standby is caught up already: straight to catch-up, as if it had just restored.
  phase_ = IncumbentPhase::kCatchUp;
  phase_start_us_ = env_.now_us();
  restored_at_us_ = phase_start_us_;
  restore_heard_us_.reset();
  deadline_us_ = phase_start_us_ + timeouts_.restored_us;
  if (auto r = env_.send(Rollback{reason}, {}); !r.ok()) {
    abort("sending ROLLBACK: " + r.error().to_string(), false);
    return Error(ErrorKind::kAborted, last_abort_);
  }
  return ok();
}

void IncumbentMachine::on_successor_gone(std::string_view why) {
  if (phase_ == IncumbentPhase::kIdle || phase_ == IncumbentPhase::kCommitted) return;
  abort("successor gone in phase " + std::string(to_string(phase_)) + ": " + std::string(why),
        false);
}

void IncumbentMachine::stream_failed(Error e) {
  // A successor that is dying: its exit status (on_successor_gone) says more than the
  // broken pipe, and comes within milliseconds.
  if (env_.successor_exiting()) return;
  abort(e.to_string());
}

bool IncumbentMachine::overdue(int64_t now) const {
  switch (phase_) {
    case IncumbentPhase::kAwaitHello:
    case IncumbentPhase::kAwaitPrepared:
    case IncumbentPhase::kAwaitServing:
      return now >= deadline_us_;
    case IncumbentPhase::kCatchUp:
      return !restored_at_us_ &&
             (now >= deadline_us_ ||
              (restore_heard_us_ && now - *restore_heard_us_ >= timeouts_.restore_silence_us));
    default:
      return false;
  }
}

bool IncumbentMachine::apply_lag_policy() {
  const uint64_t backlog = env_.backlog_bytes();
  if (backlog > lag_.throttle_bytes && !throttled_) {
    throttled_ = true;
    env_.throttle(true);
    env_.log("delta backlog " + std::to_string(backlog) + " bytes: throttling the server");
  } else if (backlog <= lag_.throttle_bytes / 2 && throttled_) {
    throttled_ = false;
    env_.throttle(false);
  }
  if (backlog > lag_.abort_bytes) {
    abort("delta backlog of " + std::to_string(backlog) + " bytes passed the limit of " +
          std::to_string(lag_.abort_bytes) + ": writes outpace the stream");
    return false;
  }
  return true;
}

void IncumbentMachine::tick() {
  if (phase_ == IncumbentPhase::kIdle || phase_ == IncumbentPhase::kCommitted) return;
  int64_t now = env_.now_us();
  if (overdue(now)) {
    // Read what has arrived before giving up: a SERVING already in the socket means the
    // successor serves, and killing it now would lose the writes it acknowledged.
    const IncumbentPhase before = phase_;
    env_.drain_control();
    if (phase_ != before || !overdue(now = env_.now_us())) return;
  }
  switch (phase_) {
    case IncumbentPhase::kAwaitHello:
      if (now >= deadline_us_) {
        return abort("successor sent no HELLO within " + seconds_text(timeouts_.hello_us));
      }
      return;
    case IncumbentPhase::kCheckpointing: {
      auto done = env_.checkpoint_step();
      if (!done.ok()) return abort("checkpoint failed: " + done.error().to_string());
      if (auto r = env_.pump_deltas(); !r.ok()) return stream_failed(std::move(r).error());
      // The successor reads the stream only once restored, so a paced checkpoint of a
      // busy server is when the backlog grows: the lag policy holds here too.
      if (!apply_lag_policy()) return;
      if (!done.value()) return;
      if (schemas_pending_) {
        if (now < schemas_deadline_us_) return;
        return abort("successor did not accept the typed sections' schemas within " +
                     seconds_text(timeouts_.hello_us) + " of WELCOME");
      }
      int fd = -1;
      auto ready = env_.checkpoint_finish(&fd);
      if (!ready.ok()) return abort("checkpoint failed: " + ready.error().to_string());
      std::vector<int> fds = {fd};
      for (int w : env_.worker_segments(&ready->bytes)) fds.push_back(w);
      ready->worker_segments = static_cast<uint32_t>(fds.size() - 1);
      t_.checkpoint_bytes = ready->bytes;
      acked_lsn_ = ready->start_lsn;
      if (auto r = env_.send(ready.value(), fds); !r.ok()) {
        return abort("sending the checkpoint: " + r.error().to_string(), false);
      }
      t_.checkpoint_us = env_.now_us() - phase_start_us_;
      phase_ = IncumbentPhase::kCatchUp;
      // From here every mutation is in the stream, so the successor's state at a probe's
      // place in it is exactly this process's when it served the read: probes start now.
      mirror(true);
      phase_start_us_ = env_.now_us();
      deadline_us_ = phase_start_us_ + timeouts_.restored_us;
      return;
    }
    case IncumbentPhase::kCatchUp: {
      if (auto r = env_.pump_deltas(); !r.ok()) return stream_failed(std::move(r).error());
      if (!apply_lag_policy()) return;
      const uint64_t backlog = env_.backlog_bytes();
      if (!restored_at_us_) {
        if (now >= deadline_us_) {
          return abort("successor did not restore within " + seconds_text(timeouts_.restored_us));
        }
        if (restore_heard_us_ && now - *restore_heard_us_ >= timeouts_.restore_silence_us) {
          return abort("successor reported no restore progress for " +
                       seconds_text(now - *restore_heard_us_) + " (it restored for " +
                       seconds_text(now - phase_start_us_) +
                       "): taken for hung; it reports about every 100 ms");
        }
        return;
      }
      if (!early_sent_) {
        early_sent_ = true;
        if (auto r = send_early(); !r.ok()) {
          return abort("sending early fds: " + r.error().to_string());
        }
      }
      // Converged when little is left to send AND little is left to apply: deltas in the
      // socket or the successor's inbox would otherwise be replayed inside the freeze.
      const uint64_t unapplied = env_.last_lsn() - std::min(env_.last_lsn(), acked_lsn_);
      // ... and the successor has prepared every early socket, outside the blackout.
      // ... and the successor has evaluated the probes the policy asks for.
      const bool probed = !mirroring_ || tally_.evaluated >= shadow_.min_probes;
      if (backlog <= lag_.converge_bytes && unapplied <= lag_.converge_deltas &&
          early_acked_ >= early_.size() && probed) {
        return freeze();
      }
      if (now - *restored_at_us_ > lag_.converge_within_us) {
        if (!probed) {
          return abort("the successor evaluated " + std::to_string(tally_.evaluated) +
                       " shadow probes within " + seconds_text(lag_.converge_within_us) +
                       " of RESTORED; the policy requires " + std::to_string(shadow_.min_probes) +
                       " (ShadowPolicy::min_probes): too few reads to sample?");
        }
        return abort("deltas did not converge within " + seconds_text(lag_.converge_within_us) +
                     " of RESTORED (backlog " + std::to_string(backlog) + " bytes)");
      }
      return;
    }
    case IncumbentPhase::kAwaitPrepared:
      if (auto r = env_.pump_deltas(); !r.ok()) return stream_failed(std::move(r).error());
      if (now >= deadline_us_) {
        return abort("successor sent no PREPARED within " + seconds_text(timeouts_.freeze_us) +
                     " of the freeze");
      }
      return;
    case IncumbentPhase::kAwaitServing:
      if (now >= deadline_us_) {
        return abort("successor sent no SERVING within " + seconds_text(timeouts_.freeze_us) +
                     " of the freeze");
      }
      return;
    default:
      return;
  }
}

// Sockets go ahead of the freeze, so that inside it only their state moves and the
// successor has already registered them: both cost about a microsecond per socket.
Result<void> IncumbentMachine::send_early() {
  std::vector<HandoffSocket> sockets = env_.early_sockets();
  for (size_t i = 0; i < sockets.size();) {
    EarlyFds batch;
    std::vector<int> fds;
    for (; i < sockets.size() && fds.size() < kMaxFdsPerMessage; ++i) {
      const HandoffSocket& s = sockets[i];
      if (s.id == 0 || early_.count(s.id)) continue;  // no identity: it moves at the freeze
      batch.fds.push_back({s.tag, "", s.id, false, false, s.worker});
      fds.push_back(s.fd);
      early_[s.id] = s.fd;
    }
    if (!fds.empty()) BATON_TRY(env_.send(batch, fds));
  }
  return ok();
}

void IncumbentMachine::mirror(bool on) {
  on = on && protocol_version_ >= kShadowProtocolVersion && !rolling_back_ &&
       shadow_.sample_rate > 0;
  if (on == mirroring_) return;
  if (!on) t_.probes_sent = env_.probes_sent();
  mirroring_ = on;
  env_.mirror_probes(on);
}

bool IncumbentMachine::take_tally(const ProbeTally& t) {
  if (t.evaluated < tally_.evaluated) return false;  // an older report
  tally_ = t;
  env_.probe_tally(tally_);
  if (tally_.mismatched <= shadow_.max_mismatches) return false;
  std::string why = "shadow probe mismatch: " + std::to_string(tally_.mismatched) + " of " +
                    std::to_string(tally_.evaluated) +
                    " probes evaluated by the successor answered differently (tolerated " +
                    std::to_string(shadow_.max_mismatches) + ")";
  if (!tally_.discrepancies.empty()) why += "; first: " + tally_.discrepancies.front();
  abort(std::move(why));
  return true;
}

void IncumbentMachine::freeze() {
  mirror(false);  // probes served inside the freeze: none; those before it are counted
  t_.freeze_start_us = env_.now_us();
  t_.catchup_us = t_.freeze_start_us - phase_start_us_;
  frozen_ = true;
  if (throttled_) {
    throttled_ = false;
    env_.throttle(false);
  }
  std::vector<HandoffSocket> sockets = env_.freeze();
  // The last writes before the freeze become the final frame.
  if (auto r = env_.pump_deltas(); !r.ok()) return stream_failed(std::move(r).error());
  final_lsn_ = env_.last_lsn();
  fd_count_ = static_cast<uint32_t>(sockets.size());
  t_.deltas = env_.deltas_sent();
  t_.fds = fd_count_;
  Frozen f{final_lsn_, fd_count_, t_.freeze_start_us, env_.carried_metrics(),
           env_.worker_freeze_us()};
  if (auto r = env_.send(f, {}); !r.ok()) return abort("sending FROZEN: " + r.error().to_string());
  // Fd batches: at most kMaxFdsPerMessage fds and about half a message of state each. A
  // socket sent early (same id, same fd) moves by reference, without its fd. A state above
  // kInlineStateBytes (a slow reader's unread replies, a huge half-read request) travels
  // in a sealed memfd attached after its socket, when the successor speaks protocol 6.
  const bool spill = protocol_version_ >= kStateFdProtocolVersion;
  size_t i = 0;
  while (i < sockets.size()) {
    FdBatch batch;
    std::vector<int> fds;
    std::vector<UniqueFd> spilled;  // open until the batch is sent
    size_t bytes = 0;
    while (i < sockets.size()) {
      const HandoffSocket& s = sockets[i];
      auto it = s.id != 0 ? early_.find(s.id) : early_.end();
      const bool early = it != early_.end() && it->second == s.fd;
      const bool in_fd = spill && s.state.size() > kInlineStateBytes;
      const size_t size = (in_fd ? 0 : s.state.size()) + s.tag.size() + 32;
      const size_t more_fds = size_t{!early} + size_t{in_fd};
      if (fds.size() + more_fds > kMaxFdsPerMessage || bytes + size >= kMaxMessageBytes / 2) break;
      bytes += size;
      batch.fds.push_back({s.tag, in_fd ? std::string() : s.state, s.id, early, in_fd, s.worker});
      if (!early) fds.push_back(s.fd);
      if (in_fd) {
        auto fd = env_.spill_state(s.state);
        if (!fd.ok()) {
          return abort("keeping the " + std::to_string(s.state.size()) + "-byte state of " +
                       env_.describe_socket(s.fd) + " in a memfd: " + fd.error().to_string());
        }
        fds.push_back(fd->get());
        spilled.push_back(std::move(fd).value());
      }
      ++i;
    }
    if (batch.fds.empty()) {
      return abort("the per-connection state of " + env_.describe_socket(sockets[i].fd) + " is " +
                   std::to_string(sockets[i].state.size()) +
                   " bytes, more than a control message carries, and the successor speaks "
                   "protocol " +
                   std::to_string(protocol_version_) +
                   ", which cannot take it in a memfd (6 can): let that client read its "
                   "replies, or upgrade from a build that speaks protocol 6");
    }
    if (auto r = env_.send(batch, fds); !r.ok()) {
      return abort("sending fds: " + r.error().to_string());
    }
  }
  phase_ = IncumbentPhase::kAwaitPrepared;
  phase_start_us_ = env_.now_us();
  // One deadline for the whole freeze, PREPARED and SERVING included: it bounds what
  // clients wait for a handoff that is stuck (Timeouts::freeze_us).
  deadline_us_ = t_.freeze_start_us + timeouts_.freeze_us;
}

void IncumbentMachine::abort(std::string reason, bool tell_successor) {
  mirror(false);
  if (tell_successor) (void)env_.send(Abort{reason}, {});
  // The successor must be dead before this process touches a handed fd again.
  env_.kill_successor();
  env_.checkpoint_drop();
  if (throttled_) env_.throttle(false);
  const bool was_frozen = frozen_;
  if (frozen_) env_.unfreeze();
  frozen_ = throttled_ = false;
  if (rolling_back_) reason = "rollback failed: " + reason;
  TimelineRecord rec;
  // Clients waited from the freeze until unfreeze() just now: an aborted upgrade's
  // blackout is real too (it used to be reported as 0).
  rec.blackout_us = was_frozen ? env_.now_us() - t_.freeze_start_us : 0;
  rec.generation = generation_ + 1;
  rec.outcome = "aborted";
  rec.reason = reason;
  rec.spawn_us = t_.spawn_us;
  rec.checkpoint_us = t_.checkpoint_us;
  rec.catchup_us = t_.catchup_us;
  rec.total_us = env_.now_us() - t_.start_us;
  rec.checkpoint_bytes = t_.checkpoint_bytes;
  rec.deltas = t_.deltas;
  rec.fds = t_.fds;
  rec.probes_sent = t_.probes_sent;
  rec.probes_evaluated = tally_.evaluated;
  rec.probe_mismatches = tally_.mismatched;
  rec.discrepancies = tally_.discrepancies;
  env_.log(std::string(rolling_back_ ? "rollback" : "upgrade") + " to generation " +
           std::to_string(generation_ + 1) + " aborted: " + reason);
  env_.timeline(rec);
  last_abort_ = std::move(reason);
  phase_ = IncumbentPhase::kIdle;
}

// ================================================================ successor

SuccessorMachine::~SuccessorMachine() {
  for (HandoffSocket& s : sockets_) UniqueFd close_it(s.fd);
  for (auto& [id, s] : early_) UniqueFd close_it(s.fd);
}

void SuccessorMachine::start() {
  Hello h;
  h.pid = pid_;
  h.sections = env_.readable_sections();
  h.workers = env_.workers();
  if (auto r = env_.send(h); !r.ok()) return fail("sending HELLO: " + r.error().to_string(), false);
  phase_ = SuccessorPhase::kHello;
  deadline_us_ = env_.now_us() + timeouts_.hello_us;
}

void SuccessorMachine::on_message(const Message& m, std::vector<UniqueFd> fds) {
  if (phase_ == SuccessorPhase::kServing || phase_ == SuccessorPhase::kFailed) return;
  if (const auto* a = std::get_if<Abort>(&m)) return fail("incumbent aborted: " + a->reason, false);
  const size_t expected_fds =
      std::holds_alternative<CheckpointReady>(m) ? 1 + std::get<CheckpointReady>(m).worker_segments
      : std::holds_alternative<FdBatch>(m)       ? std::get<FdBatch>(m).attached()
      : std::holds_alternative<EarlyFds>(m)      ? std::get<EarlyFds>(m).fds.size()
                                                 : 0;
  if (fds.size() != expected_fds) {
    return fail(std::string(message_name(m)) + " came with " + std::to_string(fds.size()) +
                " fds, expected " + std::to_string(expected_fds));
  }
  if (const auto* w = std::get_if<Welcome>(&m); w && phase_ == SuccessorPhase::kHello) {
    if (w->protocol_version < kMinProtocolVersion || w->protocol_version > kProtocolVersion) {
      return fail("incumbent chose protocol version " + std::to_string(w->protocol_version) +
                  ", this successor speaks " + std::to_string(kMinProtocolVersion) + ".." +
                  std::to_string(kProtocolVersion));
    }
    if (auto r = env_.check_schemas(w->schemas); !r.ok()) return fail(r.error().message());
    if (!w->schemas.empty()) {  // accepted: the incumbent holds the checkpoint until it hears
      if (auto r = env_.send(Progress{0, 0, {}}); !r.ok()) {
        return fail("sending PROGRESS: " + r.error().to_string(), false);
      }
    }
    protocol_version_ = w->protocol_version;
    generation_ = w->generation;
    phase_ = SuccessorPhase::kAwaitCheckpoint;
    return;
  }
  if (std::holds_alternative<CheckpointReady>(m) && phase_ == SuccessorPhase::kAwaitCheckpoint) {
    // The first sign of life of a restore: from here the incumbent expects one about every
    // 100 ms (env_.restore() sends them) and takes a silent successor for hung.
    if (auto r = env_.send(Progress{0, 0, {}}); !r.ok()) {
      return fail("sending PROGRESS: " + r.error().to_string(), false);
    }
    const auto& ready = std::get<CheckpointReady>(m);
    if (ready.worker_segments != env_.workers()) {
      return fail("the incumbent sent checkpoints of " + std::to_string(ready.worker_segments) +
                  " worker threads; this successor runs " + std::to_string(env_.workers()));
    }
    if (ready.worker_segments != 0) {  // the workers' sections first: the stream names them
      std::vector<UniqueFd> workers;
      for (size_t i = 1; i < fds.size(); ++i) workers.push_back(std::move(fds[i]));
      if (auto r = env_.restore_workers(std::move(workers)); !r.ok()) {
        return fail("restore failed: " + r.error().to_string());
      }
    }
    auto restored = env_.restore(std::move(fds[0]));
    if (!restored.ok()) return fail("restore failed: " + restored.error().to_string());
    if (auto r = env_.send(restored.value()); !r.ok()) {
      return fail("sending RESTORED: " + r.error().to_string(), false);
    }
    phase_ = SuccessorPhase::kCatchUp;
    return tick();
  }
  if (const auto* f = std::get_if<Frozen>(&m);
      f && phase_ == SuccessorPhase::kCatchUp && !frozen_) {
    frozen_ = *f;
    env_.worker_freezes(f->worker_freeze_us);
    env_.adopt_metrics(f->metrics);
    frozen_->metrics.clear();
    deadline_us_ = env_.now_us() + timeouts_.freeze_us;
    return tick();
  }
  if (const auto* e = std::get_if<EarlyFds>(&m);
      e && phase_ == SuccessorPhase::kCatchUp && !frozen_) {
    for (size_t i = 0; i < e->fds.size(); ++i) {
      const HandedFd& f = e->fds[i];
      if (f.id == 0 || early_.count(f.id)) {
        return fail("EARLY_FDS carries socket id " + std::to_string(f.id) + " twice or as 0");
      }
      const int fd = fds[i].release();
      early_[f.id] = {fd, f.tag, "", f.id, true, f.worker};
      env_.early_socket(fd, f.tag, f.worker);
    }
    early_received_ += static_cast<uint32_t>(e->fds.size());
    // At once: the incumbent freezes only after this acknowledgement.
    if (auto r = env_.send(Progress{applied_lsn_, early_received_, env_.probe_tally()}); !r.ok()) {
      return fail("sending PROGRESS: " + r.error().to_string(), false);
    }
    return tick();
  }
  if (const auto* b = std::get_if<FdBatch>(&m);
      b && phase_ == SuccessorPhase::kCatchUp && frozen_) {
    size_t next_fd = 0;
    for (const HandedFd& f : b->fds) {
      UniqueFd sock = f.early ? UniqueFd() : std::move(fds[next_fd++]);
      std::string state = f.state;
      if (f.state_fd) {
        auto read = env_.read_state(std::move(fds[next_fd++]));
        if (!read.ok()) {
          return fail("reading the state of socket id " + std::to_string(f.id) +
                      " from its memfd: " + read.error().to_string());
        }
        state = std::move(read).value();
      }
      if (!f.early) {
        sockets_.push_back({sock.release(), f.tag, std::move(state), f.id, false, f.worker});
        continue;
      }
      auto it = early_.find(f.id);
      if (it == early_.end()) {
        return fail("FD_BATCH names early socket id " + std::to_string(f.id) +
                    ", which EARLY_FDS never carried");
      }
      sockets_.push_back({it->second.fd, f.tag, std::move(state), f.id, true, it->second.worker});
      early_.erase(it);
    }
    if (sockets_.size() > frozen_->fd_count) {
      return fail("received " + std::to_string(sockets_.size()) + " fds, FROZEN announced " +
                  std::to_string(frozen_->fd_count));
    }
    return tick();
  }
  if (const auto* c = std::get_if<Commit>(&m); c && phase_ == SuccessorPhase::kPrepared) {
    // The last moment to back out: until SERVING the incumbent can resume.
    if (std::string why = env_.stop_requested(); !why.empty()) return fail(why);
    commit_ = *c;
    if (protocol_version_ < kProbationProtocolVersion) commit_.probation_ms = 0;
    Serving serving{pid_, 0, {}};
    // Probation: every write from here on streams back to the standby, so capture starts
    // before the first request is served.
    if (commit_.probation_ms != 0) env_.begin_reverse_stream(&serving);
    // Confirm before the first read from a socket: until then the incumbent may resume.
    if (auto r = env_.send(serving); !r.ok()) {
      return fail("sending SERVING: " + r.error().to_string(), false);
    }
    phase_ = SuccessorPhase::kServing;
    env_.serve(std::move(sockets_), commit_, false);
    sockets_.clear();
    return;
  }
  fail("unexpected " + std::string(message_name(m)) + " in phase " +
       std::string(to_string(phase_)));
}

void SuccessorMachine::begin_catch_up(uint64_t generation) {
  phase_ = SuccessorPhase::kCatchUp;
  generation_ = generation;
  protocol_version_ = kProtocolVersion;
  deadline_us_ = env_.now_us() + timeouts_.restored_us;
}

void SuccessorMachine::abandon() {
  if (phase_ == SuccessorPhase::kServing || phase_ == SuccessorPhase::kFailed) return;
  phase_ = SuccessorPhase::kFailed;
  for (HandoffSocket& s : sockets_) {
    if (s.early) env_.early_socket_withdrawn(s.fd);
    UniqueFd close_it(s.fd);
  }
  sockets_.clear();
  for (auto& [id, s] : early_) {
    env_.early_socket_withdrawn(s.fd);
    UniqueFd close_it(s.fd);
  }
  early_.clear();
}

void SuccessorMachine::on_incumbent_gone() {
  if (phase_ == SuccessorPhase::kPrepared) {
    // The incumbent was frozen and had handed everything over: serving is safe.
    phase_ = SuccessorPhase::kServing;
    commit_.generation = generation_;
    commit_.timings.freeze_start_us = frozen_ ? frozen_->freeze_start_us : 0;
    env_.serve(std::move(sockets_), commit_, true);
    sockets_.clear();
    return;
  }
  if (phase_ == SuccessorPhase::kServing || phase_ == SuccessorPhase::kFailed) return;
  fail("incumbent went away in phase " + std::string(to_string(phase_)), false);
}

void SuccessorMachine::tick() {
  if (phase_ != SuccessorPhase::kServing && phase_ != SuccessorPhase::kFailed) {
    if (std::string why = env_.stop_requested(); !why.empty()) return fail(why);
  }
  if (phase_ == SuccessorPhase::kCatchUp) {
    auto applied = env_.replay_available();
    if (!applied.ok()) return fail("replaying deltas: " + applied.error().to_string());
    applied_lsn_ = applied.value();
    maybe_prepare();
    if (phase_ != SuccessorPhase::kCatchUp) return;
    const int64_t now = env_.now_us();
    if (!frozen_ && applied_lsn_ != reported_lsn_ && now - reported_at_us_ >= 1000) {
      // Lets the incumbent freeze only once little is left to replay.
      if (auto r = env_.send(Progress{applied_lsn_, early_received_, env_.probe_tally()});
          !r.ok()) {
        return fail("sending PROGRESS: " + r.error().to_string(), false);
      }
      reported_lsn_ = applied_lsn_;
      reported_at_us_ = now;
    }
  }
  // No deadline after PREPARED: the incumbent's only moves are COMMIT or dying (both
  // end the wait), and giving up on a slow COMMIT could leave nobody serving.
  const bool waiting =
      phase_ == SuccessorPhase::kHello || (phase_ == SuccessorPhase::kCatchUp && frozen_);
  if (waiting && env_.now_us() >= deadline_us_) {
    fail("incumbent silent past the deadline in phase " + std::string(to_string(phase_)));
  }
}

void SuccessorMachine::maybe_prepare() {
  if (!frozen_ || applied_lsn_ < frozen_->final_lsn || sockets_.size() < frozen_->fd_count) return;
  if (applied_lsn_ > frozen_->final_lsn) {
    return fail("applied LSN " + std::to_string(applied_lsn_) + " is past the final LSN " +
                std::to_string(frozen_->final_lsn));
  }
  // Early sockets the final batches did not name were closed by the incumbent meanwhile.
  for (auto& [id, s] : early_) {
    env_.early_socket_withdrawn(s.fd);
    UniqueFd close_it(s.fd);
  }
  early_.clear();
  Prepared p{applied_lsn_, static_cast<uint32_t>(sockets_.size()), env_.probe_tally()};
  if (auto r = env_.send(p); !r.ok())
    return fail("sending PREPARED: " + r.error().to_string(), false);
  phase_ = SuccessorPhase::kPrepared;
}

void SuccessorMachine::fail(std::string reason, bool tell_incumbent) {
  if (phase_ == SuccessorPhase::kFailed || phase_ == SuccessorPhase::kServing) return;
  if (tell_incumbent) (void)env_.send(Abort{reason});
  phase_ = SuccessorPhase::kFailed;
  for (HandoffSocket& s : sockets_) UniqueFd close_it(s.fd);
  sockets_.clear();
  for (auto& [id, s] : early_) UniqueFd close_it(s.fd);
  early_.clear();
  env_.fail(reason);
}

}  // namespace baton::handoff
