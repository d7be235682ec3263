// Runtime: the I/O shell around the handoff machines. Processes, sockets, signals,
// io_uring and files live here; every protocol decision is in machines.cc.
#include "baton/runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <optional>

#include "base/failpoint.h"
#include "baton/checkpoint.h"
#include "baton/syscall.h"
#include "baton/unix_socket.h"
#include "control_codec.h"
#include "handoff/machines.h"
#include "stream/delta_sender.h"

extern char** environ;

namespace baton {

using handoff::HandoffSocket;
using handoff::Message;

namespace {

constexpr int kChildControlFd = 3;
constexpr int kChildStreamFd = 4;
constexpr const char* kEnvControl = "BATON_CONTROL_FD";
constexpr const char* kEnvStream = "BATON_STREAM_FD";
constexpr const char* kEnvGeneration = "BATON_GENERATION";
constexpr int kSocketBuffer = 4 << 20;
constexpr const char* kControlTag = "baton.control";  // the batonctl listener, handed over too

int64_t monotonic_us() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

void set_buffers(int fd) {
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBuffer, sizeof kSocketBuffer);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSocketBuffer, sizeof kSocketBuffer);
}

Result<void> set_nonblocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return Error(ErrorKind::kSystem, "fcntl(F_GETFL)", errno);
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  BATON_TRY(BATON_SYSCALL(::fcntl(fd, F_SETFL, flags)));
  return ok();
}

// Appends one line to `path`; errors are reported, never fatal.
void append_line(const std::string& path, const std::string& line) {
  if (path.empty()) return;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  std::string out = line + "\n";
  if (!fd || ::write(fd.get(), out.data(), out.size()) != static_cast<ssize_t>(out.size())) {
    std::fprintf(stderr, "baton[%d]: cannot append to event log %s: %s\n", ::getpid(), path.c_str(),
                 std::strerror(errno));
  }
}

// Rewrites the pidfile atomically: write a temporary file, then rename it over.
void write_pidfile(const std::string& path) {
  if (path.empty()) return;
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  std::string pid = std::to_string(::getpid()) + "\n";
  if (!fd || ::write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()) ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "baton[%d]: cannot write pidfile %s: %s\n", ::getpid(), path.c_str(),
                 std::strerror(errno));
    ::unlink(tmp.c_str());
  }
}

// systemd's sd_notify protocol, without libsystemd: one datagram to $NOTIFY_SOCKET.
void notify_systemd(const std::string& text) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0') return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return;
  (void)::sendto(fd.get(), text.data(), text.size(), MSG_NOSIGNAL,
                 reinterpret_cast<sockaddr*>(&addr),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
}

// The versions of a section this build can restore: its own, widened by every
// contiguous migration step down and up.
handoff::SectionRange readable_range(Section& s) {
  handoff::SectionRange r{s.name(), s.schema_version(), s.schema_version()};
  while (r.min_version > 0 &&
         s.migrations().path(s.name(), r.min_version - 1, s.schema_version()).ok())
    --r.min_version;
  while (s.migrations().path(s.name(), r.max_version + 1, s.schema_version()).ok()) ++r.max_version;
  return r;
}

}  // namespace

class Runtime::Impl final : public handoff::IncumbentEnv, public handoff::SuccessorEnv {
 public:
  Impl(RuntimeOptions options, FailPoints failpoints)
      : options_(std::move(options)),
        failpoints_(std::move(failpoints)),
        registry_(options_.delta_limit_bytes) {}

  ~Impl() override {
    if (successor_pid_ > 0) kill_successor();
  }

  Result<void> init(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) args_.emplace_back(argv[i]);
    char exe[4096];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return Error(ErrorKind::kSystem, "readlink /proc/self/exe", errno);
    exe_ = std::string(exe, static_cast<size_t>(n));
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    BATON_TRY(BATON_SYSCALL(::sigprocmask(SIG_BLOCK, &set, nullptr), "blocking SIGUSR2"));
    BATON_ASSIGN_OR_RETURN(int sfd,
                           BATON_SYSCALL(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)));
    signal_fd_.reset(sfd);
    BATON_ASSIGN_OR_RETURN(int efd, BATON_SYSCALL(::epoll_create1(EPOLL_CLOEXEC)));
    epoll_.reset(efd);
    BATON_TRY(watch(signal_fd_.get()));
    if (const char* c = std::getenv(kEnvControl)) {
      successor_ = true;
      control_.reset(std::atoi(c));
      const char* s = std::getenv(kEnvStream);
      stream_.reset(s ? std::atoi(s) : -1);
      const char* g = std::getenv(kEnvGeneration);
      generation_ = g ? std::strtoull(g, nullptr, 10) : 2;
      for (int fd : {control_.get(), stream_.get()}) {
        if (fd < 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
          return Error(ErrorKind::kInvalidArgument,
                       std::string(kEnvControl) + "/" + kEnvStream +
                           " do not name inherited fds; was this process started by Baton?");
        }
      }
      ::unsetenv(kEnvControl);
      ::unsetenv(kEnvStream);
      ::unsetenv(kEnvGeneration);
    }
    machine_.emplace(*this, generation_, options_.lag, options_.timeouts);
    if (!successor_ && !options_.control_socket.empty()) BATON_TRY(listen_control());
    return ok();
  }

  // ---------------------------------------------------------------- batonctl socket

  Result<void> listen_control() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string& path = options_.control_socket;
    if (path.size() >= sizeof addr.sun_path) {
      return Error(ErrorKind::kInvalidArgument,
                   "control socket path '" + path + "' is longer than " +
                       std::to_string(sizeof addr.sun_path - 1) + " bytes");
    }
    std::memcpy(addr.sun_path, path.data(), path.size());
    if (path[0] == '@') {
      addr.sun_path[0] = '\0';
    } else {
      ::unlink(path.c_str());  // a stale socket from a crashed process
    }
    BATON_ASSIGN_OR_RETURN(int fd, BATON_SYSCALL(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    UniqueFd l(fd);
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    BATON_TRY(BATON_SYSCALL(::bind(l.get(), reinterpret_cast<sockaddr*>(&addr), len),
                            "control socket ", path));
    BATON_TRY(BATON_SYSCALL(::listen(l.get(), 16), "control socket ", path));
    return adopt_control(std::move(l));
  }

  Result<void> adopt_control(UniqueFd listener) {
    BATON_TRY(set_nonblocking(listener.get(), true));
    control_listener_ = std::move(listener);
    return watch(control_listener_.get());
  }

  void serve_control() {
    for (int c; (c = ::accept4(control_listener_.get(), nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
      UniqueFd conn(c);
      timeval tv{1, 0};  // batonctl writes its command at once
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      std::string reply;
      char buf[256];
      ssize_t n = ::read(c, buf, sizeof buf - 1);  // the command, read even from a refused
                                                   // peer so the close leaves no unread data
      auto cred = peer_credentials(c);
      if (!cred.ok() || cred->uid != ::geteuid()) {
        unsigned uid = cred.ok() ? cred->uid : ~0u;
        reply = "error: uid " + std::to_string(uid) +
                " may not control this process (SO_PEERCRED); only uid " +
                std::to_string(::geteuid()) + " may\n";
        say("refused a control connection from pid " + std::to_string(cred.ok() ? cred->pid : 0) +
            " uid " + std::to_string(uid));
      } else {
        std::string cmd(buf, n > 0 ? static_cast<size_t>(n) : 0);

        while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r')) cmd.pop_back();
        reply = control_command(cmd);
      }
      (void)!::write(c, reply.data(), reply.size());
    }
  }

  std::string control_command(const std::string& cmd) {
    if (cmd == "upgrade") {
      auto r = machine_->request_upgrade();
      if (!r.ok()) return "error: " + r.error().message() + "\n";
      return "ok: upgrade to generation " + std::to_string(generation_ + 1) + " started\n";
    }
    if (cmd == "status") {
      return "{\"pid\":" + std::to_string(::getpid()) +
             ",\"generation\":" + std::to_string(generation_) + ",\"phase\":\"" +
             std::string(handoff::to_string(machine_->phase())) + "\",\"last_abort\":\"" +
             handoff::json_escape(machine_->last_abort()) + "\"}\n";
    }
    return "error: unknown command '" + cmd.substr(0, 64) + "'; use upgrade or status\n";
  }

  Result<void> watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    BATON_TRY(BATON_SYSCALL(::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev)));
    return ok();
  }
  void unwatch(int fd) { (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

  void say(std::string_view line) {
    std::fprintf(stderr, "baton[%d]: %.*s\n", ::getpid(), static_cast<int>(line.size()),
                 line.data());
  }

  // ---------------------------------------------------------------- incumbent loop

  void service() {
    announce();

    epoll_event events[8];
    int n = ::epoll_wait(epoll_.get(), events, 8, 0);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == signal_fd_.get()) {
        signalfd_siginfo info;
        while (::read(signal_fd_.get(), &info, sizeof info) == sizeof info) {
          say("SIGUSR2 from pid " + std::to_string(info.ssi_pid));
          (void)machine_->request_upgrade();
        }
      } else if (fd == control_listener_.get()) {
        serve_control();
      } else if (fd == control_.get()) {
        read_control();
      } else if (fd == pidfd_.get()) {
        read_control();  // a last message (an ABORT with its reason) comes first
        int status = 0;

        if (successor_pid_ > 0 && ::waitpid(successor_pid_, &status, WNOHANG) == successor_pid_) {
          successor_pid_ = 0;
          machine_->on_successor_gone(describe_exit(status));
        }
      }
    }
    machine_->tick();
  }

  void read_control() {
    for (int i = 0; i < 64 && control_; ++i) {
      auto msg = recv_fds(control_.get(), handoff::kMaxMessageBytes);
      if (!msg.ok() && msg.error().sys_errno() == EAGAIN) return;
      if (!msg.ok() || msg->bytes.empty()) {
        Error io = msg.ok() ? Error(ErrorKind::kAborted, "the control channel closed")
                            : std::move(msg).error();
        Error why = successor_failure(std::move(io), "the control channel was open");
        if (why.message().starts_with("successor aborted: ")) {
          return machine_->on_message(handoff::Abort{why.message().substr(19)});
        }
        return machine_->on_successor_gone(why.message());
      }

      auto decoded = serialization::decode_message(msg->bytes);
      if (!decoded.ok()) {
        return machine_->on_successor_gone("sent a bad control message: " +
                                           decoded.error().to_string());
      }
      machine_->on_message(decoded.value());
    }
  }

  // ---------------------------------------------------------------- IncumbentEnv

  int64_t now_us() override { return monotonic_us(); }

  Result<void> spawn_successor() override {
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

    std::string path = options_.successor_path.empty() ? exe_ : options_.successor_path;
    std::vector<std::string> argv_s = {path};
    argv_s.insert(argv_s.end(), args_.begin(), args_.end());
    argv_s.insert(argv_s.end(), options_.successor_extra_args.begin(),
                  options_.successor_extra_args.end());
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
    env_s.push_back(std::string(kEnvControl) + "=" + std::to_string(kChildControlFd));
    env_s.push_back(std::string(kEnvStream) + "=" + std::to_string(kChildStreamFd));
    env_s.push_back(std::string(kEnvGeneration) + "=" + std::to_string(generation_ + 1));
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
    int rc = ::posix_spawn(&pid, path.c_str(), &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return Error(ErrorKind::kSystem, "posix_spawn " + path, rc);
    successor_pid_ = pid;
    int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pfd < 0) return Error(ErrorKind::kSystem, "pidfd_open of the successor", errno);
    pidfd_.reset(pfd);
    control_ = std::move(ctl_mine);
    stream_ = std::move(str_mine);
    BATON_TRY(set_nonblocking(control_.get(), true));
    BATON_TRY(watch(control_.get()));
    BATON_TRY(watch(pidfd_.get()));
    BATON_ASSIGN_OR_RETURN(sender_,
                           DeltaSender::create(stream_.get(), DeltaSender::Backend::kUring));
    deltas_sent_ = 0;
    say("spawned successor pid " + std::to_string(pid) + ": " + path);
    return ok();
  }

  void kill_successor() override {
    if (successor_pid_ > 0) {
      ::kill(successor_pid_, SIGKILL);
      int status;
      while (::waitpid(successor_pid_, &status, 0) < 0 && errno == EINTR) {
      }
      successor_pid_ = 0;
    }
    sender_.reset();  // before the socket it writes to
    for (UniqueFd* fd : {&control_, &pidfd_}) {
      if (*fd) unwatch(fd->get());
      fd->reset();
    }
    stream_.reset();
  }

  Result<void> send(const Message& m, std::span<const int> fds) override {
    if (!control_) return Error(ErrorKind::kState, "no control channel");
    if (std::holds_alternative<handoff::Commit>(m)) {
      BATON_TRY(failpoints_.hit("incumbent.before_commit"));
      // From COMMIT on this process only waits for SERVING, then exits. As an idle-class
      // task its wake-up on SERVING cannot preempt the successor on a busy core, nor can
      // its exit (tearing down a big heap) hold the successor off. unfreeze() undoes it.
      idle_priority(true);
    }
    std::string bytes = serialization::encode_message(m);
    // The control socket is nonblocking for reads; a full send buffer is waited out.
    for (int attempt = 0;; ++attempt) {
      auto r = send_fds(control_.get(), bytes, fds);
      if (!r.ok() && r.error().sys_errno() == EAGAIN && attempt <= 2000) {
        pollfd p{control_.get(), POLLOUT, 0};
        ::poll(&p, 1, 1);
        continue;
      }
      if (!r.ok()) {
        return successor_failure(std::move(r).error(),
                                 "sending " + std::string(handoff::message_name(m)));
      }
      return r;
    }
  }

  std::vector<handoff::SectionVersion> sections() override {
    std::vector<handoff::SectionVersion> out;
    for (Section* s : registry_.sections()) out.push_back({s->name(), s->schema_version()});
    return out;
  }

  Result<void> checkpoint_begin() override {
    BATON_ASSIGN_OR_RETURN(auto w, CheckpointWriter::begin(registry_, {}));
    writer_.emplace(std::move(w));
    return ok();
  }
  Result<bool> checkpoint_step() override { return writer_->step(); }
  Result<handoff::CheckpointReady> checkpoint_finish(int* fd) override {
    BATON_ASSIGN_OR_RETURN(Checkpoint cp, writer_->finish());
    checkpoint_.emplace(std::move(cp));
    *fd = checkpoint_->fd();
    return handoff::CheckpointReady{checkpoint_->stats().start_lsn,
                                    checkpoint_->stats().segment_bytes};
  }
  void checkpoint_drop() override {
    writer_.reset();
    checkpoint_.reset();
    registry_.log().end_capture();
  }

  Result<void> pump_deltas() override {
    DeltaLog& log = registry_.log();
    if (log.overflowed()) {
      return Error(ErrorKind::kCapacity, "delta log passed its " +
                                             std::to_string(log.limit_bytes()) +
                                             "-byte limit: writes outpace the stream");
    }
    uint64_t count = log.pending_count();
    std::string frame = log.take_frame();
    if (!frame.empty()) {
      if (failpoints_.at("incumbent.corrupt_frame") == FailPoints::Action::kError) {
        frame[frame.size() - 1] ^= 0x5a;  // a payload byte: the frame checksum must catch it
      }
      deltas_sent_ += count;
      sender_->enqueue(std::move(frame));
    }
    auto r = sender_->pump();
    if (!r.ok()) return successor_failure(std::move(r).error(), "streaming deltas");
    return ok();
  }

  // An ABORT the successor sent and this process has not read yet, if any.
  // Why the successor stopped answering, for an operator: its own ABORT if it sent one,
  // else how it exited (reaped here, so kill_successor will not wait for it), else the
  // I/O error itself.
  Error successor_failure(Error io_error, std::string_view doing) {
    if (auto why = pending_abort()) return Error(ErrorKind::kAborted, "successor aborted: " + *why);
    // A dying process closes its sockets before it can be reaped: give it a moment.
    for (int i = 0; i < 100 && successor_pid_ > 0; ++i) {
      int status = 0;
      if (::waitpid(successor_pid_, &status, WNOHANG) == successor_pid_) {
        successor_pid_ = 0;
        return Error(ErrorKind::kAborted,
                     "successor died while " + std::string(doing) + ": " + describe_exit(status));
      }
      ::usleep(1000);
    }
    return std::move(io_error).with_context(std::string(doing));
  }

  // Unix sockets report ECONNRESET once when the peer closed with unread data, and still
  // hold the peer's last messages behind it: read past it.

  std::optional<std::string> pending_abort() {
    for (int i = 0; i < 64 && control_; ++i) {
      auto msg = recv_fds(control_.get(), handoff::kMaxMessageBytes);
      if (!msg.ok() && msg.error().sys_errno() == ECONNRESET) continue;
      if (!msg.ok() || msg->bytes.empty()) return std::nullopt;
      auto decoded = serialization::decode_message(msg->bytes);
      if (decoded.ok()) {
        if (auto* a = std::get_if<handoff::Abort>(&decoded.value())) return a->reason;
      }
    }
    return std::nullopt;
  }
  uint64_t backlog_bytes() override {
    return (sender_ ? sender_->queued_bytes() : 0) + registry_.log().pending_bytes();
  }
  uint64_t last_lsn() override { return registry_.log().last_lsn(); }
  uint64_t deltas_sent() override { return deltas_sent_; }

  // A socket's identity while it is open: the same fd number may name another socket
  // after a close and an accept, the same inode may not.
  // A server's own ids get the top bit, so that they never equal an inode.
  static uint64_t socket_id(const FrozenSocket& s) {
    if (s.id != 0) return s.id | (uint64_t{1} << 63);
    struct stat st;
    return ::fstat(s.fd, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
  }
  std::vector<HandoffSocket> early_sockets() override {
    std::vector<HandoffSocket> out;
    if (hooks_ == nullptr) return out;
    for (FrozenSocket& s : hooks_->early()) out.push_back({s.fd, s.tag, "", socket_id(s)});
    return out;
  }
  std::vector<HandoffSocket> freeze() override {
    std::vector<HandoffSocket> out;
    if (control_listener_) out.push_back({control_listener_.get(), kControlTag, ""});
    if (hooks_ == nullptr) return out;
    std::vector<FrozenSocket> sockets = hooks_->freeze();
    out.reserve(out.size() + sockets.size());
    for (FrozenSocket& s : sockets) {
      const uint64_t id = socket_id(s);
      out.push_back({s.fd, std::move(s.tag), std::move(s.state), id});
    }
    return out;
  }
  void unfreeze() override {
    idle_priority(false);
    if (hooks_) hooks_->unfreeze();
  }
  // Switches this thread to SCHED_IDLE and back to the policy it had before.
  void idle_priority(bool idle) {
    if (idle && saved_policy_ < 0) {
      saved_policy_ = ::sched_getscheduler(0);
      (void)::sched_getparam(0, &saved_param_);
      sched_param p{};
      (void)::sched_setscheduler(0, SCHED_IDLE, &p);
    } else if (!idle && saved_policy_ >= 0) {
      (void)::sched_setscheduler(0, saved_policy_, &saved_param_);
      saved_policy_ = -1;
    }
  }
  void throttle(bool on) override {
    if (hooks_) hooks_->throttle(on);
  }
  void committed() override {
    // The successor serves now: it is no longer ours to kill or reap, not even when this
    // process's Runtime is destroyed on the way out.
    successor_pid_ = 0;
    if (pidfd_) unwatch(pidfd_.get());
    pidfd_.reset();
    if (hooks_) hooks_->committed();
  }
  void log(std::string_view line) override { say(line); }
  void timeline(const handoff::TimelineRecord& r) override {
    last_timeline_ = r.to_json();
    append_line(options_.event_log, last_timeline_);
  }

  // ---------------------------------------------------------------- successor

  Result<std::vector<InheritedSocket>> take_over(EarlySockets* early) {
    early_sink_ = early;
    if (!successor_) {
      return Error(ErrorKind::kState,
                   "take_over() is for a successor; this process was "
                   "started by hand");
    }
    BATON_TRY(set_nonblocking(stream_.get(), true));
    handoff::SuccessorMachine machine(*this, ::getpid(), options_.timeouts);
    machine.start();
    while (machine.phase() != handoff::SuccessorPhase::kServing &&
           machine.phase() != handoff::SuccessorPhase::kFailed) {
      pollfd p[2] = {{control_.get(), POLLIN, 0}, {stream_.get(), POLLIN, 0}};
      ::poll(p, 2, 10);
      if (p[0].revents != 0) {
        auto msg = recv_fds(control_.get(), handoff::kMaxMessageBytes);
        if (!msg.ok() || msg->bytes.empty()) {
          machine.on_incumbent_gone();
          continue;
        }
        auto decoded = serialization::decode_message(msg->bytes);
        if (!decoded.ok()) {
          machine.on_message(handoff::Abort{"bad control message: " + decoded.error().to_string()},
                             {});
          continue;
        }
        machine.on_message(decoded.value(), std::move(msg->fds));
      }
      machine.tick();
    }
    if (machine.phase() == handoff::SuccessorPhase::kFailed) {
      return Error(ErrorKind::kAborted, "upgrade failed: " + failure_);
    }
    return std::move(inherited_);
  }

  // ---------------------------------------------------------------- SuccessorEnv

  Result<void> send(const Message& m) override {
    if (std::holds_alternative<handoff::Prepared>(m)) {
      BATON_TRY(failpoints_.hit("successor.before_prepared"));
    }
    auto r = send_fds(control_.get(), serialization::encode_message(m), {});
    if (r.ok() && std::holds_alternative<handoff::Hello>(m)) {
      BATON_TRY(failpoints_.hit("successor.after_hello"));
    }
    if (r.ok() && std::holds_alternative<handoff::Prepared>(m)) {
      BATON_TRY(failpoints_.hit("successor.after_prepared"));
    }
    return r;
  }

  std::vector<handoff::SectionRange> readable_sections() override {
    std::vector<handoff::SectionRange> out;
    for (Section* s : registry_.sections()) out.push_back(readable_range(*s));
    return out;
  }

  void early_socket(int fd, std::string_view tag) override {
    if (early_sink_ != nullptr) early_sink_->early_socket(fd, std::string(tag));
  }
  void early_socket_withdrawn(int fd) override {
    if (early_sink_ != nullptr) early_sink_->early_socket_withdrawn(fd);
  }

  Result<handoff::Restored> restore(UniqueFd fd) override {
    BATON_ASSIGN_OR_RETURN(RestoreResult r, restore_checkpoint(fd.get(), registry_));
    for (const std::string& note : r.notes) say(note);
    replayer_.emplace(r);
    applied_lsn_ = r.start_lsn;
    BATON_TRY(failpoints_.hit("successor.after_restore"));
    return handoff::Restored{r.records, r.elapsed_us};
  }

  Result<uint64_t> replay_available() override {
    char buf[1 << 16];
    for (int i = 0; i < 256; ++i) {
      ssize_t n = ::read(stream_.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return Error(ErrorKind::kSystem, "reading the delta stream", errno);
      }
      if (n == 0) break;
      inbox_.append(buf, static_cast<size_t>(n));
    }
    size_t used = 0;
    const size_t max_frame = options_.delta_limit_bytes + kFrameHeaderSize;
    for (;;) {
      BATON_ASSIGN_OR_RETURN(size_t len,
                             frame_size(std::string_view(inbox_).substr(used), max_frame));
      if (len == 0 || inbox_.size() - used < len) break;
      BATON_TRY(replayer_->apply_frame(std::string_view(inbox_).substr(used, len)));
      used += len;
    }
    inbox_.erase(0, used);
    applied_lsn_ = replayer_->next_lsn() - 1;
    return applied_lsn_;
  }

  void serve(std::vector<HandoffSocket> sockets, const handoff::Commit& commit,
             bool incumbent_gone) override {
    for (HandoffSocket& s : sockets) {
      if (s.tag == kControlTag && !control_listener_) {
        if (auto r = adopt_control(UniqueFd(s.fd)); !r.ok()) say(r.error().to_string());
        continue;
      }
      inherited_.push_back({UniqueFd(s.fd), std::move(s.tag), std::move(s.state), s.early});
    }
    if (commit.generation != 0) generation_ = commit.generation;
    // The timeline is written when the server calls serving(): only then has it taken
    // its sockets back, which is where the blackout honestly ends.
    handoff::TimelineRecord& r = pending_timeline_.emplace();
    r.generation = generation_;
    r.outcome = "committed";
    r.reason = incumbent_gone ? "incumbent died after PREPARED; the successor took over" : "";
    const handoff::Timings& t = commit.timings;
    r.spawn_us = t.spawn_us;
    r.checkpoint_us = t.checkpoint_us;
    r.catchup_us = t.catchup_us;
    r.blackout_us = t.freeze_start_us;  // a start time until serving() subtracts it
    r.total_us = t.start_us;
    r.checkpoint_bytes = t.checkpoint_bytes;
    r.deltas = t.deltas;
    r.fds = sockets.size();
    control_.reset();
    stream_.reset();
    say("generation " + std::to_string(generation_) + " took over " +
        std::to_string(inherited_.size()) + " sockets" + (incumbent_gone ? " (takeover)" : ""));
  }

  // The pidfile, systemd and the timeline: after serving() the server's loop runs first
  // (a successor's clients wait for it), and this follows at its first service() call.
  void announce() {
    if (!announce_pending_) return;
    announce_pending_ = false;
    write_pidfile(options_.pidfile);
    notify_systemd("MAINPID=" + std::to_string(::getpid()) + "\nREADY=1\n");
    // Last: whoever sees the upgrade's line in the event log finds the pidfile current.
    finish_timeline(served_at_us_);
  }

  // Successor: the server serves again since `now`. Completes and writes the timeline.
  void finish_timeline(int64_t now) {
    if (!pending_timeline_) return;
    handoff::TimelineRecord& r = *pending_timeline_;
    r.blackout_us = r.blackout_us ? now - r.blackout_us : 0;
    r.total_us = r.total_us ? now - r.total_us : 0;
    last_timeline_ = r.to_json();
    append_line(options_.event_log, last_timeline_);
    pending_timeline_.reset();
  }

  void fail(std::string_view reason) override {
    failure_ = std::string(reason);
    say("upgrade failed: " + failure_);
  }

  // ---------------------------------------------------------------- state

  RuntimeOptions options_;
  FailPoints failpoints_;
  Registry registry_;
  std::vector<std::string> args_;
  std::string exe_;
  bool successor_ = false;
  uint64_t generation_ = 1;
  UniqueFd signal_fd_, epoll_, control_, stream_, pidfd_, control_listener_;
  pid_t successor_pid_ = 0;
  std::optional<handoff::IncumbentMachine> machine_;
  UpgradeHooks* hooks_ = nullptr;

  std::optional<CheckpointWriter> writer_;
  std::optional<Checkpoint> checkpoint_;
  std::unique_ptr<DeltaSender> sender_;
  uint64_t deltas_sent_ = 0;
  // successor side
  std::optional<DeltaReplayer> replayer_;
  uint64_t applied_lsn_ = 0;
  std::string inbox_;
  std::vector<InheritedSocket> inherited_;
  std::optional<handoff::TimelineRecord> pending_timeline_;
  std::string failure_;
  std::string last_timeline_;
  int saved_policy_ = -1;  // while idle_priority(true) holds
  sched_param saved_param_{};
  bool announce_pending_ = false;
  int64_t served_at_us_ = 0;
  EarlySockets* early_sink_ = nullptr;
};

Result<std::unique_ptr<Runtime>> Runtime::create(int argc, char** argv, RuntimeOptions options) {
  const char* spec = std::getenv("BATON_FAILPOINTS");
  BATON_ASSIGN_OR_RETURN(FailPoints fp, FailPoints::parse(spec ? spec : ""));
  auto impl = std::make_unique<Impl>(std::move(options), std::move(fp));
  BATON_TRY(impl->init(argc, argv));
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;
Registry& Runtime::registry() { return impl_->registry_; }
bool Runtime::is_successor() const { return impl_->successor_; }
uint64_t Runtime::generation() const { return impl_->generation_; }
Result<std::vector<InheritedSocket>> Runtime::take_over(EarlySockets* early) {
  return impl_->take_over(early);
}

void Runtime::serving(UpgradeHooks& hooks) {
  impl_->hooks_ = &hooks;
  impl_->served_at_us_ = monotonic_us();  // a successor's blackout ends here
  impl_->announce_pending_ = true;
  if (!impl_->pending_timeline_) impl_->announce();  // started by hand: no clients wait yet
}

const std::string& Runtime::last_upgrade() const { return impl_->last_timeline_; }
int Runtime::poll_fd() const { return impl_->epoll_.get(); }

int Runtime::service_interval_ms() const {
  if (impl_->announce_pending_) return 0;
  return upgrading() ? 1 : -1;
}
void Runtime::service() { impl_->service(); }
Result<void> Runtime::request_upgrade() { return impl_->machine_->request_upgrade(); }
bool Runtime::upgrading() const {
  auto p = impl_->machine_->phase();
  return p != handoff::IncumbentPhase::kIdle && p != handoff::IncumbentPhase::kCommitted;
}

}  // namespace baton
