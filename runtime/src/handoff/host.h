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
#include "baton/metrics.h"
#include "baton/runtime.h"
#include "handoff/machines.h"
#include "handoff/shadow.h"
#include "handoff/workers.h"

namespace baton {

/// The batonctl listener's tag when it is handed over with the server's sockets.
inline constexpr const char* kControlTag = "baton.control";
/// The metrics listener's (RuntimeOptions::metrics_listen).
inline constexpr const char* kMetricsTag = "baton.metrics";
/// One of the runtime's own listeners, not the server's.
inline bool is_runtime_listener(std::string_view tag) {
  return tag == kControlTag || tag == kMetricsTag;
}

int64_t monotonic_us();
/// "exited with status 3", "killed by signal 9".
std::string describe_exit(int status);
/// The GNU build id of the ELF file `path`, in hex; "" when it has none.
std::string build_id(const std::string& path);
/// "PATH -> RESOLVED, build id 1f2e..., 24017728 bytes, modified 2026-12-02T06:40:41Z":
/// which file an upgrade runs, for the log.
std::string describe_binary(const std::string& path);

/// The runtime's own metrics (docs/operations.md, "Metrics"), counted from the timeline
/// records every role writes.
struct RuntimeMetrics {
  Result<void> init(Metrics& m, const uint64_t* generation);
  void record(const handoff::TimelineRecord& r);

  Counter* committed = nullptr;
  Counter* aborted = nullptr;
  Counter* rollbacks_crashed = nullptr;
  Counter* rollbacks_unhealthy = nullptr;
  Counter* rollbacks_requested = nullptr;
  Counter* rollbacks_mismatch = nullptr;
  Counter* probes_matched = nullptr;
  Counter* probes_mismatched = nullptr;
  Counter* digests_agreed = nullptr;
  Counter* digests_mismatched = nullptr;
  Counter* promotions = nullptr;
  Counter* checkpoint_bytes = nullptr;
  Counter* deltas = nullptr;
  Counter* fds = nullptr;
  Histogram* spawn = nullptr;
  Histogram* checkpoint = nullptr;
  Histogram* catchup = nullptr;
  Histogram* blackout = nullptr;
  Histogram* total = nullptr;
};

struct Host {
  Host(RuntimeOptions opts, FailPoints fps)
      : options(std::move(opts)), failpoints(std::move(fps)), registry(options.delta_limit_bytes) {}

  /// Records argv and the executable, blocks SIGUSR2 into a signalfd, creates the epoll.
  Result<void> init(int argc, char** argv);

  void say(std::string_view line) const;
  Result<void> watch(int fd, uint32_t events = 0x001 /* EPOLLIN */);
  void unwatch(int fd);

  /// One event-log line; also what Runtime::last_upgrade() returns; counted in metrics.
  void write_timeline(const handoff::TimelineRecord& record);
  /// Pidfile, then systemd's MAINPID= and READY=1: this process serves now.
  void announce_serving() const;
  /// systemd's sd_notify protocol, without libsystemd: one datagram to $NOTIFY_SOCKET
  /// (none without it). RELOADING=1 when an upgrade starts, READY=1 when it aborts.
  void notify_systemd(const std::string& text) const;

  /// At startup by hand: refuses a pidfile that names another running copy of this
  /// program. At exit: removes the pidfile if it names this process.
  Result<void> claim_pidfile() const;
  void remove_pidfile() const;

  // --- the runtime's listeners: batonctl's (RuntimeOptions::control_socket) and the
  // metrics endpoint (RuntimeOptions::metrics_listen)
  Result<void> listen_control();
  Result<void> adopt_control(UniqueFd listener);
  Result<void> listen_metrics();
  /// A socket handed over under `tag`: if it is one of the runtime's listeners, this
  /// process serves it (or closes it, having one already) and it returns true.
  bool adopt_runtime_listener(std::string_view tag, int fd);
  /// Stops watching the listeners and closes this process's copies (they were handed over).
  void release_listeners();
  /// While frozen this process accepts nothing on its own listeners either: the kernel
  /// queues those connections for whichever process serves next, so none is accepted by a
  /// process about to exit. freeze_sockets() pauses; an unfreeze resumes.
  void pause_listeners(bool paused);
  /// "127.0.0.1:9121": where the metrics listener listens; "" without one.
  std::string metrics_address() const;
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

  /// A section of the main thread's registry or any worker's, by name; null if none.
  Section* find_section(std::string_view name) {
    if (Section* s = registry.find(name)) return s;
    for (Section* s : workers.sections())
      if (s->name() == name) return s;
    return nullptr;
  }

  RuntimeOptions options;
  FailPoints failpoints;
  Registry registry;
  Workers workers{options.worker_threads, options.delta_limit_bytes, options.checkpoint_pacing};
  Shadow shadow{options.shadow};
  Metrics metrics;
  RuntimeMetrics counts;
  std::string argv0;
  std::vector<std::string> args;  // argv[1..]
  std::string exe;                // the path this process was started from, symlinks unresolved
  UniqueFd signal_fd, epoll, control_listener, metrics_listener;
  uint64_t generation = 1;
  UpgradeHooks* hooks = nullptr;
  EarlySockets* early_sink = nullptr;  // where early sockets go, successor or standby
  std::string last_timeline;
  /// The outcome of this incumbent's upgrade, for `batonctl upgrade`'s waiting
  /// connections: "committed: ...\n" or "aborted: REASON\n" and the timeline line. Set by
  /// the incumbent, sent and cleared by Runtime.
  std::string upgrade_outcome;
  bool handed_off = false;  // another process serves for good (a successor, or the standby
                            // handed back to); this one only has to go

 private:
  std::pair<dev_t, ino_t> control_inode_{0, 0};
  int saved_policy_ = -1;  // while idle_priority(true) holds
  sched_param saved_param_{};
  std::vector<std::pair<pid_t, UniqueFd>> reaping_;
};

}  // namespace baton
