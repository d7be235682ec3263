// Host: what every role of a Baton process shares. One process is, in turn, an incumbent
// (serving, maybe upgrading), a successor (taking over), a successor on probation, or a
// standby; each role is its own class (incumbent.h, successor.h, probation_shell.h,
// standby.h) and all of them work through this: the options, the sections, the signal
// and epoll fds, the batonctl listener, the server's hooks, and the files an upgrade
// writes (event log, pidfile, systemd notifications).
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/failpoint.h"
#include "baton/fd.h"
#include "baton/runtime.h"
#include "handoff/machines.h"

namespace baton {

/// The batonctl listener's tag when it is handed over with the server's sockets.
inline constexpr const char* kControlTag = "baton.control";

int64_t monotonic_us();
/// "exited with status 3", "killed by signal 9".
std::string describe_exit(int status);
/// "PATH -> RESOLVED, build id 1f2e..., 24017728 bytes, modified 2026-12-02T06:40:41Z":
/// which file an upgrade runs, for the log.
std::string describe_binary(const std::string& path);

struct Host {
  Host(RuntimeOptions opts, FailPoints fps)
      : options(std::move(opts)), failpoints(std::move(fps)), registry(options.delta_limit_bytes) {}

  /// Records argv and the executable, blocks SIGUSR2 into a signalfd, creates the epoll.
  Result<void> init(int argc, char** argv);

  void say(std::string_view line) const;
  Result<void> watch(int fd, uint32_t events = 0x001 /* EPOLLIN */);
  void unwatch(int fd);

  /// One event-log line; also what Runtime::last_upgrade() returns.
  void write_timeline(const handoff::TimelineRecord& record);
  /// Pidfile, then systemd's MAINPID= and READY=1: this process serves now.
  void announce_serving() const;

  /// At startup by hand: refuses a pidfile that names another running copy of this
  /// program. At exit: removes the pidfile if it names this process.
  Result<void> claim_pidfile() const;
  void remove_pidfile() const;

  // --- the batonctl listener (RuntimeOptions::control_socket)
  Result<void> listen_control();
  Result<void> adopt_control(UniqueFd listener);
  /// Stops watching the listener and closes this process's copy (it was handed over).
  void release_control();
  /// At exit: removes the socket's path if this process still listens on it and the path
  /// still names that socket.
  void remove_control_path();

  // --- sockets, as the handoff machines see them
  /// UpgradeHooks::early(), with ids.
  std::vector<handoff::HandoffSocket> early_sockets();
  /// The batonctl listener, then UpgradeHooks::freeze(), with ids.
  std::vector<handoff::HandoffSocket> freeze_sockets();
  /// A socket's identity while it is open (docs/protocol.md, "Why EARLY_FDS exists").
  static uint64_t socket_id(const FrozenSocket& s);

  /// Switches this thread to SCHED_IDLE and back to the policy it had before.
  void idle_priority(bool idle);

  /// A child that will exit on its own (a successor that handed back): reaped when its
  /// pidfd says so, by reap().
  void reap_later(pid_t pid, UniqueFd pidfd);
  /// Reaps the child whose pidfd is `fd`; false if `fd` is not one of them.
  bool reap(int fd);

  RuntimeOptions options;
  FailPoints failpoints;
  Registry registry;
  std::string argv0;
  std::vector<std::string> args;  // argv[1..]
  std::string exe;                // the path this process was started from, symlinks unresolved
  UniqueFd signal_fd, epoll, control_listener;
  uint64_t generation = 1;
  UpgradeHooks* hooks = nullptr;
  EarlySockets* early_sink = nullptr;  // where early sockets go, successor or standby
  std::string last_timeline;
  bool handed_off = false;  // another process serves for good (a successor, or the standby
                            // handed back to); this one only has to go

 private:
  std::pair<dev_t, ino_t> control_inode_{0, 0};
  int saved_policy_ = -1;  // while idle_priority(true) holds
  sched_param saved_param_{};
  std::vector<std::pair<pid_t, UniqueFd>> reaping_;
};

}  // namespace baton
