// Incumbent: spawning, checkpoint, forward delta stream and the freeze, around
// IncumbentMachine. Every protocol decision is in machines.cc.
#include "handoff/incumbent.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "baton/syscall.h"
#include "checkpoint/format.h"

extern char** environ;

namespace baton {

using handoff::Message;

namespace {

constexpr int kChildControlFd = 3;
constexpr int kChildStreamFd = 4;
constexpr int kSocketBuffer = 4 << 20;
constexpr int kReapWaitMs = 2;
constexpr int64_t kLostWaitUs = 100'000;

void set_buffers(int fd) {
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBuffer, sizeof kSocketBuffer);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSocketBuffer, sizeof kSocketBuffer);
}

// Fail point incumbent.corrupt_checkpoint: flips one byte inside the message of the first
// chunk of a sealed checkpoint, through a mapping of its own, as a stray write or a bad
// page would. The successor must refuse it (a chunk checksum mismatch). Returns the
// offset flipped, or 0 when the checkpoint has no chunk.
Result<uint64_t> corrupt_first_chunk(int fd) {
  using namespace format;
  struct stat st {};
  BATON_TRY(BATON_SYSCALL(::fstat(fd, &st), "checkpoint fd ", fd));
  const auto size = static_cast<size_t>(st.st_size);
  if (size < kDataOffset) return uint64_t{0};
  void* at = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (at == MAP_FAILED)
    return Error(ErrorKind::kSystem, "mapping the checkpoint to corrupt it", errno);
  auto* base = static_cast<std::byte*>(at);
  Header header;
  std::memcpy(&header, base, sizeof header);
  uint64_t flipped = 0;
  for (uint32_t i = 0; i < header.section_count && i < kMaxSections && flipped == 0; ++i) {
    SectionDesc desc;
    std::memcpy(&desc, base + sizeof(Header) + i * sizeof(SectionDesc), sizeof desc);
    const uint64_t target = desc.offset + sizeof(ChunkHeader) + 8;  // past the message framing
    if (desc.chunks > 0 && target < size) flipped = target;
  }
  if (flipped != 0) base[flipped] ^= std::byte{0xff};
  ::munmap(at, size);
  return flipped;
}

}  // namespace

Incumbent::Incumbent(Host& host)
    : host_(host),
      machine_(*this, host.generation, host.options.lag, host.options.timeouts,
               host.options.probation_ms) {
  machine_.set_shadow(host.options.shadow);
}

std::pair<uint64_t, uint64_t> Incumbent::new_digest_key() {
  uint64_t k[2] = {0, 0};
  while (k[0] == 0 && k[1] == 0) {
    if (::getrandom(k, sizeof k, 0) != static_cast<ssize_t>(sizeof k)) {
      k[0] = static_cast<uint64_t>(monotonic_us()) * 0x9e3779b97f4a7c15ULL;
      k[1] = static_cast<uint64_t>(::getpid()) ^ 0xd6e8feb86659fd93ULL;
    }
  }
  digest_key_ = {k[0], k[1]};
  return {k[0], k[1]};
}

Incumbent::~Incumbent() {
  if (successor_pid_ > 0) kill_successor();
}

void Incumbent::tick() {
  if (lost_) {
    // A process that closed its files is about to exit: give its pidfd kLostWaitUs to
    // say how, without blocking the loop; on_fd() usually ends the wait first.
    int status = 0;
    if (successor_pid_ > 0 && ::waitpid(successor_pid_, &status, WNOHANG) == successor_pid_) {
      successor_pid_ = 0;
      lost_.reset();
      return machine_.on_successor_gone(describe_exit(status));
    }
    if (monotonic_us() - lost_->since_us < kLostWaitUs) return;
    std::string why = std::move(lost_->why);
    lost_.reset();
    return machine_.on_successor_gone(why);
  }
  machine_.tick();
}

bool Incumbent::on_fd(int fd) {
  if (control_.open() && fd == control_.fd()) {
    read_control();
    return true;
  }
  if (pidfd_ && fd == pidfd_.get()) {
    read_control();  // a last message (an ABORT with its reason) comes first
    int status = 0;
    if (successor_pid_ > 0 && ::waitpid(successor_pid_, &status, WNOHANG) == successor_pid_) {
      successor_pid_ = 0;
      lost_.reset();
      machine_.on_successor_gone(describe_exit(status));
    }
    return true;
  }
  return false;
}

void Incumbent::read_control() {
  for (int i = 0; i < 64 && control_.open(); ++i) {
    handoff::Received in;
    auto status = control_.try_receive(&in);
    if (status.ok() && *status == handoff::ControlChannel::Status::kNone) return;
    if (status.ok() && *status == handoff::ControlChannel::Status::kMessage) {
      machine_.on_message(in.message);
      continue;
    }
    const bool decode_error = !status.ok() && (status.error().kind() == ErrorKind::kCorrupt ||
                                               status.error().kind() == ErrorKind::kVersion);
    if (decode_error) {
      return machine_.on_successor_gone("sent a bad control message: " +
                                        status.error().to_string());
    }
    Error io = status.ok() ? Error(ErrorKind::kAborted, "the control channel closed")
                           : std::move(status).error();
    std::optional<std::string> abort_reason;
    Error why = successor_failure(std::move(io), "the control channel was open", &abort_reason);
    if (abort_reason) return machine_.on_message(handoff::Abort{*abort_reason});
    if (lost_) {  // not reaped yet: its pidfd tells how it ended (tick() bounds the wait)
      host_.unwatch(control_.fd());
      control_.close();
      return;
    }
    return machine_.on_successor_gone(why.message());
  }
}

Result<void> Incumbent::spawn_successor() {
  host_.shadow.reset();  // a new upgrade's probes
  digest_key_ = {};
  int ctl[2], str[2];
  BATON_TRY(BATON_SYSCALL(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl)));
  UniqueFd ctl_mine(ctl[0]), ctl_child(ctl[1]);
  BATON_TRY(BATON_SYSCALL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, str)));
  UniqueFd str_mine(str[0]), str_child(str[1]);
  for (int fd : {ctl[0], ctl[1], str[0], str[1]}) set_buffers(fd);
  // Above 4 so that neither dup2 below can land on the other's source.
  UniqueFd c(::fcntl(ctl_child.get(), F_DUPFD_CLOEXEC, 10));
  UniqueFd s(::fcntl(str_child.get(), F_DUPFD_CLOEXEC, 10));
  if (!c || !s) return Error(ErrorKind::kSystem, "duplicating successor fds", errno);

  const RuntimeOptions& o = host_.options;
  std::string path = o.successor_path.empty() ? host_.exe : o.successor_path;
  std::vector<std::string> argv_s = {path};
  argv_s.insert(argv_s.end(), host_.args.begin(), host_.args.end());
  argv_s.insert(argv_s.end(), o.successor_extra_args.begin(), o.successor_extra_args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("BATON_CONTROL_FD=") || v.starts_with("BATON_STREAM_FD=") ||
        v.starts_with("BATON_GENERATION=")) {
      continue;
    }
    env_s.emplace_back(v);
  }
  env_s.push_back("BATON_CONTROL_FD=" + std::to_string(kChildControlFd));
  env_s.push_back("BATON_STREAM_FD=" + std::to_string(kChildStreamFd));
  env_s.push_back("BATON_GENERATION=" + std::to_string(host_.generation + 1));
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, c.get(), kChildControlFd);  // dup2 clears CLOEXEC
  posix_spawn_file_actions_adddup2(&fa, s.get(), kChildStreamFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the successor blocks SIGUSR2 itself
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid;
  const int rc = ::posix_spawn(&pid, path.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error(ErrorKind::kSystem, "posix_spawn " + path, rc);
  successor_pid_ = pid;
  const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) return Error(ErrorKind::kSystem, "pidfd_open of the successor", errno);
  pidfd_.reset(pfd);
  BATON_ASSIGN_OR_RETURN(control_, handoff::ControlChannel::create(std::move(ctl_mine)));
  BATON_ASSIGN_OR_RETURN(DeltaChannel stream, DeltaChannel::create(std::move(str_mine)));
  stream_.emplace(std::move(stream));
  BATON_TRY(stream_->send_from(host_.registry.log()));
  stream_->corrupt_frames(host_.failpoints.at("incumbent.corrupt_frame") ==
                          FailPoints::Action::kError);
  BATON_TRY(host_.watch(control_.fd()));
  BATON_TRY(host_.watch(pidfd_.get()));
  host_.say("spawned successor pid " + std::to_string(pid) + ": " + describe_binary(path));
  return ok();
}

void Incumbent::kill_successor() {
  if (successor_pid_ > 0) {
    ::kill(successor_pid_, SIGKILL);
    int status;
    while (::waitpid(successor_pid_, &status, 0) < 0 && errno == EINTR) {
    }
    successor_pid_ = 0;
  }
  lost_.reset();
  stream_.reset();  // the sender before the socket it writes to
  if (control_.open()) host_.unwatch(control_.fd());
  control_.close();
  if (pidfd_) host_.unwatch(pidfd_.get());
  pidfd_.reset();
  frozen_.clear();
}

Result<void> Incumbent::send(const Message& m, std::span<const int> fds) {
  if (!control_.open()) return Error(ErrorKind::kState, "no control channel");
  if (std::holds_alternative<handoff::Commit>(m)) {
    BATON_TRY(host_.failpoints.hit("incumbent.before_commit"));
    // From COMMIT on this process only waits for SERVING, then exits or stands by. As an
    // idle-class task its wake-up on SERVING cannot preempt the successor on a busy core,
    // nor can its exit (tearing down a big heap) hold the successor off. unfreeze() and
    // the standby undo it.
    host_.idle_priority(true);
  }
  // Inside the freeze clients wait anyway, bounded by the freeze deadline: the fd batches
  // may then wait for the successor to make room. Outside it, nothing waits.
  auto r = control_.send(m, fds, freeze_deadline_us_);
  if (!r.ok()) {
    return successor_failure(std::move(r).error(),
                             "sending " + std::string(handoff::message_name(m)));
  }
  return ok();
}

std::vector<handoff::SectionSchema> Incumbent::typed_sections() {
  std::vector<handoff::SectionSchema> out;
  std::vector<Section*> all = host_.registry.sections();
  for (Section* s : host_.workers.sections()) all.push_back(s);
  for (Section* s : all) {
    if (const TypedSchema* t = s->typed_schema()) {
      out.push_back({s->name(), s->schema_version(), t->type_id, t->encoded});
    }
  }
  return out;
}

std::vector<handoff::SectionVersion> Incumbent::sections() {
  std::vector<handoff::SectionVersion> out;
  for (Section* s : host_.registry.sections()) out.push_back({s->name(), s->schema_version()});
  for (Section* s : host_.workers.sections()) out.push_back({s->name(), s->schema_version()});
  return out;
}

Result<void> Incumbent::checkpoint_begin() {
  // Names identify sections across the handoff, so they are unique across threads too.
  std::vector<Section*> all = host_.registry.sections();
  for (Section* s : host_.workers.sections()) all.push_back(s);
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (all[i]->name() == all[j]->name()) {
        return Error(ErrorKind::kInvalidArgument,
                     "section '" + all[i]->name() +
                         "' is registered by two threads; names must be unique in a process");
      }
    }
  }
  CheckpointOptions options;
  options.pacing = host_.options.checkpoint_pacing;
  BATON_ASSIGN_OR_RETURN(auto w, CheckpointWriter::begin(host_.registry, options));
  writer_.emplace(std::move(w));
  main_checkpointed_ = false;
  worker_freeze_us_.clear();
  worker_freeze_error_.reset();
  host_.workers.begin();  // each worker's L0 and snapshots, on its own thread
  return ok();
}

Result<bool> Incumbent::checkpoint_step() {
  if (!main_checkpointed_) {
    BATON_ASSIGN_OR_RETURN(main_checkpointed_, writer_->turn());
  }
  if (!main_checkpointed_) return false;
  if (host_.workers.count() == 0) return true;
  return host_.workers.checkpoints_done();
}

Result<handoff::CheckpointReady> Incumbent::checkpoint_finish(int* fd) {
  BATON_ASSIGN_OR_RETURN(Checkpoint cp, writer_->finish());
  checkpoint_.emplace(std::move(cp));
  *fd = checkpoint_->fd();
  {
    const CheckpointStats& st = checkpoint_->stats();
    // Without hugetlb pages, what a pool would have to hold for this state to get them
    // (docs/operations.md, "Huge pages").
    const std::string pages =
        std::string(to_string(st.page_kind)) +
        (st.page_kind == PageKind::kHugetlb
             ? ""
             : " (for huge pages a hugetlb pool needs " + std::to_string(st.capacity_bytes) +
                   " free bytes, the segment's reservation)");
    char line[512];
    std::snprintf(line, sizeof line,
                  "checkpoint written: %" PRIu64 " bytes, %" PRIu64
                  " records in %.1f ms, %.1f ms of it writing over %" PRIu64 " loop turns (%" PRIu64
                  " more left to the server, %" PRIu64
                  " waiting for the helper's pages; longest %.2f ms, share "
                  "%.2f), pages: %s; sealing: helper stopped in %.2f ms, tail freed in %.2f ms",
                  st.segment_bytes, st.records, static_cast<double>(st.elapsed_us) / 1e3,
                  static_cast<double>(st.busy_us) / 1e3, st.turns, st.turns_skipped,
                  st.turns_waited, static_cast<double>(st.max_turn_us) / 1e3,
                  host_.options.checkpoint_pacing.share, pages.c_str(),
                  static_cast<double>(st.finish_stop_us) / 1e3,
                  static_cast<double>(st.finish_shrink_us) / 1e3);
    log(line);
  }
  if (host_.failpoints.at("incumbent.corrupt_checkpoint") != FailPoints::Action::kNone) {
    BATON_ASSIGN_OR_RETURN(const uint64_t offset, corrupt_first_chunk(*fd));
    log("fail point incumbent.corrupt_checkpoint: flipped the byte at offset " +
        std::to_string(offset));
  }
  return handoff::CheckpointReady{checkpoint_->stats().start_lsn,
                                  checkpoint_->stats().segment_bytes};
}

void Incumbent::checkpoint_drop() {
  early_copies_.clear();
  writer_.reset();
  checkpoint_.reset();
  host_.registry.log().end_capture();
  host_.workers.release(false);  // a worker still waiting at the freeze serves on
  host_.workers.end();
}

Result<void> Incumbent::pump_deltas() {
  if (!stream_) return Error(ErrorKind::kState, "no delta stream");
  if (worker_freeze_error_) return Error(ErrorKind::kAborted, worker_freeze_error_->message());
  // The workers' deltas join the main thread's log, so one stream carries them in order.
  if (host_.workers.count() != 0 && host_.registry.log().capturing()) {
    BATON_TRY(host_.workers.drain_into(host_.registry.log()));  // names the worker
  }
  auto r = stream_->pump();
  if (!r.ok() && r.error().kind() == ErrorKind::kCapacity) return r;
  if (!r.ok()) return successor_failure(std::move(r).error(), "streaming deltas");
  return ok();
}

uint64_t Incumbent::backlog_bytes() { return stream_ ? stream_->backlog_bytes() : 0; }

Error Incumbent::successor_failure(Error io_error, std::string_view doing,
                                   std::optional<std::string>* abort_reason) {
  if (auto why = pending_abort()) {
    if (abort_reason != nullptr) *abort_reason = *why;
    return Error(ErrorKind::kAborted, "successor aborted: " + *why);
  }
  // A dying process closes its files after its memory is gone and becomes reapable
  // microseconds later: wait for that on the pidfd, at most kReapWaitMs, so that the
  // reason says how it exited. (This used to poll waitpid for up to 100 ms.)
  if (successor_pid_ > 0 && pidfd_) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    (void)::poll(&p, 1, kReapWaitMs);
    int status = 0;
    if (::waitpid(successor_pid_, &status, WNOHANG) == successor_pid_) {
      successor_pid_ = 0;
      return Error(ErrorKind::kAborted,
                   "successor died while " + std::string(doing) + ": it " + describe_exit(status));
    }
    Error e = std::move(io_error).with_context(std::string(doing) + " (successor pid " +
                                               std::to_string(successor_pid_) + " still runs)");
    if (!lost_) lost_ = Lost{e.message(), monotonic_us()};
    return e;
  }
  return std::move(io_error).with_context(std::string(doing));
}

// An ABORT the successor sent and this process has not read yet, if any.
std::optional<std::string> Incumbent::pending_abort() {
  for (int i = 0; i < 64 && control_.open(); ++i) {
    handoff::Received in;
    auto status = control_.try_receive(&in);
    if (!status.ok()) {
      if (status.error().kind() == ErrorKind::kCorrupt) continue;
      return std::nullopt;
    }
    if (*status != handoff::ControlChannel::Status::kMessage) return std::nullopt;
    if (auto* a = std::get_if<handoff::Abort>(&in.message)) return a->reason;
  }
  return std::nullopt;
}

std::vector<handoff::HandoffSocket> Incumbent::early_sockets() {
  std::vector<handoff::HandoffSocket> out = host_.early_sockets();
  if (host_.workers.count() != 0) {
    // Outside the freeze, so each worker answers in its own next loop turn; one that does
    // not within 100 ms hands its sockets over at the freeze instead.
    auto theirs = host_.workers.early_sockets(monotonic_us() + 100'000);
    for (const handoff::HandoffSocket& s : theirs) early_copies_[s.id] = UniqueFd(s.fd);
    out.insert(out.end(), theirs.begin(), theirs.end());
  }
  return out;
}

std::vector<handoff::HandoffSocket> Incumbent::freeze() {
  freeze_deadline_us_ = monotonic_us() + host_.options.timeouts.freeze_us;
  frozen_ = host_.freeze_sockets();
  if (host_.workers.count() != 0) {
    // One freeze across threads: every worker stops and hands its sockets over, or the
    // upgrade aborts (pump_deltas() says why) and they all serve on.
    worker_freeze_us_.clear();
    auto theirs = host_.workers.freeze(freeze_deadline_us_, &worker_freeze_us_);
    if (!theirs.ok()) {
      worker_freeze_error_ = std::move(theirs).error();
      return frozen_;
    }
    for (handoff::HandoffSocket& s : *theirs) {
      if (auto it = early_copies_.find(s.id); it != early_copies_.end()) s.fd = it->second.get();
    }
    frozen_.insert(frozen_.end(), theirs->begin(), theirs->end());
  }
  return frozen_;
}

void Incumbent::unfreeze() {
  freeze_deadline_us_ = 0;
  frozen_.clear();
  host_.workers.release(false);
  host_.idle_priority(false);
  host_.pause_listeners(false);
  if (host_.hooks) host_.hooks->unfreeze();
}

void Incumbent::throttle(bool on) {
  if (host_.hooks) host_.hooks->throttle(on);
}

void Incumbent::timeline(const handoff::TimelineRecord& r) {
  host_.write_timeline(r);
  if (r.outcome == "aborted") {
    host_.upgrade_outcome = "aborted: " + r.reason + "\n" + host_.last_timeline + "\n";
    host_.notify_systemd("READY=1\nSTATUS=upgrade to generation " + std::to_string(r.generation) +
                         " aborted; generation " + std::to_string(host_.generation) +
                         " serves on\n");
  }
}

void Incumbent::committed(const handoff::Serving& serving, uint32_t probation_ms) {
  freeze_deadline_us_ = 0;
  host_.workers.release(true);  // their sockets are the successor's: they stop
  early_copies_.clear();
  host_.upgrade_outcome =
      "committed: generation " + std::to_string(machine_.generation()) + " serves as pid " +
      std::to_string(serving.pid) +
      (probation_ms != 0 && host_.hooks != nullptr
           ? ", on probation for " + handoff::seconds_text(int64_t{probation_ms} * 1000)
           : std::string()) +
      "\n";
  if (probation_ms == 0 || host_.hooks == nullptr) {
    // The successor serves now: it is no longer ours to kill or reap, not even when this
    // process's Runtime is destroyed on the way out.
    successor_pid_ = 0;
    if (pidfd_) host_.unwatch(pidfd_.get());
    pidfd_.reset();
    frozen_.clear();
    host_.handed_off = true;
    if (host_.hooks) host_.hooks->committed();
    return;
  }
  // Probation: keep a duplicate of every socket handed over (outside the blackout: the
  // successor serves already), then let the server close its own and stand by.
  StandbyStart s;
  for (const handoff::HandoffSocket& f : frozen_) {
    UniqueFd dup(::fcntl(f.fd, F_DUPFD_CLOEXEC, 0));
    if (!dup) {
      host_.say("cannot keep socket fd " + std::to_string(f.fd) +
                " for the standby: " + std::strerror(errno));
      continue;
    }
    s.held.emplace_back(std::move(dup), f.tag);
  }
  frozen_.clear();
  host_.release_listeners();  // the successor owns the batonctl listener now; we hold a dup
  host_.idle_priority(false);
  checkpoint_drop();
  if (control_.open()) host_.unwatch(control_.fd());
  if (pidfd_) host_.unwatch(pidfd_.get());
  s.successor_pid = std::exchange(successor_pid_, 0);
  s.pidfd = std::move(pidfd_);
  s.control = std::move(control_);
  if (stream_) stream_->stop_sending();
  s.stream = std::move(stream_);
  stream_.reset();
  s.serving = serving;
  s.probation_ms = probation_ms;
  s.successor_generation = machine_.generation();
  s.digest_key = digest_key_;
  standby_start_.emplace(std::move(s));
  host_.hooks->standby();
}

}  // namespace baton
