// A sample server run as a real process for integration tests: a private directory,
// port 0, bounded waits, and every process it started killed by pid and reaped.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace baton::testing {

using Clock = std::chrono::steady_clock;

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits up to `seconds` for `pred`, polling every 10 ms.
template <typename F>
bool eventually(F pred, double seconds = 15) {
  auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

/// A sample server (and whatever generations follow it) in a private directory. It is
/// started with --port 0 --port-file, --pidfile and --event-log there, plus `args`.
class ServerProcess {
 public:
  ServerProcess(std::string binary, std::vector<std::string> args, std::string failpoints = "",
                std::vector<std::string> extra_env = {}) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);  // orphaned successors become ours to reap
    char tmpl[] = "/tmp/baton-it-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::vector<std::string> argv_s = {binary,        "--port",       "0",
                                       "--port-file", dir_ + "/port", "--pidfile",
                                       dir_ + "/pid", "--event-log",  dir_ + "/events"};
    for (std::string& a : args) {  // "{dir}" names this server's private directory
      if (auto at = a.find("{dir}"); at != std::string::npos) a.replace(at, 5, dir_);
    }
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) {
      if (std::string_view(*e).starts_with("BATON_")) continue;
      env_s.emplace_back(*e);
    }
    if (!failpoints.empty()) env_s.push_back("BATON_FAILPOINTS=" + failpoints);
    env_s.insert(env_s.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    std::string log = dir_ + "/log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (::posix_spawn(&first_pid_, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) {
      first_pid_ = 0;
    }
    posix_spawn_file_actions_destroy(&fa);
    // Spawned after the test's unshare(CLONE_NEWPID), the server is PID 1 of a namespace
    // and its pidfile holds that namespace's pids, which are not ours to signal.
    const std::string status = slurp("/proc/" + std::to_string(first_pid_) + "/status");
    if (auto at = status.find("NSpid:"); at != std::string::npos) {
      const std::string line = status.substr(at, status.find('\n', at) - at);
      in_pid_namespace_ = line.find_first_of(" \t", line.find_first_of("0123456789")) <
                          line.find_last_of("0123456789");
    }
    eventually([&] { return !slurp(dir_ + "/port").empty() && serving_pid() > 0; }, 10);
    port_ = std::atoi(slurp(dir_ + "/port").c_str());
  }

  ~ServerProcess() {
    // Kill what we started (the first process and the generations the pidfile names),
    // then reap every child, within a deadline.
    // In a PID namespace, killing its init (first_pid_) kills every process in it.
    for (pid_t p : {in_pid_namespace_ ? 0 : serving_pid(), first_pid_})
      if (p > 0) ::kill(p, SIGKILL);
    auto until = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < until) {
      pid_t r = ::waitpid(-1, nullptr, WNOHANG);
      if (r < 0) break;  // no children left
      if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::filesystem::remove_all(dir_);
  }

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  pid_t first_pid() const { return first_pid_; }
  /// Whether the server runs as PID 1 of its own PID namespace (then pids it writes are
  /// that namespace's).
  bool in_pid_namespace() const { return in_pid_namespace_; }
  pid_t serving_pid() const { return std::atoi(slurp(dir_ + "/pid").c_str()); }
  std::string log() const { return slurp(dir_ + "/log"); }
  std::vector<std::string> events() const {
    std::vector<std::string> out;
    std::istringstream in(slurp(dir_ + "/events"));
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  bool upgrade_ended() const { return !events().empty(); }
  // The pids of a process's children: a reaped successor is not among them.
  static std::string children(pid_t pid) {
    return slurp("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  }

 private:
  std::string dir_;
  pid_t first_pid_ = 0;
  bool in_pid_namespace_ = false;
  int port_ = 0;
};

/// Sends one command line to a Baton control socket (RuntimeOptions::control_socket) and
/// returns the reply line, or "" when nothing answered within 5 s.
inline std::string control_command(const std::string& path, const std::string& command) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return "";
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string reply;
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  const std::string line = command + "\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
      ::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size())) {
    char buf[1024];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
      reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  return reply;
}

/// Starts `argv` (argv[0] a path) with stdout and stderr appended to `out_path` (stderr
/// to `err_path` instead, if given). Returns its pid, or 0 when it could not start.
inline pid_t spawn_process(std::vector<std::string> argv, const std::string& out_path,
                           const std::string& err_path = "") {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (err_path.empty()) {
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  } else {
    posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  pid_t pid = 0;
  if (::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) pid = 0;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

/// Waits up to `seconds` for `pid` to exit and reaps it; past the deadline it is killed
/// and -1 returned. Otherwise the wait status.
inline int wait_process(pid_t pid, double seconds) {
  auto until = Clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (Clock::now() < until) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

/// True when `pid` has exited and waits to be reaped.
inline bool is_zombie(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

/// True while `pid` (a child) has not exited; does not reap it.
inline bool still_running(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == 0;
}

}  // namespace baton::testing
