// Runtime: the object a server builds in main() to upgrade its own binary while serving.
// It owns the Registry, watches SIGUSR2, and runs the handoff (docs/protocol.md) from the
// server's own loop through one pollable fd.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "baton/checkpoint.h"
#include "baton/fd.h"
#include "baton/metrics.h"
#include "baton/result.h"
#include "baton/section.h"

namespace baton {

/// A socket the server hands over at freeze. The fd stays the server's until committed().
struct FrozenSocket {
  int fd = -1;
  std::string tag;  // the server's label, e.g. "listener" or "conn"
  std::string
      state;  // opaque per-connection bytes (about 512 KiB at most), e.g. a half-read request
  /// Optional: a number the server gives this socket for its whole life (a connection
  /// serial). Equal ids in early() and freeze() mean the same socket. 0: the runtime asks
  /// the kernel (fstat, ~0.4 µs per socket inside the freeze).
  uint64_t id = 0;
};

/// A socket a successor inherits, owned.
struct InheritedSocket {
  UniqueFd fd;
  std::string tag;
  std::string state;
  bool early = false;  // already given to EarlySockets::early_socket() under this fd
  /// The worker thread that served it in the incumbent (Worker::index()); 0: the main
  /// thread. Serve it on the worker of that index.
  unsigned worker = 0;
};

/// Successor side, optional: receives the sockets the incumbent hands over ahead of its
/// freeze (UpgradeHooks::early()), from inside take_over(), so that the server registers
/// them while the incumbent still serves and the blackout moves only their state.
class EarlySockets {
 public:
  virtual ~EarlySockets() = default;
  /// take_over() will return this fd again (with `early` set and the final state) unless
  /// it is withdrawn. Prepare it, e.g. add it to epoll; do not read, write or close it.
  virtual void early_socket(int fd, const std::string& tag) = 0;
  /// As above, for a server with worker threads: `worker` is the thread it belongs to
  /// (0: the main thread), whose epoll it goes to. By default the two-argument form.
  virtual void early_socket(int fd, const std::string& tag, unsigned worker) {
    (void)worker;
    early_socket(fd, tag);
  }
  /// The incumbent closed the socket before its freeze: forget `fd`; the runtime closes it.
  virtual void early_socket_withdrawn(int fd) = 0;
};

/// What the runtime asks of the server during an upgrade; called on the server's thread
/// from inside Runtime::service().
class UpgradeHooks {
 public:
  virtual ~UpgradeHooks() = default;
  /// Optional: listeners and established connections to hand over ahead of the freeze,
  /// while the server keeps serving them (their state is ignored here). Called once per
  /// upgrade, after the successor restored. freeze() still returns every socket with its
  /// final state; those sent early then move without their fd (docs/protocol.md).
  virtual std::vector<FrozenSocket> early() { return {}; }
  /// Stop accepting and reading (the kernel queues new connections and bytes); keep
  /// every fd open; return every listener and connection to hand over.
  virtual std::vector<FrozenSocket> freeze() = 0;
  /// The upgrade aborted after freeze(): serve on with the same fds.
  virtual void unfreeze() = 0;
  /// The delta stream lags: slow down (optional).
  virtual void throttle(bool on) { (void)on; }
  /// The successor owns the sockets now (or probation ended). Never touch them again;
  /// close and exit.
  virtual void committed() = 0;

  // --- probation (RuntimeOptions::probation_ms > 0; docs/protocol.md, "Probation")
  /// Old process, after COMMIT: the successor serves and this process stands by. Close
  /// every listener and connection without shutdown() (the runtime keeps duplicates) and
  /// drop their per-connection state (the successor has it); keep the sections and keep
  /// calling service(). Then comes committed() (probation over: exit) or resume().
  virtual void standby() {}
  /// Old process: a rollback; serve these sockets from now on, as a successor serves
  /// take_over()'s. Sections hold every acknowledged write of the successor.
  virtual void resume(std::vector<InheritedSocket> sockets) { (void)sockets; }
  /// New process on probation, asked every 100 ms: empty when healthy, else why not (the
  /// runtime rolls back to the standby).
  virtual std::string health() { return {}; }
};

/// The server's side of shadow verification (docs/protocol.md, "Shadow verification"):
/// evaluates reads that the other process served and mirrored, so that the old and the new
/// version are shown to answer alike on real traffic.
class ShadowReads {
 public:
  virtual ~ShadowReads() = default;
  /// Executes a mirrored read, `request` as the other process passed it to
  /// Runtime::shadow_probe(), against this process's state as it is now: exactly the
  /// point of the stream at which the other process served it. Returns the reply, as
  /// the other process's reply was recorded. It must change no state and read no clock
  /// or random number the request does not carry.
  virtual std::string evaluate(std::string_view request) = 0;
  /// The request as an operator reads it in a discrepancy, e.g. "GET user:42".
  virtual std::string describe(std::string_view request) { return std::string(request); }
};

/// What shadow verification checks, and how strictly. The incumbent's policy judges the
/// probes before COMMIT, the standby's (the old version's again) those of probation.
struct ShadowPolicy {
  /// The fraction of reads mirrored (Runtime::shadow_sample()) while a stream to the other
  /// process runs: from the end of the checkpoint to the freeze, and during probation. 0:
  /// none.
  double sample_rate = 0.0;
  /// Probes the successor must have evaluated before the incumbent freezes: the catch-up
  /// waits for them, up to LagPolicy::converge_within_us, then aborts. 0: none required.
  uint64_t min_probes = 0;
  /// Mismatches tolerated; one more aborts the upgrade (before COMMIT) or rolls it back
  /// (during probation).
  uint64_t max_mismatches = 0;
  /// During probation: compare a keyed digest of every section's state at the cut (the
  /// final LSN) between the standby and the successor; a difference rolls back. Computed
  /// after the blackout, in slices of digest_slice_bytes per service() call.
  bool digest = false;
  size_t digest_slice_bytes = size_t{256} << 10;
};

/// What shadow verification has seen in the latest upgrade this process takes part in.
struct ShadowStats {
  uint64_t probes_sent = 0;       // mirrored by this process
  uint64_t probes_evaluated = 0;  // evaluated by whichever process receives the stream
  uint64_t probe_mismatches = 0;
  /// "" (none ran), "running", "agreed: ..." or "mismatch: ...".
  std::string digest;
};

/// Lag policy while deltas stream to the successor.
struct LagPolicy {
  uint64_t converge_bytes = uint64_t{256} << 10;  // freeze once the backlog is this small
  uint64_t converge_deltas = 1000;  // ... and the successor has this few deltas left to apply

  uint64_t throttle_bytes = uint64_t{16} << 20;  // throttle the server above this
  uint64_t abort_bytes = uint64_t{128} << 20;    // abort above this
  int64_t converge_within_us = 10'000'000;       // abort if not converged this long after restore
};

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr int64_t kDefaultFreezeUs = 2'000'000;
#else
inline constexpr int64_t kDefaultFreezeUs = 250'000;
#endif

/// Deadlines of the handoff phases, in microseconds.
struct Timeouts {
  int64_t hello_us = 5'000'000;       // spawn -> HELLO
  int64_t restored_us = 120'000'000;  // checkpoint sent -> RESTORED, at most
  /// A restoring successor reports progress (PROGRESS) about every 100 ms; silent this
  /// long, it is taken for hung. Applies once it has sent its first report (a successor
  /// of an older build sends none and is bounded by restored_us alone).
  int64_t restore_silence_us = 3'000'000;
  /// The freeze, FROZEN until SERVING: the longest clients wait on a handoff that is
  /// stuck. The blackout target is 2 ms (p99) and measured freezes stay near 1 ms, so
  /// 250 ms leaves room (a freeze that moves megabytes of connection state takes ~12 ms)
  /// and bounds a hang to a quarter of a second. ASan and TSan builds, 10-100x slower at
  /// replaying the last deltas inside the freeze, get 2 s.
  int64_t freeze_us = kDefaultFreezeUs;
};

struct RuntimeOptions {
  /// The successor's executable. Empty: the file this process was started from, read
  /// from disk at upgrade time (install the new binary there, then signal).
  std::string successor_path;
  /// Appended to this process's own arguments for the successor (a later flag wins in
  /// most parsers). Tests use it to start an incompatible successor.
  std::vector<std::string> successor_extra_args;
  /// One JSON line per upgrade, committed or aborted. Empty: none.
  std::string event_log;
  /// Rewritten atomically with the pid of whichever process serves. Empty: none.
  std::string pidfile;
  /// A Unix stream socket for `batonctl` (commands "upgrade", "upgrade wait", "status",
  /// "metrics", "rollback", "promote"; docs/operations.md). A leading '@' means the abstract
  /// namespace. Peers of another uid are refused (SO_PEERCRED). The socket is handed to the
  /// successor like the server's own. Empty: none.
  std::string control_socket;
  /// "ADDRESS:PORT" (IPv4, e.g. "127.0.0.1:9121"; port 0 picks one) for an HTTP listener
  /// that serves GET /metrics in Prometheus text format. Handed to the successor like the
  /// server's sockets, so the endpoint never goes dark during an upgrade. Empty: none.
  std::string metrics_listen;
  /// Probation window, in milliseconds: after COMMIT this process stands by this long as a
  /// hot standby of its successor, fed by a reverse delta stream, and takes over if the
  /// successor dies, reports itself unhealthy or is rolled back. 0: exit at commit. A
  /// server that sets it implements UpgradeHooks::standby() and resume(), holds replies
  /// until writes_durable(), reports accepted() sockets and ends connections with
  /// shutdown() before close() (docs/protocol.md, "Probation").
  uint32_t probation_ms = 0;

  LagPolicy lag;
  Timeouts timeouts;
  ShadowPolicy shadow;
  /// How much of the server thread's CPU the checkpoint takes while the server serves
  /// (docs/design.md, "Pacing"). While the checkpoint may write, service_interval_ms() is
  /// 0: the loop must not sleep, so an idle server's time goes to the checkpoint.
  CheckpointPacing checkpoint_pacing;
  /// 0..19: a successor restores its checkpoint at this much lower priority than it
  /// serves with, so that the incumbent, still serving on the same cores, comes first
  /// (docs/design.md, "Pacing"). The successor's own priority is unchanged.
  int restore_nice = 0;
  /// Bound on captured deltas not yet framed (DeltaLog limit), per thread.
  size_t delta_limit_bytes = size_t{256} << 20;
  /// Worker threads besides the main one, each owning its own sections and sockets
  /// (Runtime::worker(), docs/design.md "Worker threads"). A successor must run as many:
  /// one that does not is refused at HELLO. Not with probation_ms yet. At most kMaxWorkers.
  unsigned worker_threads = 0;
};

inline constexpr unsigned kMaxWorkers = 32;

/// What the runtime asks of one worker thread in an upgrade; called on that thread from
/// inside Worker::service().
class WorkerHooks {
 public:
  virtual ~WorkerHooks() = default;
  /// Stop reading and accepting on this thread's sockets and return them, each with its
  /// state: this thread's part of the one freeze across all threads. Each fd stays this
  /// thread's until service() returns false.
  virtual std::vector<FrozenSocket> freeze() = 0;
  /// The upgrade was abandoned after the freeze: serve the sockets again.
  virtual void unfreeze() = 0;
  /// Optional, as UpgradeHooks::early(): this thread's sockets to send ahead of the freeze,
  /// so that the successor registers them (EarlySockets, with this worker's index) while
  /// the incumbent still serves and the blackout moves only their state.
  virtual std::vector<FrozenSocket> early() { return {}; }
};

/// One worker thread of a multi-threaded server (RuntimeOptions::worker_threads). It owns
/// its sections and its delta log, so nothing on the hot path is shared with another
/// thread: its checkpoint slices run on it, inside service(), and its deltas go to the
/// main thread, which streams every thread's.
///
///   baton::Worker& w = rt->worker(1);        // in main(), before the thread starts
///   w.registry().add(my_shard);              // names unique across the whole process
///   // the thread's loop: watch w.poll_fd(), wait at most w.service_interval_ms(), and
///   if (!w.service(my_hooks)) return;        // committed: the successor has the sockets
///
/// In a successor, start the worker threads after take_over() returns, and give each
/// thread the inherited sockets whose `worker` is its index.
class Worker {
 public:
  class Impl;
  explicit Worker(std::unique_ptr<Impl> impl);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// 1 to RuntimeOptions::worker_threads (0 is the main thread, Runtime::registry()).
  unsigned index() const;
  /// This thread's sections. Register them before the thread serves; call only there.
  Registry& registry();
  /// Readable when the runtime wants service() sooner than service_interval_ms().
  int poll_fd() const;
  /// -1 when no upgrade runs (poll_fd() is enough), else 1.
  int service_interval_ms() const;
  /// This thread's part of an upgrade: a checkpoint slice, its deltas for the stream, and
  /// at the freeze WorkerHooks::freeze(), then a wait (bounded by Timeouts::freeze_us on
  /// the main thread's side) for the outcome. Returns false once the successor serves:
  /// stop serving, the sockets are the successor's. Call it on this thread only.
  bool service(WorkerHooks& hooks);

  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

class Runtime {
 public:
  /// Builds the runtime for this process from its own argc/argv. A successor (spawned by
  /// an incumbent's runtime) recognizes itself from its environment. Blocks SIGUSR2 and
  /// receives it through a signalfd: build the Runtime before starting other threads.
  static Result<std::unique_ptr<Runtime>> create(int argc, char** argv, RuntimeOptions options);
  ~Runtime();

  Registry& registry();
  /// Worker thread `index`, 1 to RuntimeOptions::worker_threads; any other index is a bug
  /// in main(): the process aborts, naming the range, before it serves.
  Worker& worker(unsigned index);
  /// The runtime's metrics, for the server's own next to them: served by `batonctl
  /// metrics` and RuntimeOptions::metrics_listen, continued across upgrades. Register
  /// before take_over(), so that the incumbent's values are adopted.
  Metrics& metrics();
  bool is_successor() const;
  /// 1 for a process started by hand, +1 per committed upgrade.
  uint64_t generation() const;

  /// Successor only, after registering sections: restores the state, replays deltas and
  /// receives the sockets. On success the caller serves them at once; on error it exits
  /// (the incumbent serves on). `early`, if given, sees sockets sent ahead of the freeze.
  Result<std::vector<InheritedSocket>> take_over(EarlySockets* early = nullptr);

  /// The server is ready to serve (call once, with hooks that outlive the runtime). In a
  /// successor it ends the upgrade's blackout: call it as soon as the inherited sockets
  /// are back in the server's loop. The pidfile, systemd's MAINPID=/READY=1 and the
  /// upgrade's timeline follow: at once in a process started by hand, at the first
  /// service() call in a successor, so that its clients are served first.
  /// `early` sees the sockets of a rollback ahead of its freeze, as in take_over().
  void serving(UpgradeHooks& hooks, EarlySockets* early = nullptr);

  /// Watch this fd for readability in the server's loop and call service() when it is
  /// readable, and at least every service_interval_ms() while it is >= 0.
  int poll_fd() const;
  int service_interval_ms() const;
  /// Does due runtime work: signals, control messages, checkpoint slices, the delta stream.
  void service();

  /// Starts an upgrade as SIGUSR2 does. Refused (kState, and logged) while one runs.
  Result<void> request_upgrade();
  bool upgrading() const;
  /// The latest upgrade this process took part in, as the JSON line written to the event
  /// log (without the newline): an attempt it aborted, or the upgrade that made it serve.
  /// Empty before the first. For a server's status output (kvd's INFO).
  const std::string& last_upgrade() const;
  /// "serving", an upgrade's phase ("catch-up", ...), "probation", "rolling-back" or
  /// "standby", for a server's status output.
  std::string phase() const;
  /// Milliseconds left of a probation window this process takes part in; 0 otherwise.
  int64_t probation_remaining_ms() const;

  // --- shadow verification (RuntimeOptions::shadow; docs/protocol.md)
  /// The evaluator of mirrored reads (not owned). Set it before take_over() in a
  /// successor (probes are evaluated during replay), and in every process that may stand
  /// by. Without one, every probe received counts as a mismatch.
  void set_shadow_reads(ShadowReads* reads);
  /// True when the read being served should be mirrored: a stream to the other process
  /// runs and the sample picks this one. One branch otherwise. Mirror only deterministic
  /// reads (docs/protocol.md, "Which reads to mirror").
  bool shadow_sample();
  /// Mirrors the read just served, at its place among the writes: `request` in the form
  /// ShadowReads::evaluate() takes, `reply` as the client got it. Call it only after
  /// shadow_sample() returned true, before any other write is made.
  void shadow_probe(std::string_view request, std::string_view reply);
  ShadowStats shadow_stats() const;

  // --- probation, the successor's side (all are no-ops costing a branch otherwise)
  /// True while this process serves on probation: replies to writes wait for
  /// writes_durable().
  bool on_probation() const;
  /// True once every write made so far is in the reverse stream to the standby. During
  /// probation a reply to a write may leave only after this returned true: call it once
  /// per loop turn, before writing replies, and hold them while it is false. Always true
  /// outside probation.
  bool writes_durable();
  /// The server accepted `fd` (still the server's): during probation the standby gets a
  /// duplicate, so a rollback covers it. Call it before serving the connection.
  void accepted(int fd);
  /// The server judges itself unhealthy: during probation, roll back to the standby.
  void report_unhealthy(std::string reason);
  /// Ends probation early, keeping this process (batonctl promote). kState outside one.
  Result<void> promote();
  /// Hands service back to the standby (batonctl rollback). kState outside probation.
  Result<void> rollback(std::string reason);

  class Impl;

 private:
  explicit Runtime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace baton
