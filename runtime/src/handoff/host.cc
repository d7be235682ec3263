// Host: the process-wide plumbing every role shares.
#include "handoff/host.h"

#include <arpa/inet.h>
#include <elf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "baton/syscall.h"
#include "baton/unix_socket.h"

namespace baton {
namespace {

Result<void> set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return Error(ErrorKind::kSystem, "fcntl(F_GETFL)", errno);
  BATON_TRY(BATON_SYSCALL(::fcntl(fd, F_SETFL, flags | O_NONBLOCK)));
  return ok();
}

// Appends one line to `path`; errors are reported, never fatal.
void append_line(const std::string& path, const std::string& line) {
  if (path.empty()) return;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  const std::string out = line + "\n";
  if (!fd || ::write(fd.get(), out.data(), out.size()) != static_cast<ssize_t>(out.size())) {
    std::fprintf(stderr, "baton[%d]: cannot append to event log %s: %s\n", ::getpid(), path.c_str(),
                 std::strerror(errno));
  }
}

// Rewrites the pidfile atomically: write a temporary file, then rename it over.
void write_pidfile(const std::string& path) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (!fd || ::write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()) ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "baton[%d]: cannot write pidfile %s: %s\n", ::getpid(), path.c_str(),
                 std::strerror(errno));
    ::unlink(tmp.c_str());
  }
}

}  // namespace

void Host::notify_systemd(const std::string& text) const {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0') return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return;
  (void)::sendto(fd.get(), text.data(), text.size(), MSG_NOSIGNAL,
                 reinterpret_cast<sockaddr*>(&addr),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
}

int64_t monotonic_us() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

std::string build_id(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string id;
  // From the ELF program headers' notes: which build this is, exactly.
  Elf64_Ehdr eh;
  if (!fd || ::pread(fd.get(), &eh, sizeof eh, 0) != sizeof eh ||
      std::memcmp(eh.e_ident, ELFMAG, 4) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return id;
  }
  for (unsigned i = 0; i < eh.e_phnum && i < 64 && id.empty(); ++i) {
    Elf64_Phdr ph;
    if (::pread(fd.get(), &ph, sizeof ph, static_cast<off_t>(eh.e_phoff + i * sizeof ph)) !=
            sizeof ph ||
        ph.p_type != PT_NOTE || ph.p_filesz > 4096) {
      continue;
    }
    std::string notes(ph.p_filesz, '\0');
    if (::pread(fd.get(), notes.data(), notes.size(), static_cast<off_t>(ph.p_offset)) !=
        static_cast<ssize_t>(notes.size())) {
      continue;
    }
    for (size_t at = 0; at + sizeof(Elf64_Nhdr) <= notes.size();) {
      Elf64_Nhdr nh;
      std::memcpy(&nh, notes.data() + at, sizeof nh);
      const size_t name_at = at + sizeof nh, desc_at = name_at + ((nh.n_namesz + 3) & ~3u);
      const size_t next = desc_at + ((nh.n_descsz + 3) & ~3u);
      if (next > notes.size()) break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
          std::memcmp(notes.data() + name_at, "GNU", 4) == 0) {
        static const char* const kHex = "0123456789abcdef";
        for (size_t k = 0; k < nh.n_descsz; ++k) {
          const auto b = static_cast<unsigned char>(notes[desc_at + k]);
          id += kHex[b >> 4];
          id += kHex[b & 15];
        }
        break;
      }
      at = next;
    }
  }
  return id;
}

std::string describe_binary(const std::string& path) {
  std::string out = path;
  char resolved[4096];
  if (::realpath(path.c_str(), resolved) != nullptr && path != resolved) {
    out += std::string(" -> ") + resolved;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return out + " (unreadable: " + std::strerror(errno) + ")";
  const std::string id = build_id(path);
  char when[32] = "?";
  tm t;
  if (::gmtime_r(&st.st_mtime, &t) != nullptr) std::strftime(when, sizeof when, "%FT%TZ", &t);
  out += ", " + (id.empty() ? std::string("no build id") : "build id " + id) + ", " +
         std::to_string(st.st_size) + " bytes, modified " + when;
  return out;
}

Result<void> Host::init(int argc, char** argv) {
  argv0 = argc > 0 ? argv[0] : "";
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  // The path this process was started from, as given to execve (AT_EXECFN), symlinks and
  // all: an operator who switches `current -> releases/r2` means the successor to be r2.
  // Made absolute now, while the working directory is the one it was relative to.
  const char* execfn = reinterpret_cast<const char*>(::getauxval(AT_EXECFN));
  struct stat st;
  if (execfn != nullptr && *execfn != '\0' && ::stat(execfn, &st) == 0 && S_ISREG(st.st_mode)) {
    exe = execfn;
    if (exe[0] != '/') {
      char cwd[4096];
      if (::getcwd(cwd, sizeof cwd) != nullptr) exe = std::string(cwd) + "/" + exe;
    }
  } else {
    char path[4096];
    const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) return Error(ErrorKind::kSystem, "readlink /proc/self/exe", errno);
    exe = std::string(path, static_cast<size_t>(n));
  }
  BATON_TRY(counts.init(metrics, &generation));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  BATON_TRY(BATON_SYSCALL(::sigprocmask(SIG_BLOCK, &set, nullptr), "blocking SIGUSR2"));
  BATON_ASSIGN_OR_RETURN(int sfd, BATON_SYSCALL(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)));
  signal_fd.reset(sfd);
  BATON_ASSIGN_OR_RETURN(int efd, BATON_SYSCALL(::epoll_create1(EPOLL_CLOEXEC)));
  epoll.reset(efd);
  return watch(signal_fd.get());
}

void Host::say(std::string_view line) const {
  std::fprintf(stderr, "baton[%d]: %.*s\n", ::getpid(), static_cast<int>(line.size()), line.data());
}

Result<void> Host::watch(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  BATON_TRY(BATON_SYSCALL(::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev)));
  return ok();
}

void Host::unwatch(int fd) { (void)::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr); }

void Host::write_timeline(const handoff::TimelineRecord& record) {
  counts.record(record);
  last_timeline = record.to_json();
  append_line(options.event_log, last_timeline);
}

void Host::announce_serving() const {
  write_pidfile(options.pidfile);
  notify_systemd("MAINPID=" + std::to_string(::getpid()) + "\nREADY=1\n");
}

namespace {
pid_t pid_in_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  char buf[32] = {};
  if (!fd || ::read(fd.get(), buf, sizeof buf - 1) <= 0) return 0;
  return static_cast<pid_t>(std::atol(buf));
}
std::string comm_of(pid_t pid) {
  UniqueFd fd(::open(("/proc/" + std::to_string(pid) + "/comm").c_str(), O_RDONLY | O_CLOEXEC));
  char buf[64] = {};
  if (!fd || ::read(fd.get(), buf, sizeof buf - 1) <= 0) return "";
  return buf;
}
}  // namespace

Result<void> Host::claim_pidfile() const {
  if (options.pidfile.empty()) return ok();
  const pid_t pid = pid_in_file(options.pidfile);
  if (pid <= 0 || pid == ::getpid()) return ok();
  // Alive and the same program: another server writes this pidfile. A stale file, or a
  // reused pid of another program, is overwritten when this one serves.
  if ((::kill(pid, 0) == 0 || errno == EPERM) && comm_of(pid) == comm_of(::getpid())) {
    return Error(ErrorKind::kState,
                 "pidfile " + options.pidfile + " names pid " + std::to_string(pid) +
                     ", a running " + comm_of(pid).substr(0, comm_of(pid).size() - 1) +
                     "; two servers on one pidfile overwrite each other's: stop that one or "
                     "give this one another --pidfile");
  }
  return ok();
}

void Host::remove_pidfile() const {
  if (!options.pidfile.empty() && pid_in_file(options.pidfile) == ::getpid()) {
    ::unlink(options.pidfile.c_str());
  }
}

Result<void> Host::listen_control() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string& path = options.control_socket;
  if (path.size() >= sizeof addr.sun_path) {
    return Error(ErrorKind::kInvalidArgument, "control socket path '" + path + "' is longer than " +
                                                  std::to_string(sizeof addr.sun_path - 1) +
                                                  " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  const bool abstract = path[0] == '@';
  if (abstract) addr.sun_path[0] = '\0';
  struct stat st;
  if (!abstract && ::lstat(path.c_str(), &st) == 0) {
    // Only a socket nobody listens on is ours to replace: never a file, never a live one.
    if (!S_ISSOCK(st.st_mode)) {
      return Error(ErrorKind::kInvalidArgument,
                   "control socket path " + path +
                       " exists and is not a socket; refusing to replace it: remove it or "
                       "choose another --control path");
    }
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      auto peer = peer_credentials(probe.get());
      return Error(ErrorKind::kState,
                   "control socket " + path + " belongs to a running server" +
                       (peer.ok() ? " (pid " + std::to_string(peer->pid) + ")" : std::string()) +
                       "; stop it, or give this one another --control path");
    }
    if (errno != ECONNREFUSED) {
      return Error(ErrorKind::kSystem,
                   "control socket " + path + " exists and cannot be probed; remove it if stale",
                   errno);
    }
    ::unlink(path.c_str());  // stale: left by a process that died without removing it
  }
  BATON_ASSIGN_OR_RETURN(int fd, BATON_SYSCALL(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd l(fd);
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno == EADDRINUSE) {
      return Error(ErrorKind::kState, "control socket " + path +
                                          " is in use by another process; stop it, or give "
                                          "this one another --control path");
    }
    return Error(ErrorKind::kSystem, "binding control socket " + path, errno);
  }
  BATON_TRY(BATON_SYSCALL(::listen(l.get(), 16), "control socket ", path));
  return adopt_control(std::move(l));
}

Result<void> Host::adopt_control(UniqueFd listener) {
  BATON_TRY(set_nonblocking(listener.get()));
  control_listener = std::move(listener);
  // Remembered so that this process removes the path at exit only while it is still ours.
  const std::string& path = options.control_socket;
  struct stat st;
  if (!path.empty() && path[0] != '@' && ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    control_inode_ = {st.st_dev, st.st_ino};
  }
  return watch(control_listener.get());
}

void Host::remove_control_path() {
  if (!control_listener || control_inode_.second == 0) return;
  struct stat st;
  const std::string& path = options.control_socket;
  if (::lstat(path.c_str(), &st) == 0 && st.st_dev == control_inode_.first &&
      st.st_ino == control_inode_.second) {
    ::unlink(path.c_str());
  }
}

Result<void> Host::listen_metrics() {
  const std::string& spec = options.metrics_listen;
  const size_t colon = spec.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  char* end = nullptr;
  const long port =
      colon == std::string::npos ? -1 : std::strtol(spec.c_str() + colon + 1, &end, 10);
  if (colon == std::string::npos || end == spec.c_str() + colon + 1 || *end != '\0' || port < 0 ||
      port > 65535 || ::inet_pton(AF_INET, spec.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    return Error(ErrorKind::kInvalidArgument,
                 "metrics address '" + spec +
                     "' is not IPV4ADDRESS:PORT, e.g. 127.0.0.1:9121 (port 0 picks a free one)");
  }
  addr.sin_port = htons(static_cast<uint16_t>(port));
  BATON_ASSIGN_OR_RETURN(int fd, BATON_SYSCALL(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd l(fd);
  const int one = 1;
  (void)::setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Error(ErrorKind::kSystem,
                 "binding the metrics listener to " + spec +
                     (errno == EADDRINUSE ? " (another process listens there: choose another "
                                            "--metrics port)"
                                          : ""),
                 errno);
  }
  BATON_TRY(BATON_SYSCALL(::listen(l.get(), 64), "metrics listener ", spec));
  BATON_TRY(set_nonblocking(l.get()));
  metrics_listener = std::move(l);
  say("metrics on http://" + metrics_address() + "/metrics");
  return watch(metrics_listener.get());
}

std::string Host::metrics_address() const {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (!metrics_listener ||
      ::getsockname(metrics_listener.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return "";
  }
  char ip[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

bool Host::adopt_runtime_listener(std::string_view tag, int fd) {
  UniqueFd owned(fd);
  if (tag == kControlTag) {
    if (!control_listener) {
      if (auto r = adopt_control(std::move(owned)); !r.ok()) say(r.error().to_string());
    }
    return true;
  }
  if (tag == kMetricsTag) {
    if (!metrics_listener) {
      metrics_listener = std::move(owned);
      if (auto r = set_nonblocking(metrics_listener.get()); !r.ok()) say(r.error().to_string());
      if (auto r = watch(metrics_listener.get()); !r.ok()) say(r.error().to_string());
    }
    return true;
  }
  (void)owned.release();  // the server's
  return false;
}

void Host::pause_listeners(bool paused) {
  for (UniqueFd* l : {&control_listener, &metrics_listener}) {
    if (!*l) continue;
    if (paused) {
      unwatch(l->get());
    } else {
      (void)watch(l->get());
    }
  }
}

void Host::release_listeners() {
  for (UniqueFd* l : {&control_listener, &metrics_listener}) {
    if (!*l) continue;
    unwatch(l->get());
    l->reset();
  }
}

uint64_t Host::socket_id(const FrozenSocket& s) {
  // A server's own ids get the top bit, so that they never equal an inode.
  if (s.id != 0) return s.id | (uint64_t{1} << 63);
  struct stat st;
  return ::fstat(s.fd, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

std::vector<handoff::HandoffSocket> Host::early_sockets() {
  std::vector<handoff::HandoffSocket> out;
  if (hooks == nullptr) return out;
  for (FrozenSocket& s : hooks->early()) out.push_back({s.fd, s.tag, "", socket_id(s)});
  return out;
}

std::vector<handoff::HandoffSocket> Host::freeze_sockets() {
  std::vector<handoff::HandoffSocket> out;
  pause_listeners(true);
  if (control_listener) out.push_back({control_listener.get(), kControlTag, ""});
  if (metrics_listener) out.push_back({metrics_listener.get(), kMetricsTag, ""});
  if (hooks == nullptr) return out;
  std::vector<FrozenSocket> sockets = hooks->freeze();
  out.reserve(out.size() + sockets.size());
  for (FrozenSocket& s : sockets) {
    const uint64_t id = socket_id(s);
    out.push_back({s.fd, std::move(s.tag), std::move(s.state), id});
  }
  return out;
}

void Host::idle_priority(bool idle) {
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

void Host::reap_later(pid_t pid, UniqueFd pidfd) {
  if (pid <= 0 || !pidfd) return;
  if (watch(pidfd.get()).ok()) reaping_.emplace_back(pid, std::move(pidfd));
}

bool Host::reap(int fd) {
  for (size_t i = 0; i < reaping_.size(); ++i) {
    if (reaping_[i].second.get() != fd) continue;
    int status = 0;
    if (::waitpid(reaping_[i].first, &status, WNOHANG) == 0) return true;  // not yet
    say("previous successor pid " + std::to_string(reaping_[i].first) + " " +
        describe_exit(status));
    unwatch(fd);
    reaping_.erase(reaping_.begin() + static_cast<std::ptrdiff_t>(i));
    return true;
  }
  return false;
}

}  // namespace baton
