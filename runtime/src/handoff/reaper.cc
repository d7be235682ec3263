// The reaper (reaper.h): PID 1's last role, after its successor serves.
#include "handoff/reaper.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

extern char** environ;

namespace baton {
namespace {

constexpr const char* kEnvReaper = "BATON_REAPER";
constexpr const char* kEnvPidfile = "BATON_REAPER_PIDFILE";
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

pid_t pid_in(const std::string& pidfile) {
  if (pidfile.empty()) return 0;
  std::ifstream in(pidfile);
  long pid = 0;
  in >> pid;
  return pid > 1 ? static_cast<pid_t>(pid) : 0;
}

[[noreturn]] void reap_forever(const std::string& pidfile) {
  ::close_range(3, ~0u, 0);  // nothing of the server's survives: no socket stays open here
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (int s : kForwarded) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  const int sfd = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) {
    // Without a signalfd, still reap: an init that stops reaping fills the pid table.
    std::fprintf(stderr, "baton[1]: reaper without signalfd (%s): only reaping\n",
                 std::strerror(errno));
  }
  std::fprintf(
      stderr,
      "baton[1]: PID 1 of its namespace: staying as its init after the handoff, with "
      "the server's memory freed; forwarding signals to %s\n",
      pidfile.empty() ? "every process of the namespace" : ("the pid in " + pidfile).c_str());
  int last = 0;
  for (;;) {
    int status = 0;
    pid_t p;
    while ((p = ::waitpid(-1, &status, WNOHANG)) > 0) last = status;
    if (p < 0 && errno == ECHILD) {
      // Nobody left: the namespace ends with the status of the last to go.
      if (WIFSIGNALED(last)) std::_Exit(128 + WTERMSIG(last));
      std::_Exit(WIFEXITED(last) ? WEXITSTATUS(last) : 1);
    }
    if (sfd < 0) {
      p = ::waitpid(-1, &status, 0);
      if (p > 0) last = status;
      continue;
    }
    signalfd_siginfo info;
    if (::read(sfd, &info, sizeof info) != sizeof info) continue;
    const int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) continue;
    const pid_t to = pid_in(pidfile);
    // kill(-1) from a namespace's init reaches every other process in the namespace.
    if (::kill(to > 0 ? to : -1, sig) != 0) {
      std::fprintf(stderr, "baton[1]: cannot forward signal %d to %s: %s\n", sig,
                   to > 0 ? std::to_string(to).c_str() : "the namespace", std::strerror(errno));
    }
  }
}

}  // namespace

std::string exec_reaper(const std::vector<std::string>& argv, const std::string& pidfile) {
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "BATON_", 6) != 0) env_s.emplace_back(*e);
  }
  env_s.push_back(std::string(kEnvReaper) + "=1");
  env_s.push_back(std::string(kEnvPidfile) + "=" + pidfile);
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (std::string& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::fflush(nullptr);
  ::execve("/proc/self/exe", args.data(), envp.data());
  return std::string("execve /proc/self/exe: ") + std::strerror(errno);
}

void reap_in_place(const std::string& pidfile) { reap_forever(pidfile); }

void run_reaper_if_asked() {
  const char* r = std::getenv(kEnvReaper);
  if (r == nullptr || std::strcmp(r, "1") != 0) return;
  const std::string pidfile = std::getenv(kEnvPidfile) ? std::getenv(kEnvPidfile) : "";
  ::unsetenv(kEnvReaper);
  ::unsetenv(kEnvPidfile);
  // Only a namespace's init may forward to kill(-1): anywhere else that is every
  // process of the user. A stray BATON_REAPER elsewhere starts the server as usual.
  if (::getpid() != 1) return;
  reap_forever(pidfile);
}

}  // namespace baton
